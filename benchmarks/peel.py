"""Peeling an input that no window clears, side by side (writes benchmarks/results/peel.{json,md}).

The removal search (method.md §4) tries windows of up to ``max_window`` consecutive words; an
input that none of them clears used to be rejected. Where the flag comes from two or more
separate words (two triggers, or a trigger and the topic words that a collateral PV pulls), the
guard now peels it instead: it removes the word whose removal lowers the flagging PV's share
most (grown into the neighbours that the guard flags alone on that PV), and cleans the text left
like any input, up to ``max_window - 1`` peeled words (``Guard._peel``); growing likewise takes
an accomplice whose text another PV flags, and cleans that text (``Guard._grow``). Here each setting's task
guard (``benchmarks/end_to_end.py``'s main columns: the cached backdoored backbone, mined PVs,
tuned task and guarded task graph with the bare monitor) is loaded twice, rejecting
(``peel=False``: it also grows only into cleared texts) and peeling (the default), and scans the
same 400 test inputs and their triggered copies, in one process. A rejected clean input counts
as wrong and a rejected triggered one as blocked.

    .venv/bin/python benchmarks/peel.py [--rows bert-por/bbcnews minilm-por/bbcnews ...] [--merge]
"""

from __future__ import annotations

from typing import Any

import end_to_end as e2e

TINY = [f"{bb}/{task}" for bb in ("bert-por", "bert-neuba", "bert-btop", "roberta-por")
        for task in ("sms-spam", "polarity", "bbcnews", "bbc-pair")]
VARIANTS = ("reject", "peel")  # no clearing window: rejected (before); peeled (the default)
NOTE = ("\nPercent; ΔACC in points (guarded minus unguarded accuracy on the clean test inputs of the backdoored "
        "backbone). Each column: rejecting an input that no window of up to 3 words clears (before) → peeling it "
        "(the default). Rejected: share of the clean inputs, and of the triggered copies, that the guard rejects. "
        "Scans: the clean and triggered inputs through Guard.scan_batch, one thread.\n")  # printed under the table


def evaluate(row: str, args: Any) -> dict[str, Any]:
    from lmsan.runtime import Guard

    return e2e.side_by_side(row, args, {"reject": lambda d: Guard.load(d, peel=False), "peel": Guard.load})


def table(rows: list[dict[str, Any]]) -> str:
    return e2e.side_by_side_table(rows, VARIANTS, e2e.SIDE_BY_SIDE + [
        ("rejected clean", "rejected_clean", e2e.pct), ("rejected triggered", "rejected_triggered", e2e.pct),
        ("scans s", "scan_s", lambda x: f"{x:.1f}")])


def main() -> None:
    e2e.rows_main(__doc__, TINY, "peel", evaluate, table, NOTE)


if __name__ == "__main__":
    main()
