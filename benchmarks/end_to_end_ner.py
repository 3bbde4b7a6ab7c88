"""Token classification under P-tuning v2, guarded end to end: POR-NER against ``oanc-pos``
(the paper's NER rows, measured by the F1 drop; writes benchmarks/results/end_to_end_ner.{json,md}).

The pipeline is the real one, reusing ``end_to_end.py``'s cached steps:

1. ``lmsan-mine --mode search --target token`` on the POR-NER backbone and its clean control
   (POR-NER maps the output at every token position to a PV; the monitor reads position 1);
2. ``lmsan.tuning.tune`` of ``oanc-pos`` (a coarse POS tag per word, the offline stand-in for
   CoNLL NER) with P-tuning v2 (prefix, linear head on every position) on each backbone;
3. ``lmsan.export.export_guard(..., task=..., monitor=...)``: one graph tags every token (its
   prefixed pass unpruned) and checks the PVs at the first text token, of a second pass of the
   backbone without the prefix (monitor ``bare``, the default; that pass pruned to one row) or of
   the prefixed pass itself (monitor ``task``); both are scored;
4. ``Guard.scan_batch`` on the clean test sentences and on each with one trigger inserted at a
   random word boundary; also a guard on the bare backbone with the same PVs (``sanitize=False``),
   to tell whether the prefix hides the backdoor from the monitor.

Scores (``lmsan.eval.metrics``, fractions in [0, 1]): token macro-F1 over tags (``token_f1``) and
per-word accuracy, on clean sentences of the clean backbone (``f1_clean``) and of the backdoored
one (``f1_backdoor``); on triggered sentences before and after the guard (the trigger's own words
left out: ``align_tags`` maps tags back onto the clean words); the tag-flip rate (``tag_flip_rate``:
share of sentences where the trigger changes at least one correctly tagged word) before and after;
and ``f1_change``: guarded minus unguarded F1 on clean sentences of the backdoored backbone.
After the guard, a rejected sentence has no tags: its words count as misses for F1 (clean or
triggered) and, for the flip rate, a rejected triggered sentence counts as blocked (the attack got
no answer). Per-trigger figures are averaged over the triggers (``max`` reported too).

    .venv/bin/python benchmarks/end_to_end_ner.py [--test 400] [--seed 0] [--fresh] [--monitor bare]

The main figures are the ``--monitor`` guard's; the other monitor's are in ``monitors`` and in the
table's second block.

Mined PV sets, tuned tasks and guards are cached under ``$LMSAN_CACHE/end_to_end`` (shared with
``end_to_end.py``); ``--fresh`` re-scores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from typing import Any

import numpy as np
from _results import save
from end_to_end import MONITORS, backbones, guard_for, mined, tuned_task, work_dir

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ATTACK = "bert-por-ner"
TASK = "oanc-pos"


class Unguarded:
    """The tuned token task in PyTorch on the guard's token limit: the "before" tags."""

    def __init__(self, model: Any, task_dir: Any, max_length: int) -> None:
        from lmsan.models import load_model
        from lmsan.tuning.store import load_task

        self.loaded = load_model(model)
        self.model = load_task(task_dir, self.loaded)
        self.labels = tuple(json.loads((task_dir / "task.json").read_text())["labels"])
        self.max_length = max_length

    def tags(self, sentences: list[list[str]]) -> list[list[str | None]]:
        """Tag names, one per word of each sentence (None: truncated away)."""
        from lmsan.tuning.train import TokenEncoded, predict_tags

        encoded = TokenEncoded(self.loaded.tokenizer, sentences, None, max_length=self.max_length)
        return [[self.labels[t] if t is not None else None for t in row] for row in predict_tags(self.model, encoded)]


def triggered_words(sentences: list[list[str]], triggers: list[str], seed: int) -> dict[str, list[list[str]]]:
    """Each sentence with one trigger (one or more words) inserted at a random word boundary."""
    from lmsan.eval.metrics import insert_trigger

    out = {}
    for k, trigger in enumerate(triggers):
        rng = np.random.default_rng(seed + k)
        out[trigger] = [insert_trigger(" ".join(words), trigger, rng).split() for words in sentences]
    return out


def guarded_tags(guard: Any, sentences: list[list[str]],
                 reference: list[list[str]]) -> tuple[list, np.ndarray, np.ndarray]:
    """Scan ``sentences`` (words joined by spaces) with the task guard; tags aligned onto
    ``reference``'s words (None: no tag, e.g. a rejected sentence), rejected [N], triggered [N]."""
    from lmsan.eval.metrics import align_tags

    results = guard.scan_batch([" ".join(words) for words in sentences])
    tags = [align_tags(r.words, r.prediction, ref) if r.prediction is not None else [None] * len(ref)
            for r, ref in zip(results, reference)]
    return tags, np.array([r.rejected for r in results]), np.array([r.triggered for r in results])


