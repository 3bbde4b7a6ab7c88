"""Per-PV thresholds calibrated on clean inputs (``lmsan-calibrate``), against the uncalibrated
guard, side by side in one process (writes benchmarks/results/calibration.{json,md}).

Each setting is one of ``benchmarks/end_to_end.py``'s rows on its backdoored backbone: the same
cached mined PVs, tuned task and guarded task graph (bare monitor), the same 400 test inputs and
their triggered copies. The calibration set is the task's clean training split, the data the
task's prompt was tuned on (disjoint from the test inputs): what a service owner has at hand. A
copy of the guard directory is calibrated with ``lmsan.runtime.calibrate`` at each quantile (cap
``--cap``) and scanned as ``end_to_end`` scans; ΔACC is against the unguarded task in PyTorch.

    .venv/bin/python benchmarks/calibration.py [--rows bert-por/bbcnews minilm-por/bbcnews ...] [--quantiles 0.99 0.995]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import end_to_end as e2e
import numpy as np
from _results import save

DEFAULT_ROWS = [f"{bb}/{task}" for bb in ("bert-por", "bert-neuba", "bert-btop")
                for task in ("sms-spam", "polarity", "bbcnews", "bbc-pair")]


def figures(guard: Any, inputs: list, gold: np.ndarray, attacked: dict[str, list], acc_before: float) -> dict:
    """``end_to_end.guard_figures`` as fractions: ASR / WASR after, ΔACC, flagged and rejected shares."""
    started = time.perf_counter()
    found = e2e.guard_figures(guard, inputs, gold, attacked)
    return {"asr_after": found["after"]["asr"], "wasr_after": found["after"]["weighted_asr"],
            "acc_change": found["acc_guard"] - acc_before, "flagged_clean": found["flagged_clean"],
            "flagged_triggered": found["flagged_triggered"], "rejected_clean": found["rejected_clean"],
            "scan_s": round(time.perf_counter() - started, 2)}


def evaluate(row: str, args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    """One end-to-end setting: uncalibrated, then calibrated at each of ``args.quantiles``."""
    from lmsan.runtime import Guard, calibrate, write_calibration
    from lmsan.tuning.tasks import task_data

    name, task = row.split("/")
    bb = e2e.backbone(name)
    method = e2e.ATTACK_TUNING[bb["attack"]]
    directory = e2e.task_guard(bb, "backdoored", task, method, args, "bare").manifest.directory
    inputs, gold, attacked = e2e.setting_data(task, bb["triggers"], args)
    task_dir = e2e.tuned_task(bb["backdoored"], task, method, f"{bb['name']}-backdoored", args)
    base = Guard.load(directory)
    acc_before = float(np.mean(e2e.Unguarded(bb["backdoored"], task_dir, base.manifest.max_length).predict(inputs) == gold))
    train = task_data(task, test_size=args.test, seed=0).train
    clean = list(zip(train.texts, train.text_pairs)) if train.text_pairs else list(train.texts)
    out = {"backbone": name, "model": bb["model"], "task": task, "attack": bb["attack"], "tuning": e2e.TUNING_NAME[method],
           "acc_backdoor": acc_before, "calibration_inputs": len(clean), "cap": args.cap, "threshold": base.threshold,
           "uncalibrated": figures(base, inputs, gold, attacked, acc_before), "calibrated": {}}
    for quantile in args.quantiles:
        copy = shutil.copytree(directory, scratch / f"{name}-{task}-{quantile}")
        found = calibrate(Guard.load(copy), clean, quantile=quantile, cap=args.cap)
        write_calibration(copy, found)
        out["calibrated"][str(quantile)] = {**figures(Guard.load(copy), inputs, gold, attacked, acc_before),
                                            "pv_thresholds": list(found.pv_thresholds), "capped": list(found.capped),
                                            "calibration_flagged_before": found.flagged_before,
                                            "calibration_flagged_after": found.flagged_after}
    return out


def table(rows: list[dict], quantiles: list[float]) -> str:
    def each(row: dict, key: str, show) -> str:
        values = [row["uncalibrated"][key]] + [row["calibrated"][str(q)][key] for q in quantiles]
        return " → ".join(show(v) for v in values)

    def pct(x: float) -> str:
        return f"{100 * x:.1f}"

    lines = [f"| attack | tuning | task | model | ASR after: T_match → q {' → q '.join(map(str, quantiles))} | WASR after | "
             "ΔACC | flagged clean | flagged triggered | rejected clean | PVs raised / at the cap |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        last = r["calibrated"][str(quantiles[-1])]
        raised = sum(t > r["threshold"] for t in last["pv_thresholds"])
        lines.append(f"| {r['attack']} | {r['tuning']} | {r['task']} | {r['model']} | "
                     f"{each(r, 'asr_after', pct)} | "
                     f"{each(r, 'wasr_after', pct)} | {each(r, 'acc_change', lambda x: f'{100 * x:+.1f}')} | "
                     f"{each(r, 'flagged_clean', pct)} | {each(r, 'flagged_triggered', pct)} | "
                     f"{each(r, 'rejected_clean', pct)} | {raised} / {len(last['capped'])} of "
                     f"{len(last['pv_thresholds'])} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = e2e.rows_parser(__doc__, DEFAULT_ROWS, "calibration")
    parser.add_argument("--quantiles", nargs="+", type=float, default=[0.99, 0.995])
    parser.add_argument("--cap", type=float, default=0.9)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lmsan-calibration-") as scratch:
        rows = e2e.each_row(args, lambda row: evaluate(row, args, Path(scratch)),
                            lambda done: table(done, args.quantiles))
    report = {"settings": rows, "quantiles": args.quantiles, "cap": args.cap, "test_per_task": args.test,
              "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()}}
    save(args.name, report, table(rows, args.quantiles) + "\nEach column: the guard at T_match (0.8) alone → "
         "calibrated on the task's clean training split at each quantile (cap "
         f"{args.cap}). ASR / WASR after and ΔACC as in end_to_end (percent, points); flagged: share of clean / "
         "triggered test inputs the monitor flags; rejected clean: share of clean test inputs the guard rejects. "
         "PVs raised: thresholds above T_match at the last quantile; at the cap: PVs whose clean quantile reached "
         "the cap.\n")


if __name__ == "__main__":
    main()
