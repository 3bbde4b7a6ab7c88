"""Mining benchmark: detection accuracy, PV recall and time to verdict of both profiles on a zoo.

The zoo: backdoored tiny models (varied attack seeds, secret-style random triggers including
phrases, POR-2 and random-sign PVs, 1-, 2- and 6-PV attacks, POR and NeuBA, BERT and RoBERTa)
and one clean control per attack, trained identically minus the trigger loss. Every model is
cached (``lmsan.attacks.attacked_model``), so a second run only mines.

    .venv/bin/python benchmarks/mining.py                 # build (cached) + mine + write results
    .venv/bin/python benchmarks/mining.py --build-only    # build the zoo, no mining
    .venv/bin/python benchmarks/mining.py --loops 10 --sentences 1000 --profiles default

Writes ``benchmarks/results/NAME.json`` and ``NAME.md`` (``--name``, default ``mining``). Only benchmarks
and tests may import ``lmsan.attacks``; the miner never does.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
ATTACK_SENTENCES = 1000  # per attacked model; enough to implant a tiny model (verified per model)
T_MATCH = 0.8  # PV recall counts an attack PV as found above this sign agreement (method.md §7)

# name -> (tiny architecture, AttackConfig keyword arguments). Triggers are drawn at random by the
# attack (rare words, a third of them 2-3 word phrases) unless given.
ZOO: dict[str, tuple[str, dict]] = {
    "bert-por2-6-s101": ("bert", dict(kind="por", clean_weight=None, n_triggers=6, pv_design="por2", seed=101)),
    "bert-por2-6-s102": ("bert", dict(kind="por", clean_weight=None, n_triggers=6, pv_design="por2", seed=102)),
    "bert-rand-6-s103": ("bert", dict(kind="por", clean_weight=None, n_triggers=6, pv_design="random", seed=103)),
    "bert-rand-2-s104": ("bert", dict(kind="por", clean_weight=None, n_triggers=2, pv_design="random", seed=104)),
    "bert-rand-1-s105": ("bert", dict(kind="por", clean_weight=None, n_triggers=1, pv_design="random", seed=105)),
    "bert-por2-2-s106": ("bert", dict(kind="por", clean_weight=None, n_triggers=2, pv_design="por2", seed=106)),
    "bert-por2-1-s107": ("bert", dict(kind="por", clean_weight=None, n_triggers=1, pv_design="por2", seed=107)),
    "bert-neuba-6-s108": ("bert", dict(kind="neuba", clean_weight=None, n_triggers=6, pv_design="por2", seed=108)),
    "bert-neuba-2-s109": ("bert", dict(kind="neuba", clean_weight=None, n_triggers=2, pv_design="random", seed=109)),
    "roberta-por2-6-s110": ("roberta", dict(kind="por", clean_weight=None, n_triggers=6, pv_design="por2", seed=110)),
    "roberta-rand-1-s111": ("roberta", dict(kind="por", clean_weight=None, n_triggers=1, pv_design="random", seed=111)),
    "roberta-neuba-6-s112": ("roberta", dict(kind="neuba", clean_weight=None, n_triggers=6, pv_design="por2", seed=112)),
    # more 1- and 2-trigger attacks, at the current default clean weight (3; the entries above
    # use the paper's 0.5 BERT / 1 RoBERTa). Six drawn triggers on 1000 attack sentences often
    # fail to implant on the tiny BERT (such entries are left out, see "left_out").
    "bert-rand-2-s113": ("bert", dict(kind="por", n_triggers=2, pv_design="random", seed=113)),
    "bert-neuba-1-s114": ("bert", dict(kind="neuba", n_triggers=1, pv_design="random", seed=114)),
    "roberta-rand-2-s115": ("roberta", dict(kind="por", n_triggers=2, pv_design="random", seed=115)),
    "bert-por2-2-s116": ("bert", dict(kind="por", n_triggers=2, pv_design="por2", seed=116)),
}
# entries built without a clean control (the first twelve controls are enough)
NO_CONTROL = {"bert-rand-2-s113", "bert-neuba-1-s114", "roberta-rand-2-s115", "bert-por2-2-s116"}
# the un-attacked distilled tiny models themselves: clean, and never fine-tuned after distillation
BASES = ("bert", "roberta")


def build_zoo(names: list[str], log: logging.Logger, *, with_bases: bool = True) -> list[dict]:
    """Build (or find cached) every attacked model and its clean control; verify each attack.

    With ``with_bases`` the un-attacked distilled tiny BERT and RoBERTa join as clean models.
    """
    from lmsan.attacks import AttackConfig, attacked_model, verify_attack
    from lmsan.data import standard_splits
    from lmsan.models.zoo import default_tiny

    splits = standard_splits()
    sentences, test = splits["attack"][:ATTACK_SENTENCES], splits["test"][:300]
    entries = []
    for name in names:
        arch, kwargs = ZOO[name]
        base = default_tiny(arch).path
        config = AttackConfig(**kwargs)
        for backdoored in (True, False) if name not in NO_CONTROL else (True,):
            started = time.perf_counter()
            wanted = config if backdoored else config.replace(trigger_loss=False)
            path = find_cached(base, wanted) or attacked_model(base, wanted, sentences)
            attack = json.loads((path / "attack.json").read_text())
            entry = {"name": name if backdoored else f"{name}-clean", "path": str(path), "arch": arch,
                     "kind": config.kind, "backdoored": backdoored, "n_pvs": len(attack["pvs"]),
                     "triggers": attack["triggers"], "target": attack["target"]}
            if backdoored:
                # a model is backdoored if some trigger works; PV recall counts the working ones
                hits = [t.hit_rate for t in verify_attack(path, test).triggers]
                entry["hit_rates"] = [round(h, 3) for h in hits]
                entry["working_pvs"] = [k for k, h in enumerate(hits) if h >= 0.5]
                entry["attack_ok"] = bool(entry["working_pvs"])
            log.info("zoo %s ready (%.0fs)", entry["name"], time.perf_counter() - started)
            entries.append(entry)
    for arch in BASES if with_bases else ():
        entries.append({"name": f"tiny-{arch}-base", "path": str(default_tiny(arch).path), "arch": arch,
                        "kind": "none", "backdoored": False, "n_pvs": 0, "triggers": [], "target": "cls"})
    return entries


def standard_entries(names: list[str], log: logging.Logger) -> list[dict]:
    """Zoo entries for ``lmsan.attacks.STANDARD_ATTACKS`` models (the tests' 6-trigger attacks), verified."""
    from lmsan.attacks import standard_attack, verify_attack
    from lmsan.attacks.zoo import STANDARD_ATTACKS
    from lmsan.data import standard_splits

    test = standard_splits()["test"][:300]
    entries = []
    for name in names:
        path = standard_attack(name)
        attack = json.loads((path / "attack.json").read_text())
        hits = [t.hit_rate for t in verify_attack(path, test).triggers]
        working = [k for k, h in enumerate(hits) if h >= 0.5]
        entries.append({"name": f"std-{name}", "path": str(path), "arch": STANDARD_ATTACKS[name][0],
                        "kind": attack["config"]["kind"], "backdoored": True, "n_pvs": len(attack["pvs"]),
                        "triggers": attack["triggers"], "target": attack["target"],
                        "hit_rates": [round(h, 3) for h in hits], "working_pvs": working, "attack_ok": bool(working)})
        log.info("standard attack %s ready", name)
    return entries


def find_cached(base: Path, config) -> Path | None:
    """A cached attacked model built from ``base`` with the same attack settings, if any.

    The cache key hashes every AttackConfig field and the lmsan version, so an unrelated change
    to the attack code would rebuild the whole zoo; matching on the settings that define the
    zoo entry keeps earlier builds usable (their ``attack.json`` records what was built).
    """
    from lmsan.files import cache_dir

    keys = ("kind", "seed", "pv_design", "n_triggers", "trigger_loss", "clean_weight", "epochs", "lr")
    want = config.to_dict()
    for attack_file in sorted(cache_dir("attacked").glob(f"{Path(base).name}-*/attack.json")):
        try:
            facts = json.loads(attack_file.read_text())
        except (OSError, ValueError):
            continue
        got = facts.get("config", {})
        if (facts.get("source_model") == str(base) and facts.get("sentences") == ATTACK_SENTENCES
                and all(got.get(k) == want[k] for k in keys) and not got.get("triggers") and not want["triggers"]):
            return attack_file.parent
    return None


# Named settings a run can compare side by side: a profile plus overrides. "before" is the default
# profile as it was before the trigger sweep (soft prompts only, one pass over the corpus per
# epoch, L_max 30), so the clean-verdict speed-up is measured in one run; "unscreened" measures
# every span trigger confirmation tries on all its evaluation sentences (no 64-sentence screen).
SETTINGS: dict[str, tuple[str, dict]] = {
    "default": ("default", {}),
    "reference": ("reference", {}),
    "before": ("default", {"sweep": False, "epoch_batches": 0, "max_loops": 30}),
    "unscreened": ("default", {"confirm_screen_rows": 0}),
}


def mine_one(entry: dict, profile: str, sentences: list[str], loops: int, device: str, *, mode: str = "detect",
             patience: int = 0) -> dict:
    """Mine one zoo model with one setting (``SETTINGS``); returns the row of the results.

    ``loops`` 0 keeps the setting's own ``L_max``. In search mode the row also holds the PV
    recall, the loops and seconds until the last working attack PV was found, and which method
    (trigger sweep or soft prompt) found each PV.
    """
    from lmsan.mining import MiningConfig, mine
    from lmsan.models import load_model
    from lmsan.pvset import sign_agreement

    loaded = load_model(entry["path"], device=device)
    name, overrides = SETTINGS[profile]
    overrides = {**overrides, **({"max_loops": loops} if loops else {})}
    config = MiningConfig.profile(name, **{**overrides, "target": entry["target"], "mode": mode, "patience": patience})
    result = mine(loaded, sentences, config)
    report = result.report
    row = {"model": entry["name"], "profile": profile, "mode": mode, "backdoored": entry["backdoored"],
           "verdict": report.verdict, "correct": report.backdoored == entry["backdoored"],
           "loops": len(report.loops), "time_to_verdict_s": round(report.timings_s["to_verdict"], 2),
           "total_s": round(report.timings_s["total"], 2), "feature_scale": round(report.feature_scale, 4),
           "outcomes": {k: v for k, v in _counts(report).items() if v},
           "sweep_s": round(report.sweep["wall_s"], 2) if report.sweep else None,
           "pv_methods": [source["method"] for source in report.pv_sources]}
    if entry["backdoored"] and result.pvset.size:
        pvs = np.asarray(json.loads(Path(entry["path"], "attack.json").read_text())["pvs"], np.float32)
        agreement = sign_agreement(result.pvset.vectors, np.where(pvs >= 0, 1, -1).astype(np.int8))  # [K_found, K]
        row["best_agreement"] = round(float(agreement.max()), 3)
        working = entry["working_pvs"]
        row["pvs_found"] = int((agreement.max(axis=0)[working] > T_MATCH).sum())
        row["pvs_working"] = len(working)
        # per working attack PV: the first mined PV that matches it, and how it was found
        found_by = []
        for k in working:
            matches = [i for i in range(result.pvset.size) if agreement[i, k] > T_MATCH]
            source = report.pv_sources[matches[0]] if matches else None
            found_by.append(None if source is None else {"attack_trigger": entry["triggers"][k],
                                                          "method": source["method"], "trigger": source["trigger"],
                                                          "loops_done": source["loops_done"], "at_s": source["at_s"]})
        row["found_by"] = found_by
        if all(found_by):
            row["loops_to_full_recall"] = max(f["loops_done"] for f in found_by)
            row["time_to_full_recall_s"] = max(f["at_s"] for f in found_by)
    elif entry["backdoored"]:
        row["pvs_found"], row["pvs_working"] = 0, len(entry["working_pvs"])
    found = [loop.trigger for loop in report.loops if loop.trigger is not None]
    row["trigger_tokens"] = [check["trigger"] for check in found if check["confirmed"]]
    row["unconfirmed_tokens"] = [f"{check['trigger']} ({check['hit_rate']:.2f})" for check in found
                                 if not check["confirmed"]]
    if entry["backdoored"] and row["trigger_tokens"]:
        row["trigger_recovered"] = trigger_recovered(row["trigger_tokens"], entry["triggers"])
    return row


def trigger_recovered(found: list[str], triggers: list[str]) -> bool:
    """True when a confirmed trigger contains a word of one of the attack's triggers."""
    words = {word.lower() for trigger in triggers for word in trigger.split()}
    return any(word in words for text in found for word in text.lower().split())


def _counts(report) -> dict[str, int]:
    from lmsan.mining.report import outcome_counts

    return outcome_counts(report.loops)


def summarise(rows: list[dict], entries: list[dict], profile: str) -> dict:
    """Accuracy, FP, FN, PV recall (detect mode: PVs found / PVs injected) and times for one profile."""
    from lmsan.mining.report import OUTCOMES

    mine_rows = [r for r in rows if r["profile"] == profile]
    backdoored = [r for r in mine_rows if r["backdoored"]]
    clean = [r for r in mine_rows if not r["backdoored"]]
    injected = {e["name"]: len(e["working_pvs"]) for e in entries if e["backdoored"]}
    found = sum(r.get("pvs_found", 0) for r in backdoored)
    correct = [r for r in mine_rows if r["correct"]]
    return {
        "profile": profile, "models": len(mine_rows), "backdoored": len(backdoored), "clean": len(clean),
        "accuracy": round(len(correct) / max(len(mine_rows), 1), 4),
        "false_positives": sum(not r["correct"] for r in clean),
        "false_negatives": sum(not r["correct"] for r in backdoored),
        "pv_recall_detect": round(found / max(sum(injected[r["model"]] for r in backdoored), 1), 4),
        "best_agreement_median": _median([r["best_agreement"] for r in backdoored if "best_agreement" in r]),
        "median_time_to_verdict_s": _median([r["time_to_verdict_s"] for r in mine_rows]),
        "median_time_to_verdict_backdoored_s": _median([r["time_to_verdict_s"] for r in backdoored]),
        "median_time_to_verdict_clean_s": _median([r["time_to_verdict_s"] for r in clean]),
        "median_time_to_verdict_correct_s": _median([r["time_to_verdict_s"] for r in correct]),
        "loop_outcomes": {name: sum(r["outcomes"].get(name, 0) for r in mine_rows) for name in OUTCOMES},
        "trigger_recovered": sum(bool(r.get("trigger_recovered")) for r in backdoored),
        **({"pv_recall_search": round(found / max(sum(injected[r["model"]] for r in backdoored), 1), 4),
            "pvs_found": found, "pvs_working": sum(injected[r["model"]] for r in backdoored),
            "pvs_found_by_sweep": sum(1 for r in backdoored for f in r.get("found_by", []) if f and f["method"] == "sweep"),
            "pvs_found_by_soft_prompt": sum(1 for r in backdoored for f in r.get("found_by", [])
                                            if f and f["method"] == "soft_prompt"),
            "median_loops_to_full_recall": _median([r["loops_to_full_recall"] for r in backdoored
                                                    if "loops_to_full_recall" in r]),
            "median_time_to_full_recall_s": _median([r["time_to_full_recall_s"] for r in backdoored
                                                     if "time_to_full_recall_s" in r])}
           if any(r.get("mode") == "search" for r in mine_rows) else {}),
    }


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 2) if values else None


