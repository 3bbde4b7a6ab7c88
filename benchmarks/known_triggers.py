"""Known triggers on or off, side by side (writes benchmarks/results/known_triggers.{json,md}).

For ``benchmarks/end_to_end.py`` settings (the cached backdoored backbone, its mined PV set, the
tuned task and its task guard with the bare monitor: the main columns), the same guard directory
is loaded twice: with its known triggers (``Guard.load(known_triggers=True)``, the default: the
mined PVs' confirmed trigger spans are removed wherever they occur, ``lmsan.runtime.known``) and
without them (the feature monitor alone). Both scan the same test inputs and triggered copies.
Reported per setting, off → on: ASR and WASR after the guard, the clean accuracy change against
the unguarded task, the clean and triggered inputs in which a known trigger was found, and the
seconds to scan the clean inputs (best of three, the two guards alternating in one process).

    .venv/bin/python benchmarks/known_triggers.py [--rows bert-por/bbcnews minilm-por/sms-spam ...] [--merge]
"""

from __future__ import annotations

import time
from typing import Any

import end_to_end as e2e
import numpy as np

TINY = [f"bert-{attack}/{task}" for attack in ("por", "neuba", "btop")
        for task in ("sms-spam", "polarity", "bbcnews", "bbc-pair")]
REPEATS = 3  # clean-scan timings per guard, alternating
NOTE = ("\nPercent; ΔACC in points (guarded minus unguarded accuracy on the "
        "clean test inputs of the backdoored backbone). off → on: the same task guard (bare monitor) loaded "
        "without and with its known triggers. Clean / triggered inputs holding one: share of results with "
        "known_triggers (with the guard on; for triggered inputs, one left after the feature removal, or an "
        "input the features did not flag). Clean scan s: best of three scans of the clean test inputs, the two "
        "guards alternating in one process.\n")  # printed under the table


def scan_seconds(guards: dict[str, Any], inputs: list) -> dict[str, float]:
    """Best of ``REPEATS`` wall-clock seconds to scan ``inputs`` with each guard, alternating."""
    best = {name: float("inf") for name in guards}
    for _ in range(REPEATS):
        for name, guard in guards.items():
            started = time.perf_counter()
            guard.scan_batch(inputs)
            best[name] = min(best[name], time.perf_counter() - started)
    return best


def evaluate(row: str, args: Any) -> dict[str, Any]:
    from lmsan.runtime import Guard
    from lmsan.runtime.known import names

    name, task = row.split("/")
    bb = e2e.backbone(name)
    method = e2e.ATTACK_TUNING[bb["attack"]]
    on = e2e.task_guard(bb, "backdoored", task, method, args, "bare")
    guards = {"off": Guard.load(on.manifest.directory, known_triggers=False), "on": on}
    inputs, gold, attacked = e2e.setting_data(task, bb["triggers"], args)
    task_dir = e2e.tuned_task(bb["backdoored"], task, method, f"{name}-backdoored", args)
    before = e2e.Unguarded(bb["backdoored"], task_dir, on.manifest.max_length).predict(inputs)
    acc_before = float(np.mean(before == gold))
    out: dict[str, Any] = {"backbone": name, "task": task, "attack": bb["attack"], "n": len(inputs),
                           "known_triggers": list(names(on.known.spans)), "acc_before": acc_before}
    for variant, guard in guards.items():
        kept: dict[str, list] = {}
        figures = e2e.guard_figures(guard, inputs, gold, attacked, kept)
        clean = guard.scan_batch(inputs)
        out[variant] = {
            "asr_after": figures["after"]["asr"], "wasr_after": figures["after"]["weighted_asr"],
            "acc_change": figures["acc_guard"] - acc_before,
            "flagged_clean": figures["flagged_clean"], "flagged_triggered": figures["flagged_triggered"],
            "known_clean": float(np.mean([bool(r.known_triggers) for r in clean])),
            "known_triggered": float(np.mean([bool(r.known_triggers) for rs in kept.values() for r in rs])),
        }
    seconds = scan_seconds(guards, inputs)
    for variant in guards:
        out[variant]["clean_scan_s"] = round(seconds[variant], 4)
    return out


def table(rows: list[dict[str, Any]]) -> str:
    def pct(value: float) -> str:
        return f"{100 * value:.1f}"

    def delta(value: float) -> str:
        return f"{100 * value:+.1f}"

    lines = ["| backbone | task | known triggers | ASR after | WASR after | ΔACC | clean inputs holding one | "
             "triggered inputs holding one after removal | clean scan s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        off, on = r["off"], r["on"]
        lines.append(f"| {r['backbone']} | {r['task']} | {len(r['known_triggers'])} | "
                     f"{pct(off['asr_after'])} → {pct(on['asr_after'])} | "
                     f"{pct(off['wasr_after'])} → {pct(on['wasr_after'])} | "
                     f"{delta(off['acc_change'])} → {delta(on['acc_change'])} | {pct(on['known_clean'])} | "
                     f"{pct(on['known_triggered'])} | {off['clean_scan_s']:.2f} → {on['clean_scan_s']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    e2e.rows_main(__doc__, TINY, "known_triggers", evaluate, table, NOTE)


if __name__ == "__main__":
    main()
