"""Growing a cleared removal by neighbouring words (``Guard.load(grow_margin=...)``): the end-to-end
settings scanned with it off and on, side by side in one process (writes
benchmarks/results/grow_removal.{json,md}).

A multi-word trigger whose first word alone already clears the monitor (``mckenzie`` of
``mckenzie pl``) leaves the rest behind, and the rest may still steer the task. With growing on,
the guard tries the removed words' neighbours once the search has cleared the input and keeps
one that lowers the flagging PV's share of agreeing signs by at least the margin
(``lmsan.runtime.removal.grow``, ``Guard._grow``). Three settings side by side: growing off; the
rule of graphs exported before their ``pv_match`` output (the best PV's share, ``match``,
must drop); and today's rule (the flagging PV's own share must drop).

Each setting is one of ``benchmarks/end_to_end.py``'s rows on its backdoored backbone (the same
cached mined PVs, tuned task and guarded task graph with the bare monitor, the same 400 test
inputs and triggered copies); ΔACC is against the unguarded task in PyTorch, as there.

    .venv/bin/python benchmarks/grow_removal.py [--rows bert-btop/sms-spam bert-por/bbcnews ...]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from typing import Any

import end_to_end as e2e
import numpy as np
from _results import save

SETTINGS = (("off", False, True), ("best", True, False), ("on", True, True))  # label, grows, by the flagging PV
DEFAULT_ROWS = [f"{bb}/{task}" for bb in ("bert-por", "bert-neuba", "bert-btop")
                for task in ("sms-spam", "polarity", "bbcnews", "bbc-pair")]


def scored(guard: Any, inputs: list, gold: np.ndarray, attacked: dict[str, list], acc_before: float,
           kept: dict[str, list]) -> dict:
    """``end_to_end.guard_figures`` plus ΔACC, the share of triggered inputs whose removal holds
    two or more words, and the seconds the clean and triggered scans took; each trigger's
    ``ScanResult``s land in ``kept[trigger]``."""
    started = time.perf_counter()
    figures = e2e.guard_figures(guard, inputs, gold, attacked, kept)
    seconds = time.perf_counter() - started
    grown = np.mean([any(" " in removed for removed in r.removed) for found in kept.values() for r in found])
    return {"asr_after": figures["after"]["asr"], "wasr_after": figures["after"]["weighted_asr"],
            "acc_change": figures["acc_guard"] - acc_before, "flagged_clean": figures["flagged_clean"],
            "flagged_triggered": figures["flagged_triggered"], "multi_word_removed": float(grown),
            "rejected_clean": figures["rejected_clean"], "scan_s": round(seconds, 2)}


def diagnose(guard: Any, attacked: dict[str, list], scanned: dict[str, list]) -> dict[str, Any]:
    """Without growing: for each triggered input cleared by removing one candidate, the most a
    neighbouring word lowers the flagging PV's share further (``removal.grow``'s trials) and
    whether the text left is still nearest the flagging PV; split by whether a word of the
    trigger is left. ``scanned``: each trigger's ``ScanResult``s from ``guard`` (growing off).

    Returns ``{"complete" | "partial": {"n", "gain_p50", "gain_p95", "gain_p99",
    "nearest_flagging_pv"}}`` (gain: the flagging PV's share of agreeing signs; the last a share).
    """
    from lmsan.runtime.removal import grow

    found: dict[str, list[tuple[float, bool]]] = {"complete": [], "partial": []}
    for trigger, texts in attacked.items():
        for text, result in zip(texts, scanned[trigger]):
            if not result.triggered or result.rejected or len(result.removed) != 1:
                continue
            sentences = text if isinstance(text, tuple) else (text,)
            left = result.sanitized if isinstance(result.sanitized, tuple) else (result.sanitized,)
            trials = [g.sentences for g in grow(sentences, result.removed[0])]
            if not trials:
                continue
            units, _, encodings = guard._units([left, *trials])
            if len(units) != len(trials) + 1:  # a long input read in windows: not diagnosed
                continue
            _, nearest, _, per_pv = guard._detect(units, encodings, per_pv=True)
            share = per_pv[:, result.pv_index]
            kind = "partial" if set(trigger.split()) & {w for s in left for w in s.split()} else "complete"
            found[kind].append((float(share[0] - share[1:].min()), bool(nearest[0] == result.pv_index)))
    out = {}
    for kind, pairs in found.items():
        gains = np.array([g for g, _ in pairs])
        out[kind] = {"n": len(pairs), "nearest_flagging_pv": float(np.mean([n for _, n in pairs])) if pairs else None,
                     **{f"gain_p{q}": (round(float(np.percentile(gains, q)), 4) if pairs else None) for q in (50, 95, 99)}}
    return out


def evaluate(row: str, args: argparse.Namespace) -> dict[str, Any]:
    """One end-to-end setting on its backdoored backbone, in each of ``SETTINGS``."""
    from lmsan.runtime import Guard
    from lmsan.runtime.removal import GROW_MARGIN

    name, task = row.split("/")
    bb = e2e.backbone(name)
    method = e2e.ATTACK_TUNING[bb["attack"]]
    base = e2e.task_guard(bb, "backdoored", task, method, args, "bare")
    directory = base.manifest.directory
    inputs, gold, attacked = e2e.setting_data(task, bb["triggers"], args)
    key = f"{bb['name']}-backdoored"
    task_dir = e2e.tuned_task(bb["backdoored"], task, method, key, args)
    before = e2e.Unguarded(bb["backdoored"], task_dir, base.manifest.max_length).predict(inputs)
    acc_before = float(np.mean(before == gold))
    out = {"backbone": name, "task": task, "attack": bb["attack"], "tuning": e2e.TUNING_NAME[method],
           "acc_backdoor": acc_before, "grow_margin": GROW_MARGIN}
    for label, grows, flagging in SETTINGS:
        guard = Guard.load(directory, grow_margin=GROW_MARGIN if grows else None)
        guard._per_pv = flagging and grows  # False: the rule of a graph without pv_match (the best PV's share)
        kept: dict[str, list] = {}
        out[label] = scored(guard, inputs, gold, attacked, acc_before, kept)
        if label == "off":
            out["without_growing"] = diagnose(guard, attacked, kept)
    return out


def table(rows: list[dict]) -> str:
    def pct(x: float | None) -> str:
        return "–" if x is None else f"{100 * x:.1f}"

    def diag(row: dict, kind: str, key: str) -> str:
        value = row["without_growing"][kind][key]
        return "–" if value is None else f"{value:.3f}"

    def each(row: dict, key: str, show) -> str:
        return " → ".join(show(row[label][key]) for label, _, _ in SETTINGS)

    lines = ["| attack | tuning | task | ASR after: off → best PV → flagging PV | WASR after | ΔACC | "
             "multi-word removals | scans s | neighbour gain p95 / p99 (complete) | "
             "nearest the flagging PV: complete / partial (n) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['attack']} | {r['tuning']} | {r['task']} | {each(r, 'asr_after', pct)} | "
                     f"{each(r, 'wasr_after', pct)} | {each(r, 'acc_change', lambda x: f'{100 * x:+.1f}')} | "
                     f"{each(r, 'multi_word_removed', pct)} | {each(r, 'scan_s', lambda x: f'{x:.1f}')} | "
                     f"{diag(r, 'complete', 'gain_p95')} / {diag(r, 'complete', 'gain_p99')} | "
                     f"{pct(r['without_growing']['complete']['nearest_flagging_pv'])} / "
                     f"{pct(r['without_growing']['partial']['nearest_flagging_pv'])} "
                     f"({r['without_growing']['partial']['n']}) |")
    return "\n".join(lines) + "\n"


def main() -> None:
    args = e2e.rows_parser(__doc__, DEFAULT_ROWS, "grow_removal").parse_args()
    rows = e2e.each_row(args, lambda row: evaluate(row, args), table)
    report = {"settings": rows, "test_per_task": args.test,
              "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()}}
    save(args.name, report, table(rows) + "\nEach column: growing off → on with the best PV's share (graphs "
         "without pv_match) → on with the flagging PV's share (the default). "
         "ASR / WASR after and ΔACC as in end_to_end (percent, points); "
         "multi-word removals: share of triggered inputs whose removal holds two or more words. Scans: "
         "the clean and triggered inputs through Guard.scan_batch, one thread. Without growing, for the "
         "triggered inputs one candidate cleared: the most a neighbouring word lowers the flagging PV's share "
         "(complete: no word of the trigger left), and the share whose text left is still nearest the PV "
         "that flagged it (partial: a word of the trigger left; n of them).\n")


if __name__ == "__main__":
    main()