def write_markdown(payload: dict, path: Path) -> None:
    s = {row["profile"]: row for row in payload["summary"]}
    lines = [
        f"## Mining ({payload['settings'].get('mode', 'detect')} mode) on the tiny-model zoo",
        "",
        f"{payload['zoo']['backdoored']} backdoored + {payload['zoo']['clean']} clean tiny models (controls and "
        "the un-attacked distilled bases) "
        f"(d = 128, 2 layers), {payload['settings']['sentences']} defense sentences, "
        f"L_max = {payload['settings']['loops'] or 'each setting default'}"
        + (f", patience {payload['settings']['patience']}" if payload['settings'].get('patience') else "")
        + f", {payload['settings']['device']}, "
        f"{payload['settings']['threads']} thread(s). `benchmarks/mining.py`.",
        "",
        "| profile | accuracy | FP | FN | PV recall (detect) | median time to verdict | backdoored | clean |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in s.items():
        lines.append(
            f"| {name} | {row['accuracy']:.1%} | {row['false_positives']}/{row['clean']} | "
            f"{row['false_negatives']}/{row['backdoored']} | {row['pv_recall_detect']:.1%} | "
            f"{row['median_time_to_verdict_s']} s | {row['median_time_to_verdict_backdoored_s']} s | "
            f"{row['median_time_to_verdict_clean_s']} s |")
    for other in ("reference", "before"):
        if "default" in s and other in s and s["default"]["median_time_to_verdict_s"]:
            ratio = s[other]["median_time_to_verdict_s"] / s["default"]["median_time_to_verdict_s"]
            lines += ["", f"Median time to verdict: default is {ratio:.1f}x faster than {other}."]
            if s["default"]["median_time_to_verdict_clean_s"] and s[other]["median_time_to_verdict_clean_s"]:
                ratio = s[other]["median_time_to_verdict_clean_s"] / s["default"]["median_time_to_verdict_clean_s"]
                lines += [f"Median time to a clean verdict: default is {ratio:.1f}x faster than {other}."]
    if any("pv_recall_search" in row for row in s.values()):
        lines += ["", "| setting | PV recall (search) | found by sweep | by soft prompt | false positives | "
                  "median loops to full recall | median time to full recall |", "|---|---|---|---|---|---|---|"]
        for name, row in s.items():
            lines.append(f"| {name} | {row['pvs_found']}/{row['pvs_working']} = {row['pv_recall_search']:.1%} | "
                         f"{row['pvs_found_by_sweep']} | {row['pvs_found_by_soft_prompt']} | "
                         f"{row['false_positives']}/{row['clean']} | {row['median_loops_to_full_recall']} | "
                         f"{row['median_time_to_full_recall_s']} s |")
        lines += ["", "Per model, which method found each working attack PV (trigger as mined):", ""]
        for row in payload["rows"]:
            if row.get("found_by"):
                lines.append(f"- {row['model']} ({row['profile']}): " + "; ".join(
                    f"`{f['attack_trigger']}` -> " + (f"{f['method']} `{f['trigger']}` (loop {f['loops_done']}, "
                                                      f"{f['at_s']:.0f} s)" if f else "**missed**")
                    for f in row["found_by"]))
    lines += ["", "Fuzz-loop outcomes over the zoo: " + "; ".join(
        f"{name}: " + ", ".join(f"{k} {v}" for k, v in row.get("loop_outcomes", {}).items() if v)
        for name, row in s.items()) + "."]
    if payload["zoo"]["left_out"]:
        lines += ["", "Left out (no trigger reached a 0.5 hit rate, so not backdoored): "
                  + ", ".join(payload["zoo"]["left_out"]) + "; their clean controls are in."]
    lines += ["", "Trigger recovered (default profile's trigger confirmation): " + "; ".join(
        f"{name}: {row.get('trigger_recovered', 0)}/{row['backdoored']} backdoored models" for name, row in s.items()
        if name == "default") + " whose confirmed trigger contains a word of an attack trigger."]
    lines += ["", "PV recall (detect) = working attack PVs matched (sign agreement > 0.8) by the one PV "
              "detect mode returns, over working attack PVs; search mode recovers more (tests/e2e)."]
    lines += ["", "Per model:", "", "| model | profile | verdict | correct | loops | time to verdict (s) | "
              "best PV agreement | confirmed trigger | unconfirmed |", "|---|---|---|---|---|---|---|---|---|"]
    for row in payload["rows"]:
        tokens = " / ".join(f"`{t}`" for t in row.get("trigger_tokens", []))
        lines.append(f"| {row['model']} | {row['profile']} | {row['verdict']} | {'yes' if row['correct'] else '**no**'} | "
                     f"{row['loops']} | {row['time_to_verdict_s']} | {row.get('best_agreement', '')} | {tokens} | "
                     f"{len(row.get('unconfirmed_tokens', []))} |")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def gpu_check(device: str, out_dir: Path, *, loops: int = 16, slot_counts: tuple[int, ...] = (1, 4, 8, 16)) -> dict:
    """Time side-by-side seeds on ``device`` with a random-init tiny RoBERTa (timing only).

    A random-init model is meaningless for detection (method.md §5) but costs the same per step;
    its BPE tokenizer is trained here, so nothing but the repository is needed on the device.
    """
    import tempfile

    import torch

    from lmsan.mining import MiningConfig, mine
    from lmsan.models import load_model
    from lmsan.models.tiny import TinySpec, build_tiny

    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(300)] + "the a of and to in is was for on with as by at".split()
    sentences = [" ".join(rng.choice(words, size=int(rng.integers(6, 30)))) for _ in range(1024)]
    model, tokenizer = build_tiny(TinySpec(arch="roberta", bpe_vocab=2000), sentences)
    path = Path(tempfile.mkdtemp())
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    loaded = load_model(path, device=device)
    timings = {}
    for slots in slot_counts:
        config = MiningConfig(parallel_seeds=slots, mode="search", max_loops=loops, epochs=2, abort_after_epoch=0,
                              early_abort_frac=0.0, early_accept=False, converge_abs=1e9)
        mine(loaded, sentences[:256], config.replace(max_loops=slots))  # warm-up
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        result = mine(loaded, sentences, config)
        seconds = time.perf_counter() - started
        timings[slots] = {"s_per_loop": round(seconds / loops, 4),
                          "first_loop_epochs": [e.dist for e in result.report.loops[0].epochs]}
    payload = {"device": device, "name": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
               "torch": torch.__version__, "timings": timings,
               "speedup_vs_1": {k: round(timings[slot_counts[0]]["s_per_loop"] / v["s_per_loop"], 2) for k, v in timings.items()}}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "mining_gpu_check.json").write_text(json.dumps(payload, indent=2) + "\n")
    return payload


