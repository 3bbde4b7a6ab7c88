"""Prompt-tuned tasks on clean and backdoored backbones, before and after the guard, against ONION
(the paper's Tables II, III and VI; writes benchmarks/results/end_to_end.{json,md}).

The pipeline is the real one, nothing borrowed from the attack but its trigger words:

1. ``lmsan-mine --mode search`` on each backbone (clean control and backdoored) at the position
   the task's head reads (``cls`` for P-tuning v2, ``mask`` for P-tuning);
2. ``lmsan.tuning.tune`` of every task on each backbone (the victim tunes on what it downloaded);
3. ``lmsan.export.export_guard(..., task=..., monitor=...)``: one graph answers the task and checks
   the PVs, on a second pass of the backbone without the task's prompt (monitor ``bare``, the
   default) or on the task's own prompted pass (monitor ``task``);
4. ``Guard.scan_batch`` on the clean test set and on the test set with each trigger inserted
   once at a random word boundary (pairs: into the longer sentence).

Scores (``lmsan.eval.metrics``, fractions in [0, 1]): ``acc_clean`` (clean backbone),
``acc_backdoor`` (backdoored backbone, clean inputs), the paper's ASR (an input counts if any
trigger flips a correctly classified input) and weighted ASR (mean over classes), before and after
the guard, and ``acc_change`` (guarded minus unguarded accuracy on clean inputs of the backdoored
backbone). After the guard, a rejected input has no answer: a rejected clean input counts as
wrong, a rejected triggered input as blocked (the attack did not get its answer); both rates are
reported. ONION cleans the same inputs and the unguarded task answers them.

The main columns are the ``--monitor`` guard's (default ``bare``). Also reported: ASR after,
ΔACC and the share of clean and triggered inputs flagged with the other monitor (``task``: the
prompt active), and the flagged shares of a separate guard on the bare backbone with the same PVs
(what the PVs were mined on; the ``bare`` monitor should agree with it).

    .venv/bin/python benchmarks/end_to_end.py [--attacks bert-por bert-neuba bert-btop]
        [--tasks sms-spam polarity bbcnews bbc-pair] [--minilm [por btop]] [--test 400] [--quick] [--monitor bare]

Work (mined PV sets, tuned tasks, guards, and each setting's scores) is cached under
``$LMSAN_CACHE/end_to_end``; ``--fresh`` re-scores the settings. A row cached before the monitor
option (scored with the ``task`` monitor) is completed: only the guard of the missing monitor is
exported and scanned; the unguarded, ONION and task-monitor figures are kept. ``--rescan`` scans
every cached setting's task guards again (exported again where the export changed) and keeps the
rest; ``--merge`` keeps the settings of the earlier results file that this run does not score.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from _results import carried_over, save

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ATTACK_TUNING = {"por": "prefix", "neuba": "prefix", "btop": "prompt", "por-ner": "prefix"}
TUNING_NAME = {"prefix": "p-tuning-v2", "prompt": "p-tuning"}
BARE_WORDS = 40  # words a bare [MASK] guard reads per text (it refuses more tokens than the model takes)


def work_dir() -> Path:
    from lmsan.files import cache_dir

    return cache_dir() / "end_to_end"


def backbones(attacks: list[str], minilm: list[str]) -> list[dict[str, Any]]:
    """Each backdoored backbone with its clean counterpart: name, paths, attack kind and triggers."""
    from lmsan.attacks import minilm_attack, standard_attack
    from lmsan.models import minilm_path

    out = []
    for name in attacks:
        model = standard_attack(name)
        attack = json.loads((model / "attack.json").read_text())
        out.append({"name": name, "model": "tiny-" + name.split("-")[0], "backdoored": model,
                    "clean": standard_attack(f"{name}-clean"), "attack": attack["config"]["kind"],
                    "triggers": list(attack["triggers"])})
    for kind in minilm:
        model = minilm_attack(kind, progress=True)
        attack = json.loads((model / "attack.json").read_text())
        out.append({"name": f"minilm-{kind}", "model": "all-MiniLM-L6-v2", "backdoored": model,
                    "clean": minilm_path(), "attack": kind, "triggers": list(attack["triggers"])})
    return out


def backbone(name: str) -> dict[str, Any]:
    """``backbones`` entry of one row's backbone name: ``minilm-KIND`` or a standard attack."""
    if name.startswith("minilm-"):
        return backbones([], [name.removeprefix("minilm-")])[0]
    return backbones([name], [])[0]