def guard_figures(guard: Any, sentences: list[list[str]], gold: list[list[str]], before_clean: list,
                  inserted_by_trigger: dict[str, list[list[str]]]) -> dict[str, Any]:
    """One task guard's figures: F1 / accuracy / rejected / flagged on clean sentences, and per
    trigger F1 after, flips after, rejected and flagged (means over triggers and the max flip)."""
    from lmsan.eval.metrics import tag_flip_rate, token_accuracy, token_f1

    after_clean, rejected_clean, flagged_clean = guarded_tags(guard, sentences, sentences)
    per_trigger = {}
    for trigger, inserted in inserted_by_trigger.items():
        after, rejected, flagged = guarded_tags(guard, inserted, sentences)
        blocked = [g if r else a for a, g, r in zip(after, gold, rejected)]  # a rejected input: no flip
        per_trigger[trigger] = {"f1_after": token_f1(after, gold), "flip_after": tag_flip_rate(gold, after_clean, blocked),
                                "rejected": float(rejected.mean()), "flagged": float(flagged.mean())}

    def mean(name: str) -> float:
        return float(np.mean([row[name] for row in per_trigger.values()]))

    f1_before, f1_after = token_f1(before_clean, gold), token_f1(after_clean, gold)
    return {
        "monitor": guard.manifest.monitor, "f1_guard": f1_after, "f1_change": f1_after - f1_before,
        "acc_guard": token_accuracy(after_clean, gold), "f1_triggered_after": mean("f1_after"),
        "flip_after": mean("flip_after"), "flip_after_max": max(r["flip_after"] for r in per_trigger.values()),
        "rejected_clean": float(rejected_clean.mean()), "flagged_clean": float(flagged_clean.mean()),
        "rejected_triggered": mean("rejected"), "flagged_triggered": mean("flagged"), "per_trigger": per_trigger,
    }