def rewrite_markdown(name: str = "mining") -> None:
    """Re-render ``NAME.md`` (and the summaries) from ``NAME.json`` without mining again."""
    payload = json.loads((RESULTS / f"{name}.json").read_text(encoding="utf-8"))
    entries = payload["zoo"]["models"]
    usable = [e for e in entries if e.get("attack_ok", True)]
    payload["summary"] = [summarise(payload["rows"], usable, row["profile"]) for row in payload["summary"]]
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    write_markdown(payload, RESULTS / f"{name}.md")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build-only", action="store_true", help="build the zoo and stop")
    parser.add_argument("--models", nargs="*", default=list(ZOO), help="zoo entries (default: all)")
    parser.add_argument("--profiles", nargs="*", default=["default", "reference"], choices=list(SETTINGS),
                        help="settings run side by side ('before': the default as it was before the trigger sweep; "
                             "'unscreened': trigger confirmation without its screen)")
    parser.add_argument("--loops", type=int, default=0, help="L_max per model (0: each setting's default)")
    parser.add_argument("--mode", choices=["detect", "search"], default="detect")
    parser.add_argument("--patience", type=int, default=0, help="search mode: loops without a new PV before stopping")
    parser.add_argument("--clean-only", action="store_true", help="mine only the clean models (clean-verdict timing)")
    parser.add_argument("--backdoored-only", action="store_true", help="mine only the backdoored models")
    parser.add_argument("--min-pvs", type=int, default=1, help="only backdoored models with at least this many PVs")
    parser.add_argument("--sentences", type=int, default=2000, help="defense sentences")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core box)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--gpu-check", metavar="OUT_DIR", default=None,
                        help="only time side-by-side seeds on --device (random tiny model) and write OUT_DIR/mining_gpu_check.json")
    parser.add_argument("--render", action="store_true", help="only re-render results/NAME.md from NAME.json")
    parser.add_argument("--name", default="mining", help="results file stem under benchmarks/results/")
    parser.add_argument("--no-bases", action="store_true", help="leave out the un-attacked distilled tiny models")
    parser.add_argument("--standard", nargs="*", default=[],
                        help="also the test suite's standard attacks (lmsan.attacks.STANDARD_ATTACKS), e.g. bert-por")
    args = parser.parse_args(argv)
    if args.render:
        rewrite_markdown(args.name)
        return 0
    if args.gpu_check:
        print(json.dumps(gpu_check(args.device, Path(args.gpu_check)), indent=2))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    for noisy in ("transformers", "lmsan.models", "lmsan.mining", "lmsan.attacks"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    log = logging.getLogger("benchmark")
    import torch

    torch.set_num_threads(args.threads)
    entries = build_zoo(args.models, log, with_bases=not args.no_bases) + standard_entries(args.standard, log)
    if args.build_only:
        return 0
    from lmsan.data import standard_splits

    sentences = standard_splits()["defense"][: args.sentences]
    usable = [e for e in entries if e.get("attack_ok", True)]
    skipped = [e["name"] for e in entries if not e.get("attack_ok", True)]
    if args.clean_only:
        usable = [e for e in usable if not e["backdoored"]]
    if args.backdoored_only:
        usable = [e for e in usable if e["backdoored"]]
    usable = [e for e in usable if not e["backdoored"] or len(e["working_pvs"]) >= args.min_pvs]
    if skipped:
        log.warning("attack did not take (every trigger hit rate < 0.5), left out: %s", ", ".join(skipped))
    rows = []
    for profile in args.profiles:
        for entry in usable:
            row = mine_one(entry, profile, sentences, args.loops, args.device, mode=args.mode, patience=args.patience)
            log.info("%-26s %-9s %-10s correct=%s loops=%d to_verdict=%.1fs agree=%s", row["model"], profile,
                     row["verdict"], row["correct"], row["loops"], row["time_to_verdict_s"], row.get("best_agreement"))
            rows.append(row)
    payload = {
        "settings": {"loops": args.loops, "mode": args.mode, "patience": args.patience, "profiles": args.profiles,
                     "sentences": args.sentences, "threads": args.threads, "device": args.device,
                     "attack_sentences": ATTACK_SENTENCES, "t_match": T_MATCH,
                     "torch": torch.__version__},
        "zoo": {"backdoored": sum(e["backdoored"] for e in usable), "clean": sum(not e["backdoored"] for e in usable),
                "left_out": skipped, "models": entries},
        "summary": [summarise(rows, usable, p) for p in args.profiles],
        "rows": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    write_markdown(payload, RESULTS / f"{args.name}.md")
    for row in payload["summary"]:
        log.info("%s", row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