def mined(model: Path, target: str, key: str) -> tuple[Path, dict]:
    """``lmsan-mine --mode search`` on ``model`` (cached): the PV-set path and the report."""
    from lmsan.cli import mine as mine_cli
    from lmsan.data import standard_splits

    out = work_dir() / key / f"scan-{target}"
    if (out / "report.json").is_file() and (out / "pvs.safetensors").is_file():
        report = json.loads((out / "report.json").read_text())
        add_known_triggers(out / "pvs.safetensors", report, model)
        return out / "pvs.safetensors", report
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    data = out.parent / "defense.txt"
    data.write_text("\n".join(standard_splits()["defense"][:2000]) + "\n", encoding="utf-8")
    started = time.perf_counter()
    try:
        mine_cli.main([str(model), "--data", str(data), "--out", str(out), "--device", "cpu", "--target", target,
                       "--mode", "search", "--loops", "20", "--patience", "4", "-q"])
    except SystemExit as exit_info:
        if exit_info.code not in (0, 1):
            raise RuntimeError(f"lmsan-mine failed on {model} (exit {exit_info.code})") from None
    report = json.loads((out / "report.json").read_text())
    print(f"  mined {key} at {target}: {report['verdict']}, {report['pvs']['size']} PVs "
          f"({time.perf_counter() - started:.0f} s)", flush=True)
    return out / "pvs.safetensors", report


def add_known_triggers(pvs: Path, report: dict, model: Path) -> None:
    """A scan cached before PV sets carried their known triggers gets them from its own report, as
    ``lmsan-mine`` now writes them (``lmsan.mining.search.known_trigger`` on the model's
    tokenizer): a sweep PV's token ids and hit rate are in ``sweep.hits``, a loop PV's in its
    trace's ``trigger`` (reports written before that field have none there: no trigger). The
    vectors stay as they were; the file is rewritten only when its triggers differ."""
    from transformers import AutoTokenizer

    from lmsan.mining.search import known_trigger
    from lmsan.pvset import PVSet

    pvset = PVSet.load(pvs)
    if not pvset.size:
        return
    tokenizer = AutoTokenizer.from_pretrained(str(model))
    found = {("sweep", hit["trigger"]): hit for hit in (report.get("sweep") or {}).get("hits", [])}
    found.update((("soft_prompt", loop["pv_index"]), loop["trigger"]) for loop in report.get("loops", [])
                 if loop.get("pv_index") is not None and loop.get("trigger"))
    triggers = [None] * pvset.size
    for source in report["pv_sources"]:
        key = (source["method"], source["trigger"] if source["method"] == "sweep" else source["pv_index"])
        hit = found.get(key)
        if hit is not None and "token_ids" in hit:
            triggers[source["pv_index"]] = known_trigger(tokenizer, hit["trigger"], hit["token_ids"], hit["hit_rate"],
                                                         report["config"]["confirm_hit_rate"])
    if tuple(triggers) != pvset.triggers:
        PVSet(pvset.vectors, pvset.prompts, pvset.seeds, pvset.target, pvset.model_sha256, tuple(triggers)).save(pvs)


def tuning_config(task: str, method: str, args: argparse.Namespace) -> Any:
    """The run's ``TuningConfig``: the method's preset; P-tuning with ``--prompt-head``."""
    from lmsan.tuning.config import TuningConfig

    overrides: dict[str, Any] = {"seed": args.seed, **({"epochs": args.epochs} if args.epochs else {})}
    if method == "prompt":
        overrides["head"] = args.prompt_head
    return TuningConfig.preset(task, method, **overrides)


def config_key(config: Any) -> str:
    """Short digest of a config: cached tasks and guards are keyed by what produced them."""
    from lmsan.files import json_digest

    return json_digest(config.to_dict())[:8]


