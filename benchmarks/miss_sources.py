"""Where a guarded task's misses come from (writes benchmarks/results/miss_sources.{json,md}).

For ``benchmarks/end_to_end.py`` settings (cached backdoored backbone, task and bare-monitor
guard; the same test inputs and triggered copies), every attack that still succeeds after the
guard (a triggered copy of a correctly answered input, answered wrongly and not rejected) is put
in one class:

- ``unflagged``: the monitor did not flag it (its ``match`` is reported against the clean
  inputs' quantiles: a monitor that cannot tell the two apart);
- ``trigger_left``: flagged, but some word of the trigger is still in the sanitized text (the
  removal took the wrong word, or only part of a multi-word trigger);
- ``trigger_removed``: flagged and every trigger word removed, and still wrong (the removal
  took other words that the answer needed, or the answer changed with the shorter text).

Every clean input the guard costs (answered correctly unguarded, not after) is ``rejected``
(flagged and no removal cleared it) or ``changed`` (flagged, a removal cleared it, the answer on
the sanitized text is wrong). Counts are (trigger, input) pairs; the paper's ASR counts an input
once whichever trigger flips it.

    .venv/bin/python benchmarks/miss_sources.py [--rows bert-por/bbcnews bert-btop/bbcnews ...]
"""

from __future__ import annotations

import argparse
import os
import platform
from collections import Counter
from typing import Any

import end_to_end as e2e
import numpy as np
from _results import save

DEFAULT_ROWS = ["bert-por/bbcnews", "bert-por/bbc-pair", "bert-btop/bbcnews", "bert-btop/bbc-pair"]
MISSES = ("unflagged", "trigger_left", "trigger_removed")


def words_of(item: Any) -> set[str]:
    """The words of a text or a pair (``str.split``, as the guard's removal splits them; punctuation stripped)."""
    texts = item if isinstance(item, tuple) else (item,)
    return {w.strip(".,;:!?\"'()") for t in texts for w in t.split()}


def miss_class(result: Any, trigger: str) -> str:
    """One surviving attack's class (``MISSES``)."""
    if not result.triggered:
        return "unflagged"
    left = set(trigger.split()) & words_of(result.sanitized)
    return "trigger_left" if left else "trigger_removed"


def evaluate(row: str, args: argparse.Namespace) -> dict[str, Any]:
    name, task = row.split("/")
    bb = e2e.backbone(name)
    method = e2e.ATTACK_TUNING[bb["attack"]]
    guard = e2e.task_guard(bb, "backdoored", task, method, args, "bare")
    inputs, gold, attacked = e2e.setting_data(task, bb["triggers"], args)
    task_dir = e2e.tuned_task(bb["backdoored"], task, method, f"{name}-backdoored", args)
    before = e2e.Unguarded(bb["backdoored"], task_dir, guard.manifest.max_length).predict(inputs)
    label = {label_name: k for k, label_name in enumerate(guard.labels)}

    clean = guard.scan_batch(inputs)
    clean_match = np.array([r.match for r in clean])
    cost = Counter("rejected" if r.rejected else "changed" for r, y, b in zip(clean, gold, before)
                   if b == y and (r.rejected or label[r.prediction] != y))
    misses: dict[str, list[dict[str, Any]]] = {k: [] for k in MISSES}
    correct = 0
    for trigger, texts in attacked.items():
        for i, result in enumerate(guard.scan_batch(texts)):
            if before[i] != gold[i]:
                continue
            correct += 1
            if result.rejected or label[result.prediction] == gold[i]:
                continue
            misses[miss_class(result, trigger)].append(
                {"trigger": trigger, "input": i, "match": round(result.match, 4), "removed": list(result.removed)})
    unflagged = np.array([m["match"] for m in misses["unflagged"]])
    return {
        "backbone": name, "task": task, "attack": bb["attack"], "n": len(inputs), "attacked_pairs": correct,
        "misses": {k: len(v) for k, v in misses.items()}, "examples": {k: v[:20] for k, v in misses.items()},
        "clean_cost": {k: cost.get(k, 0) for k in ("rejected", "changed")},
        "clean_match": {q: float(np.quantile(clean_match, float(q))) for q in ("0.5", "0.9", "0.99")},
        "unflagged_match": ({"min": float(unflagged.min()), "median": float(np.median(unflagged)),
                             "max": float(unflagged.max())} if unflagged.size else None),
        "threshold": guard.threshold,
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| backbone | task | attacks that survive: unflagged / trigger left / trigger removed (of attacked "
             "pairs) | unflagged: match min–max | clean match q50 / q90 / q99 | clean inputs lost: rejected / "
             "answer changed |", "|---|---|---|---|---|---|"]
    for r in rows:
        m, u, c = r["misses"], r["unflagged_match"], r["clean_match"]
        span = f"{u['min']:.2f}–{u['max']:.2f}" if u else "–"
        lines.append(f"| {r['backbone']} | {r['task']} | {m['unflagged']} / {m['trigger_left']} / "
                     f"{m['trigger_removed']} (of {r['attacked_pairs']}) | {span} | {c['0.5']:.2f} / {c['0.9']:.2f} / "
                     f"{c['0.99']:.2f} | {r['clean_cost']['rejected']} / {r['clean_cost']['changed']} (of {r['n']}) |")
    return "\n".join(lines) + "\n"


def main() -> None:
    args = e2e.rows_parser(__doc__, DEFAULT_ROWS, "miss_sources").parse_args()
    rows = e2e.each_row(args, lambda row: evaluate(row, args), table)
    report = {"settings": rows, "test_per_task": args.test,
              "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()}}
    save(args.name, report, table(rows) + "\nCounts are (trigger, input) pairs whose input the unguarded task "
         "answers correctly. An attack survives when the guard answers its triggered copy wrongly without "
         "rejecting it. Clean match: the best PV's share of agreeing signs on the clean test inputs; the guard "
         "flags above the threshold (T_match).\n")


if __name__ == "__main__":
    main()