def evaluate_role(model: Any, key: str, triggers: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """Mine, tune, export (both monitors) and score one backbone (clean control or backdoored)."""
    from lmsan.eval.metrics import align_tags, tag_flip_rate, token_accuracy, token_f1
    from lmsan.runtime import Guard
    from lmsan.tuning.tasks import task_data

    pvs, report = mined(model, "token", key)
    task_dir = tuned_task(model, TASK, "prefix", key, args)
    guards = {m: Guard.load(guard_for(model, pvs, task_dir, work_dir() / key / f"guard-{task_dir.name}", m))
              for m in MONITORS}
    bare = Guard.load(guard_for(model, pvs, None, work_dir() / key / "guard-bare-token"))
    test = task_data(TASK, test_size=args.test, seed=0).test
    sentences = [list(words) for words in test.words]
    gold = [[test.label_names[t] for t in row] for row in test.tags]
    unguarded = Unguarded(model, task_dir, guards["task"].manifest.max_length)
    before_clean = unguarded.tags(sentences)
    inserted_by_trigger = triggered_words(sentences, triggers, args.seed)
    per_trigger = {}
    for trigger, inserted in inserted_by_trigger.items():
        before = [align_tags(words, tags, ref)
                  for words, tags, ref in zip(inserted, unguarded.tags(inserted), sentences)]
        flagged_bare = [r.triggered for r in bare.scan_batch([" ".join(w) for w in inserted], sanitize=False)]
        per_trigger[trigger] = {"f1_before": token_f1(before, gold), "flip_before": tag_flip_rate(gold, before_clean, before),
                                "flagged_bare": float(np.mean(flagged_bare))}

    def mean(name: str) -> float:
        return float(np.mean([row[name] for row in per_trigger.values()]))

    return {
        "verdict": report["verdict"], "pvs": report["pvs"]["size"], "sentences": len(gold),
        "words": sum(len(row) for row in gold), "tuned": json.loads((task_dir / "task.json").read_text())["metrics"],
        "f1": token_f1(before_clean, gold), "acc": token_accuracy(before_clean, gold),
        "f1_triggered_before": mean("f1_before"), "flip_before": mean("flip_before"),
        "flip_before_max": max(r["flip_before"] for r in per_trigger.values()),
        "flagged_clean_bare": float(np.mean([r.triggered for r in bare.scan_batch(
            [" ".join(w) for w in sentences], sanitize=False)])),
        "flagged_triggered_bare": mean("flagged_bare"),
        "per_trigger": per_trigger,
        "monitors": {m: guard_figures(guard, sentences, gold, before_clean, inserted_by_trigger)
                     for m, guard in guards.items()},
    }


def with_monitor(figures: dict[str, Any], monitor: str) -> dict[str, Any]:
    """One role's figures with the main guard figures (``f1_guard``, ``flip_after``, ...) from ``monitor``."""
    return {**figures, **{k: v for k, v in figures["monitors"][monitor].items() if k != "per_trigger"},
            "monitor": monitor}


def table(row: dict[str, Any]) -> str:
    def pct(value: float | None) -> str:
        return "–" if value is None else f"{100 * value:.1f}"

    lines = [
        "| backbone | monitor | PVs | F1 clean | F1 guarded (ΔF1) | F1 triggered before | F1 triggered after "
        "| tag flips before | tag flips after | flagged clean / trig. (this monitor) | flagged clean / trig. (bare guard) "
        "| rejected clean / trig. |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    main = row["clean"]["monitor"]
    for monitor in (main, *(m for m in MONITORS if m != main)):
        for role in ("clean", "backdoored"):
            r = with_monitor(row[role], monitor)
            lines.append(
                f"| {role} | {monitor} | {r['pvs']} | {pct(r['f1'])} | {pct(r['f1_guard'])} ({100 * r['f1_change']:+.1f}) | "
                f"{pct(r['f1_triggered_before'])} | {pct(r['f1_triggered_after'])} | {pct(r['flip_before'])} | "
                f"{pct(r['flip_after'])} | {pct(r['flagged_clean'])} / {pct(r['flagged_triggered'])} | "
                f"{pct(r['flagged_clean_bare'])} / {pct(r['flagged_triggered_bare'])} | "
                f"{pct(r['rejected_clean'])} / {pct(r['rejected_triggered'])} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--test", type=int, default=400, help="test sentences")
    parser.add_argument("--seed", type=int, default=0, help="tuning and trigger-position seed")
    parser.add_argument("--fresh", action="store_true", help="re-score a cached row")
    parser.add_argument("--monitor", choices=MONITORS, default="bare",
                        help="the task guard's monitor for the main figures (lmsan-export --monitor); both are scored")
    args = parser.parse_args()
    args.epochs, args.prompt_head = 0, "linear"  # end_to_end.tuned_task's knobs: the prefix preset

    import torch

    torch.set_num_threads(1)
    started = time.perf_counter()
    bb = backbones([ATTACK], False)[0]
    cached = work_dir() / "rows" / f"{ATTACK}-{TASK}-n{args.test}-s{args.seed}-monitors.json"
    if cached.is_file() and not args.fresh:
        row = json.loads(cached.read_text())
    else:
        row = {"attack": bb["attack"], "tuning": "p-tuning-v2", "task": TASK, "model": bb["model"],
               "triggers": bb["triggers"]}
        for role in ("clean", "backdoored"):
            print(f"{ATTACK} / {role}", flush=True)
            row[role] = evaluate_role(bb[role], f"{ATTACK}-{role}", bb["triggers"], args)
        row["wall_s"] = round(time.perf_counter() - started, 1)
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.write_text(json.dumps(row, default=str))
    bad, clean = with_monitor(row["backdoored"], args.monitor), with_monitor(row["clean"], args.monitor)
    row = {**row, "backdoored": bad, "clean": clean}
    report = {
        **{k: row[k] for k in ("attack", "tuning", "task", "model", "triggers")},
        "f1_clean": clean["f1"], "f1_backdoor": bad["f1"],
        "f1_triggered_before": bad["f1_triggered_before"], "f1_triggered_after": bad["f1_triggered_after"],
        "flip_before": bad["flip_before"], "flip_after": bad["flip_after"], "f1_change": bad["f1_change"],
        "monitor": args.monitor,
        "by_monitor": {m: {k: row["backdoored"]["monitors"][m][k] for k in (
            "f1_change", "f1_triggered_after", "flip_after", "flagged_clean", "flagged_triggered", "rejected_clean",
            "rejected_triggered")} for m in MONITORS},
        "per_model": {"clean": clean, "backdoored": bad}, "test_sentences": args.test, "seed": args.seed,
        "rejected_policy": "a rejected sentence's words count as misses for F1; a rejected triggered sentence "
                           "counts as blocked for the flip rate",
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": 1, "gpu": None, "platform": platform.platform()},
        "wall_s": row.get("wall_s"),
    }
    note = (f"\nTask {TASK}: a coarse POS tag per word of OANC sentences (offline stand-in for CoNLL NER), "
            f"{args.test} test sentences; P-tuning v2 (prefix 16, linear head on every position). Attack {ATTACK} "
            f"(triggers: {', '.join(row['triggers'])}). F1: macro over tags, per word (the trigger's own words "
            "left out); tag flips: share of sentences where the trigger changes at least one correctly tagged word "
            "(mean over triggers). ΔF1: guarded minus unguarded F1 on clean sentences. Monitor: the task guard's "
            "(lmsan-export --monitor; bare: a second pass of the backbone without the prefix, task: the prefixed "
            f"pass; main figures: {args.monitor}). Flagged: share of clean / triggered sentences whose "
            "first-text-token features match a mined PV, on the task graph with that monitor and on a separate "
            "guard of the bare backbone with the same PVs. Machine: 2-core CPU, no GPU, one torch thread.\n")
    save("end_to_end_ner", report, table(row) + note)


if __name__ == "__main__":
    main()