def tuned_task(model: Path, task: str, method: str, key: str, args: argparse.Namespace) -> Path:
    """Tune ``task`` on ``model`` (cached task directory)."""
    from lmsan.models import load_model
    from lmsan.tuning.store import save_task
    from lmsan.tuning.tasks import task_data
    from lmsan.tuning.train import tune

    config = tuning_config(task, method, args)
    out = work_dir() / key / f"task-{task}-{method}-{config_key(config)}"
    if (out / "task.json").is_file():
        return out
    loaded = load_model(model, with_mlm_head=config.head == "verbalizer")
    data = task_data(task, test_size=args.test, seed=config.data_seed)  # the split evaluate_setting scores
    started = time.perf_counter()
    result = tune(loaded, data, config, progress=False)
    save_task(out, result, loaded, overwrite=True)
    print(f"  tuned {task} ({method}) on {key}: test acc {result.metrics['test_accuracy']:.3f} "
          f"({time.perf_counter() - started:.0f} s)", flush=True)
    return out


MONITORS = ("bare", "task")


def guard_for(model: Path, pvs: Path, task: Path | None, out: Path, monitor: str = "task") -> Path:
    """Export (cached) the guard of ``model`` with ``pvs``, for ``task`` (its monitor reading
    ``monitor``'s pass) or the bare backbone. A task guard's directory is ``out`` for the ``task``
    monitor (the guards cached before the option) and ``out-monitor-bare`` for ``bare``. A guard
    cached before the graph had its ``pv_match`` output is exported again."""
    from lmsan.export import export_guard
    from lmsan.export.pipeline import known_trigger_entries
    from lmsan.pvset import PVSet

    if task is not None and monitor != "task":
        out = out.with_name(f"{out.name}-monitor-{monitor}")
    if (out / "guard.json").is_file():
        raw = json.loads((out / "guard.json").read_text())
        recorded = raw.get("task", {}) if task is not None else {}
        reads = "sentences" if monitor == "bare" else "joined"  # a pair task's bare monitor reads each sentence
        known = known_trigger_entries(PVSet.load(pvs))
        current = "pv_match" in raw.get("outputs", []) and raw.get("known_triggers", []) == known  # else again
        if current and (task is None or (recorded.get("monitor", "task") == monitor
                                         and (not recorded.get("pairs") or raw.get("pair_reading", "joined") == reads))):
            return out
    export_guard(model, pvs, out, task=task, overwrite=True, **({"monitor": monitor} if task is not None else {}))
    return out


class Unguarded:
    """The tuned task in PyTorch on exactly the guard's token limit: the "before" answers."""

    def __init__(self, model: Path, task_dir: Path, max_length: int) -> None:
        import torch

        from lmsan.models import load_model
        from lmsan.tuning.store import load_task, read_task_manifest

        torch.set_num_threads(1)
        fields = read_task_manifest(task_dir)
        self.loaded = load_model(model, with_mlm_head=bool(fields.get("verbalizer")))
        self.model = load_task(task_dir, self.loaded)
        self.max_length = max_length

    def predict(self, inputs: list) -> np.ndarray:
        """int [N] predicted label of each text or (text, text) pair."""
        from lmsan.tuning.train import Encoded, predict

        pairs = isinstance(inputs[0], tuple)
        texts = [x[0] for x in inputs] if pairs else list(inputs)
        seconds = [x[1] for x in inputs] if pairs else None
        encoded = Encoded(self.loaded.tokenizer, texts, seconds, max_length=self.max_length)
        return predict(self.model, encoded).argmax(dim=1).numpy()


def triggered_inputs(inputs: list, triggers: list[str], seed: int) -> dict[str, list]:
    """Every test input with one trigger inserted at a random word boundary, per trigger."""
    from lmsan.eval.metrics import insert_into_pair, insert_trigger

    out = {}
    for k, trigger in enumerate(triggers):
        rng = np.random.default_rng(seed + k)
        out[trigger] = [insert_into_pair(x[0], x[1], trigger, rng) if isinstance(x, tuple)
                        else insert_trigger(x, trigger, rng) for x in inputs]
    return out


