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


def multi_word(kept: dict[str, list]) -> dict[str, float]:
    """Share of the triggered inputs flagged and not rejected whose removal holds 2+ words."""
    removals = [r.removed for found in kept.values() for r in found if r.triggered and not r.rejected]
    return {"multi_word_removed": float(np.mean([any(" " in words for words in r) for r in removals]))}


def evaluate(row: str, args: Any) -> dict[str, Any]:
    from lmsan.runtime import Guard

    return e2e.side_by_side(row, args, {"margin": lambda d: margin_only(Guard.load(d)), "accomplices": Guard.load},
                            multi_word)


def table(rows: list[dict[str, Any]]) -> str:
    return e2e.side_by_side_table(rows, VARIANTS, e2e.SIDE_BY_SIDE + [
        ("triggered removals of 2+ words", "multi_word_removed", e2e.pct), ("scans s", "scan_s", lambda x: f"{x:.1f}")])


def main() -> None:
    e2e.rows_main(__doc__, TINY, "accomplices", evaluate, table, NOTE)


if __name__ == "__main__":
    main()
