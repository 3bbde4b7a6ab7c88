"""Growing into accomplices, side by side (writes benchmarks/results/accomplices.{json,md}).

A cleared removal grows by a neighbouring word (``Guard._grow``). Before session 19 it grew only
while the text left was still nearest the flagging PV and the word lowered that PV's share by
``grow_margin`` (the margin rule). Today it also takes a neighbour that the guard flags on its
own, on the same PV (an accomplice: the rest of a multi-word trigger, such as ``pl`` of BToP's
``mckenzie pl`` or ``agenda`` / ``purs`` of RoBERTa POR's ``agenda fastest purs``, whose text
left after the first word is often nearest another PV). Here each setting's task guard (the
cached backdoored backbone, mined PVs, tuned task and guarded task graph with the bare monitor:
``benchmarks/end_to_end.py``'s main columns) is loaded twice, with the margin rule alone and
with both rules, and scans the same 400 test inputs and their triggered copies, in one process.

    .venv/bin/python benchmarks/accomplices.py [--rows bert-btop/bbcnews roberta-por/sms-spam ...] [--merge]
"""

from __future__ import annotations

import time
from typing import Any

import end_to_end as e2e
import numpy as np

TINY = [f"{bb}/{task}" for bb in ("bert-por", "bert-neuba", "bert-btop", "roberta-por")
        for task in ("sms-spam", "polarity", "bbcnews", "bbc-pair")]
VARIANTS = ("margin", "accomplices")  # the margin rule alone (before); both rules (the default)
NOTE = ("\nPercent; ΔACC in points (guarded minus unguarded accuracy on the "
        "clean test inputs of the backdoored backbone). Each column: margin rule alone (before) → margin and "
        "accomplice rules (the default). Triggered removals of 2+ words: share of the triggered inputs flagged and "
        "not rejected whose removal holds two or more words. Scans: the clean and triggered inputs through "
        "Guard.scan_batch, one thread.\n")  # printed under the table


def margin_only(guard: Any) -> Any:
    """``guard`` growing by the margin rule alone: no neighbour counts as an accomplice."""
    guard._accomplices = lambda growths, *_: {u: set() for u in growths}
    return guard


def evaluate(row: str, args: Any) -> dict[str, Any]:
    from lmsan.runtime import Guard

    name, task = row.split("/")
    bb = e2e.backbone(name)
    method = e2e.ATTACK_TUNING[bb["attack"]]
    default = e2e.task_guard(bb, "backdoored", task, method, args, "bare")
    guards = {"margin": margin_only(Guard.load(default.manifest.directory)), "accomplices": default}
    inputs, gold, attacked = e2e.setting_data(task, bb["triggers"], args)
    task_dir = e2e.tuned_task(bb["backdoored"], task, method, f"{name}-backdoored", args)
    before = e2e.Unguarded(bb["backdoored"], task_dir, default.manifest.max_length).predict(inputs)
    acc_before = float(np.mean(before == gold))
    out: dict[str, Any] = {"backbone": name, "task": task, "attack": bb["attack"], "n": len(inputs),
                           "acc_before": acc_before}
    for variant, guard in guards.items():
        kept: dict[str, list] = {}
        started = time.perf_counter()
        figures = e2e.guard_figures(guard, inputs, gold, attacked, kept)
        removals = [r.removed for found in kept.values() for r in found if r.triggered and not r.rejected]
        out[variant] = {
            "asr_after": figures["after"]["asr"], "wasr_after": figures["after"]["weighted_asr"],
            "acc_change": figures["acc_guard"] - acc_before, "flagged_clean": figures["flagged_clean"],
            "rejected_clean": figures["rejected_clean"],
            "multi_word_removed": float(np.mean([any(" " in words for words in r) for r in removals])),
            "scan_s": round(time.perf_counter() - started, 2),
        }
    return out


def table(rows: list[dict[str, Any]]) -> str:
    def each(row: dict, key: str, show) -> str:
        return " → ".join(show(row[variant][key]) for variant in VARIANTS)

    def pct(value: float) -> str:
        return f"{100 * value:.1f}"

    lines = ["| backbone | task | ASR after | WASR after | ΔACC | triggered removals of 2+ words | scans s |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['backbone']} | {r['task']} | {each(r, 'asr_after', pct)} | {each(r, 'wasr_after', pct)} | "
                     f"{each(r, 'acc_change', lambda x: f'{100 * x:+.1f}')} | {each(r, 'multi_word_removed', pct)} | "
                     f"{each(r, 'scan_s', lambda x: f'{x:.1f}')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    e2e.rows_main(__doc__, TINY, "accomplices", evaluate, table, NOTE)


if __name__ == "__main__":
    main()