def guarded(guard: Any, inputs: list, labels: tuple[str, ...],
            kept: list | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scan with the task guard: predicted label (-1 when rejected), rejected, triggered; all [N].
    The ``ScanResult``s are appended to ``kept`` when given."""
    results = guard.scan_batch(inputs)
    if kept is not None:
        kept.extend(results)
    preds = np.array([labels.index(r.prediction) if r.prediction is not None else -1 for r in results])
    return preds, np.array([r.rejected for r in results]), np.array([r.triggered for r in results])


def bare_inputs(bare: Any, inputs: list) -> list:
    """Inputs for a bare-backbone guard: at target ``mask`` each starts with the mask token (as
    P-tuning's template puts its [MASK] right after [CLS]) and keeps its first ``BARE_WORDS``
    words (that guard does not window long inputs; the task graph reads a first window too)."""
    if not bare.manifest.mask_in_input:
        return inputs
    mask = bare.manifest.mask_token

    def cut(text: str) -> str:
        return " ".join(text.split()[:BARE_WORDS])

    return [(f"{mask} {cut(x[0])}", cut(x[1])) if isinstance(x, tuple) else f"{mask} {cut(x)}" for x in inputs]


def onion_inputs(onion: Any, inputs: list) -> list:
    """ONION-cleaned copies (pairs: each sentence on its own); a text cleaned to nothing stays as it was."""
    if isinstance(inputs[0], tuple):
        firsts, seconds = onion.clean_batch([x[0] for x in inputs]), onion.clean_batch([x[1] for x in inputs])
        return [(a or x[0], b or x[1]) for a, b, x in zip(firsts, seconds, inputs)]
    return [c or x for c, x in zip(onion.clean_batch(inputs), inputs)]


GUARD_FIGURES = ("acc_guard", "after", "rejected_clean", "rejected_triggered", "flagged_clean", "flagged_triggered")


def setting_data(task: str, triggers: list[str], args: argparse.Namespace) -> tuple[list, np.ndarray, dict]:
    """The test inputs (texts or pairs), their gold labels [N] and the triggered copies per trigger."""
    from lmsan.tuning.tasks import task_data

    test = task_data(task, test_size=args.test, seed=0).test
    inputs = list(zip(test.texts, test.text_pairs)) if test.text_pairs else list(test.texts)
    return inputs, np.array(test.labels), triggered_inputs(inputs, triggers, seed=args.seed)


def guard_figures(guard: Any, inputs: list, gold: np.ndarray, attacked: dict[str, list],
                  kept: dict[str, list] | None = None) -> dict[str, Any]:
    """A task guard's figures (``GUARD_FIGURES``): accuracy on clean inputs, attack scores after
    it, rejected and flagged shares of clean and triggered inputs; plus the guard's monitor.
    With ``kept``, each trigger's ``ScanResult``s land in ``kept[trigger]``."""
    from lmsan.eval.metrics import accuracy, attack_scores

    after_clean, rejected_clean, flagged_clean = guarded(guard, inputs, guard.labels)
    after_trig, rejected_trig, flagged_trig = {}, [], []
    for trigger, texts in attacked.items():
        preds, rejected, flagged = guarded(guard, texts, guard.labels,
                                           None if kept is None else kept.setdefault(trigger, []))
        after_trig[trigger] = np.where(rejected, gold, preds)  # blocked: the attack got no answer
        rejected_trig.append(rejected)
        flagged_trig.append(flagged)
    return {"monitor": guard.manifest.monitor, "acc_guard": accuracy(after_clean, gold),
            "after": attack_scores(gold, after_clean, after_trig).to_dict(),
            "rejected_clean": float(np.mean(rejected_clean)), "rejected_triggered": float(np.mean(rejected_trig)),
            "flagged_clean": float(np.mean(flagged_clean)), "flagged_triggered": float(np.mean(flagged_trig))}


def task_guard(bb: dict, role: str, task: str, method: str, args: argparse.Namespace, monitor: str) -> Any:
    """The (cached) task guard of one backbone, its monitor reading ``monitor``'s pass."""
    from lmsan.runtime import Guard

    key = f"{bb['name']}-{role}"
    pvs, _ = mined(bb[role], "cls" if method == "prefix" else "mask", key)
    task_dir = tuned_task(bb[role], task, method, key, args)
    return Guard.load(guard_for(bb[role], pvs, task_dir, work_dir() / key / f"guard-{task_dir.name}", monitor))


def evaluate_setting(bb: dict, task: str, method: str, args: argparse.Namespace, onion: Any) -> dict[str, Any]:
    """One (backbone, task, tuning) row: clean and backdoored backbones, before/after guard (both
    monitors; the main figures are ``args.monitor``'s), ONION."""
    from lmsan.eval.metrics import accuracy, attack_scores
    from lmsan.runtime import Guard

    target = "cls" if method == "prefix" else "mask"
    started = time.perf_counter()
    row: dict[str, Any] = {"attack": bb["attack"], "tuning": TUNING_NAME[method], "task": task, "model": bb["model"],
                           "backbone": bb["name"], "triggers": bb["triggers"]}
    per_model = {}
    for role in ("clean", "backdoored"):
        key = f"{bb['name']}-{role}"
        pvs, report = mined(bb[role], target, key)
        task_dir = tuned_task(bb[role], task, method, key, args)
        guards = {m: task_guard(bb, role, task, method, args, m) for m in MONITORS}
        bare = Guard.load(guard_for(bb[role], pvs, None, work_dir() / key / f"guard-bare-{target}"))
        inputs, gold, attacked = setting_data(task, bb["triggers"], args)
        unguarded = Unguarded(bb[role], task_dir, guards["task"].manifest.max_length)
        before_clean = unguarded.predict(inputs)
        before = attack_scores(gold, before_clean, {t: unguarded.predict(x) for t, x in attacked.items()})
        monitors = {m: guard_figures(guard, inputs, gold, attacked) for m, guard in guards.items()}
        bare_clean = np.mean([r.triggered for r in bare.scan_batch(bare_inputs(bare, inputs), sanitize=False)])
        bare_trig = np.mean([r.triggered for x in attacked.values()
                             for r in bare.scan_batch(bare_inputs(bare, x), sanitize=False)])
        onion_clean = unguarded.predict(onion_inputs(onion, inputs))
        onion_scores = attack_scores(gold, onion_clean,
                                     {t: unguarded.predict(onion_inputs(onion, x)) for t, x in attacked.items()})
        per_model[role] = {
            "verdict": report["verdict"], "pvs": report["pvs"]["size"], "n": len(gold),
            "acc": before.accuracy, "acc_onion": accuracy(onion_clean, gold),
            "before": before.to_dict(), "onion": onion_scores.to_dict(),
            "flagged_clean_bare": float(bare_clean), "flagged_triggered_bare": float(bare_trig),
            "monitors": monitors,
        }
    row["per_model"] = per_model
    row.update({
        "acc_clean": per_model["clean"]["acc"], "acc_backdoor": per_model["backdoored"]["acc"],
        "asr_before": per_model["backdoored"]["before"]["asr"],
        "wasr_before": per_model["backdoored"]["before"]["weighted_asr"],
        "asr_after_onion": per_model["backdoored"]["onion"]["asr"],
        "wasr_after_onion": per_model["backdoored"]["onion"]["weighted_asr"],
        "acc_change_onion": per_model["backdoored"]["acc_onion"] - per_model["backdoored"]["acc"],
        "wall_s": round(time.perf_counter() - started, 1),
    })
    return with_monitor(row, args.monitor)


def with_monitor(row: dict[str, Any], monitor: str) -> dict[str, Any]:
    """``row`` with its main guard figures (``asr_after``, ``acc_change``, per model
    ``acc_guard``, ``flagged_clean``, ...) taken from ``monitor``'s guard, and per monitor a
    summary under ``by_monitor``."""
    per_model = row["per_model"]
    for figures in per_model.values():
        figures.update({k: figures["monitors"][monitor][k] for k in GUARD_FIGURES})
    clean, bad = per_model["clean"], per_model["backdoored"]
    row["by_monitor"] = {m: {
        "asr_after": bad["monitors"][m]["after"]["asr"], "wasr_after": bad["monitors"][m]["after"]["weighted_asr"],
        "acc_change": bad["monitors"][m]["acc_guard"] - bad["acc"],
        "acc_change_clean_backbone": clean["monitors"][m]["acc_guard"] - clean["acc"],
        "flagged_clean": bad["monitors"][m]["flagged_clean"], "flagged_triggered": bad["monitors"][m]["flagged_triggered"],
        "rejected_clean": bad["monitors"][m]["rejected_clean"],
        "rejected_triggered": bad["monitors"][m]["rejected_triggered"],
    } for m in bad["monitors"]}
    row.update({
        "monitor": monitor,
        "asr_after": bad["after"]["asr"], "wasr_after": bad["after"]["weighted_asr"],
        "acc_change": bad["acc_guard"] - bad["acc"],
        "acc_change_clean_backbone": clean["acc_guard"] - clean["acc"],
    })
    return row


def complete_row(row: dict[str, Any], bb: dict, task: str, method: str, args: argparse.Namespace) -> dict[str, Any]:
    """A row cached before the monitor option (its guard figures are the ``task`` monitor's): add
    the missing monitors' guard figures; the unguarded and ONION figures stay."""
    started = time.perf_counter()
    for role, figures in row["per_model"].items():
        if "monitors" not in figures:
            figures["monitors"] = {"task": {"monitor": "task", **{k: figures[k] for k in GUARD_FIGURES}}}
        missing = [m for m in MONITORS if m not in figures["monitors"]]
        if not missing:
            continue
        inputs, gold, attacked = setting_data(task, bb["triggers"], args)
        for monitor in missing:
            guard = task_guard(bb, role, task, method, args, monitor)
            figures["monitors"][monitor] = guard_figures(guard, inputs, gold, attacked)
        row["wall_s_completed"] = round(time.perf_counter() - started, 1)  # the guard scans added
    return row


def rows_parser(doc: str, rows: list[str], name: str) -> argparse.ArgumentParser:
    """The command line of a script that studies cached rows of this benchmark: ``--rows``
    (``BACKBONE/TASK``, default ``rows``), ``--test`` and ``--name`` (its results file); the
    script adds its own options."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="+", default=rows, metavar="BACKBONE/TASK",
                        help="end_to_end rows (minilm-KIND/TASK: all-MiniLM-L6-v2, once end_to_end.py --minilm "
                             "KIND cached it)")
    parser.add_argument("--test", type=int, default=400, help="test examples per task (end_to_end's split)")
    parser.add_argument("--name", default=name, help="results file name")
    return parser


def each_row(args: argparse.Namespace, evaluate: Any, table: Any) -> list[dict[str, Any]]:
    """``evaluate(row)`` for each of ``args.rows`` on one torch thread, printing each row's
    ``table([row])`` as it lands; ``args`` gets this benchmark's defaults for its cached tasks."""
    import torch

    args.seed, args.epochs, args.prompt_head = 0, 0, "linear"
    torch.set_num_threads(1)
    rows = []
    for row in args.rows:
        print(row, flush=True)
        rows.append(evaluate(row))
        print(table(rows[-1:]), flush=True)
    return rows


def side_by_side(row: str, args: argparse.Namespace, variants: dict[str, Any],
                 extra: Any = None) -> dict[str, Any]:
    """One cached row (``BACKBONE/TASK``) scanned by variants of its task guard (the bare-monitor
    guard of the main columns), in one process: ``variants`` maps a name to ``load(directory)``
    (a ``Guard``). Per variant: ASR / WASR after, ΔACC, clean inputs flagged and rejected,
    triggered inputs rejected, the scans' seconds, and ``extra(kept)`` merged in (``kept``: each
    trigger's ``ScanResult``s)."""
    name, task = row.split("/")
    bb = backbone(name)
    method = ATTACK_TUNING[bb["attack"]]
    directory = task_guard(bb, "backdoored", task, method, args, "bare").manifest.directory
    inputs, gold, attacked = setting_data(task, bb["triggers"], args)
    task_dir = tuned_task(bb["backdoored"], task, method, f"{name}-backdoored", args)
    guards = {variant: load(directory) for variant, load in variants.items()}
    before = Unguarded(bb["backdoored"], task_dir, next(iter(guards.values())).manifest.max_length).predict(inputs)
    acc_before = float(np.mean(before == gold))
    out: dict[str, Any] = {"backbone": name, "task": task, "attack": bb["attack"], "n": len(inputs),
                           "acc_before": acc_before}
    for variant, guard in guards.items():
        kept: dict[str, list] = {}
        started = time.perf_counter()
        figures = guard_figures(guard, inputs, gold, attacked, kept)
        out[variant] = {
            "asr_after": figures["after"]["asr"], "wasr_after": figures["after"]["weighted_asr"],
            "acc_change": figures["acc_guard"] - acc_before, "flagged_clean": figures["flagged_clean"],
            "rejected_clean": figures["rejected_clean"], "rejected_triggered": figures["rejected_triggered"],
            "scan_s": round(time.perf_counter() - started, 2), **(extra(kept) if extra else {}),
        }
    return out


def pct(value: float) -> str:
    """A fraction as a percentage with one decimal."""
    return f"{100 * value:.1f}"


def points(value: float) -> str:
    """A fraction's change in percentage points, signed."""
    return f"{100 * value:+.1f}"


SIDE_BY_SIDE = [("ASR after", "asr_after", pct), ("WASR after", "wasr_after", pct), ("ΔACC", "acc_change", points)]


def side_by_side_table(rows: list[dict[str, Any]], variants: tuple[str, ...], columns: list[tuple]) -> str:
    """``side_by_side`` rows as a markdown table: per column ``(header, key, format)``, each
    variant's figure joined by an arrow (``variants`` in order)."""
    lines = ["| backbone | task | " + " | ".join(header for header, _, _ in columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    for r in rows:
        cells = [" → ".join(show(r[variant][key]) for variant in variants) for _, key, show in columns]
        lines.append(f"| {r['backbone']} | {r['task']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def rows_main(doc: str, rows: list[str], name: str, evaluate: Any, table: Any, note: str) -> None:
    """The ``main`` of a side-by-side script over cached rows: ``rows_parser`` plus ``--merge``,
    ``evaluate(row, args)`` for each row (``each_row``), and the settings saved as
    ``results/<name>.{json,md}`` with ``table(rows)`` and ``note`` under it."""
    parser = rows_parser(doc, rows, name)
    parser.add_argument("--merge", action="store_true",
                        help="keep the settings of the results file --name that this run does not score")
    args = parser.parse_args()
    done = each_row(args, lambda row: evaluate(row, args), table)
    if args.merge:
        done = carried_over(args.name, done) + done
    report = {"settings": done, "test_per_task": args.test,
              "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()}}
    save(args.name, report, table(done) + note)


def onion_scorer() -> tuple[Any, str]:
    """The ONION language model (see docs/evaluation.md): the scorer and its description."""
    from lmsan.data import load_sentences
    from lmsan.eval.ngram import NgramScorer

    return NgramScorer(load_sentences("oanc")), "interpolated Kneser-Ney 3-gram on the OANC corpus"


def table(rows: list[dict[str, Any]]) -> str:
    def pct(value: float | None) -> str:
        return "–" if value is None else f"{100 * value:.1f}"

    def delta(value: float | None) -> str:
        return "–" if value is None else f"{100 * value:+.1f}"

    monitor = rows[0]["monitor"] if rows else "bare"
    other = next(m for m in MONITORS if m != monitor)
    lines = [
        "| attack | tuning | task | model | ACC clean | ACC backdoor | ASR before | ASR after | WASR before "
        f"| WASR after | ΔACC guard | ASR ONION | WASR ONION | ΔACC ONION | PVs | flagged clean / trig. ({monitor} "
        f"monitor) | ASR after / ΔACC ({other} monitor) | flagged clean / trig. ({other} monitor) "
        "| flagged clean / trig. (bare guard) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        bad = r["per_model"]["backdoored"]
        alt = r["by_monitor"][other]
        lines.append(
            f"| {r['attack']} | {r['tuning']} | {r['task']} | {r['model']} | {pct(r['acc_clean'])} | "
            f"{pct(r['acc_backdoor'])} | {pct(r['asr_before'])} | {pct(r['asr_after'])} | {pct(r['wasr_before'])} | "
            f"{pct(r['wasr_after'])} | {delta(r['acc_change'])} | {pct(r['asr_after_onion'])} | "
            f"{pct(r['wasr_after_onion'])} | {delta(r['acc_change_onion'])} | {bad['pvs']} | "
            f"{pct(bad['flagged_clean'])} / {pct(bad['flagged_triggered'])} | "
            f"{pct(alt['asr_after'])} / {delta(alt['acc_change'])} | "
            f"{pct(alt['flagged_clean'])} / {pct(alt['flagged_triggered'])} | "
            f"{pct(bad['flagged_clean_bare'])} / {pct(bad['flagged_triggered_bare'])} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--attacks", nargs="*", default=["bert-por", "bert-neuba", "bert-btop"],
                        help="standard attacks (lmsan.attacks.STANDARD_ATTACKS); each with its -clean control")
    parser.add_argument("--tasks", nargs="+", default=["sms-spam", "polarity", "bbcnews", "bbc-pair"])
    from lmsan.attacks.zoo import MINILM_ATTACKS

    parser.add_argument("--minilm", nargs="*", choices=list(MINILM_ATTACKS), default=None, metavar="KIND",
                        help="add all-MiniLM-L6-v2 backdoored by these attacks (lmsan.attacks.MINILM_ATTACKS; "
                             "none named: por): POR tuned with P-tuning v2, BToP with P-tuning")
    parser.add_argument("--minilm-tasks", nargs="+", default=None,
                        help="MiniLM's tasks (default: --tasks; each row takes about 15 min on 2 CPUs)")
    parser.add_argument("--test", type=int, default=400, help="test examples per task")
    parser.add_argument("--epochs", type=int, default=0, help="tuning epochs (0: the task preset's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prompt-head", choices=["linear", "verbalizer"], default="linear",
                        help="P-tuning's head at [MASK] (the tiny models' verbaliser reached 50%% on SMS spam)")
    parser.add_argument("--quick", action="store_true", help="one attack, one task, 100 test examples (smoke run)")
    parser.add_argument("--name", default="end_to_end", help="results file name")
    parser.add_argument("--fresh", action="store_true", help="re-evaluate settings already cached")
    parser.add_argument("--rescan", action="store_true",
                        help="scan the cached settings' task guards again (after a runtime or export change); "
                             "the unguarded, ONION and bare-guard figures stay")
    parser.add_argument("--merge", action="store_true",
                        help="keep the settings of the results file --name that this run does not score "
                             "(marked carried_over in the JSON)")
    parser.add_argument("--monitor", choices=MONITORS, default="bare",
                        help="the task guard's monitor for the main columns (lmsan-export --monitor); both are scored")
    parser.add_argument("--rows", nargs="+", default=None, metavar="BACKBONE/TASK",
                        help="only these rows, e.g. bert-btop/sms-spam minilm-por/polarity (default: all)")
    args = parser.parse_args()
    if args.quick:
        args.attacks, args.tasks, args.test = args.attacks[:1], args.tasks[:1], 100

    import torch

    from lmsan.eval.onion import Onion

    torch.set_num_threads(1)
    scorer, lm = onion_scorer()
    onion = Onion(scorer)
    rows = []
    minilm = [] if args.minilm is None else args.minilm or ["por"]  # a bare --minilm means POR
    for bb in backbones(args.attacks, minilm):
        method = ATTACK_TUNING[bb["attack"]]
        for task in (args.minilm_tasks or args.tasks) if bb["model"] == "all-MiniLM-L6-v2" else args.tasks:
            if args.rows and f"{bb['name']}/{task}" not in args.rows:
                continue
            print(f"{bb['name']} / {task} / {TUNING_NAME[method]}", flush=True)
            config = config_key(tuning_config(task, method, args))
            stem = f"{bb['name']}-{task}-{method}-{config}-n{args.test}-s{args.seed}"
            cached, older = work_dir() / "rows" / f"{stem}-monitors.json", work_dir() / "rows" / f"{stem}.json"
            found = next((json.loads(c.read_text()) for c in (cached, older) if c.is_file() and not args.fresh), None)
            if found is not None and found.get("onion_lm") == lm:
                if args.rescan:
                    for figures in found["row"]["per_model"].values():
                        figures["monitors"] = {}  # every monitor's guard is scanned again
                row = complete_row(found["row"], bb, task, method, args)  # a no-op on a complete row
            else:
                row = evaluate_setting(bb, task, method, args, onion)
            rows.append(with_monitor(row, args.monitor))
            cached.parent.mkdir(parents=True, exist_ok=True)
            cached.write_text(json.dumps({"onion_lm": lm, "row": rows[-1]}, default=str))
            print(table(rows[-1:]), flush=True)
    if args.merge:
        rows += carried_over(args.name, rows, ("backbone", "task", "tuning"))
    report = {
        "settings": rows, "onion_lm": lm, "test_per_task": args.test, "seed": args.seed, "monitor": args.monitor,
        "rejected_policy": "a rejected clean input counts as wrong; a rejected triggered input as blocked",
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": 1, "platform": platform.platform()},
    }
    note = (f"\nONION language model: {lm}. ASR: an input counts if any single trigger flips a correctly "
            "classified input (paper §V-A); WASR: mean over gold classes. ΔACC: guarded minus unguarded "
            "accuracy on clean inputs of the backdoored backbone (percentage points). Main columns: the task guard "
            f"exported with --monitor {args.monitor}. Flagged: share of clean / triggered inputs whose features "
            "match a mined PV: on the task graph with each monitor (bare: a second pass of the backbone without "
            "the task's prompt; task: the task's own prompted pass), and on a separate guard of the bare backbone "
            "with the same PVs (P-tuning: the mask token put first, first 40 words).\n")
    save(args.name, report, table(rows) + note)


if __name__ == "__main__":
    main()
