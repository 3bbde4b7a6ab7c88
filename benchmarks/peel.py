"""Peeling an input that no window clears, side by side (writes benchmarks/results/peel.{json,md}).

The removal search (method.md §4) tries windows of up to ``max_window`` consecutive words; an
input that none of them clears used to be rejected. Where the flag comes from two or more
separate words (two triggers, or a trigger and the topic words that a collateral PV pulls), the
guard now peels it instead: it removes the word whose removal lowers the flagging PV's share
most (grown into the neighbours that the guard flags alone on that PV), and cleans the text left
like any input, up to ``max_window - 1`` peeled words (``Guard._peel``). Here each setting's task
guard (``benchmarks/end_to_end.py``'s main columns: the cached backdoored backbone, mined PVs,
tuned task and guarded task graph with the bare monitor) is loaded twice, rejecting
(``peel=False``) and peeling (the default), in one process: the rejecting guard scans the 400
test inputs and their triggered copies, and the peeling guard scans again the inputs that it
rejected because no window cleared them (``PeelingRejected``). A rejected clean input counts as
wrong and a rejected triggered one as blocked, so peeling can only raise clean accuracy, and
raises ASR after wherever it answers a triggered input wrongly.

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
        "Scans: the clean and triggered inputs through Guard.scan_batch with the rejecting guard, then the inputs "
        "it rejected because no window cleared them again with the peeling guard (peeling changes no other "
        "result), one thread.\n")  # printed under the table


class Recording:
    """A guard whose ``scan_batch`` results are kept, per input, in ``seen``."""

    def __init__(self, guard: Any) -> None:
        self.guard, self.seen = guard, {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.guard, name)

    def scan_batch(self, values: list, sanitize: bool = True) -> list:
        results = self.guard.scan_batch(values, sanitize=sanitize)
        self.seen.update(zip(values, results))
        return results


class PeelingRejected:
    """The peeling guard's results, from the rejecting guard's: peeling changes nothing but the
    inputs that the rejecting guard rejects because no window clears them (in its removal search,
    or in its scan of the text that known triggers left), so only those are scanned again, by
    the peeling guard. The same results as the peeling guard scanning every input (checked on the
    16 tiny settings), in a fraction of the time."""

    def __init__(self, rejecting: Recording, peeling: Any) -> None:
        self.rejecting, self.peeling = rejecting, peeling
        self.labels, self.manifest = peeling.labels, peeling.manifest

    def scan_batch(self, values: list, sanitize: bool = True) -> list:
        results = [self.rejecting.seen[v] for v in values]
        again = [i for i, r in enumerate(results) if r.rejected and r.reason.startswith("no candidate")]
        for i, result in zip(again, self.peeling.scan_batch([values[i] for i in again]) if again else []):
            results[i] = result
        return results


def evaluate(row: str, args: Any) -> dict[str, Any]:
    from lmsan.runtime import Guard

    loaded: dict[str, Recording] = {}

    def rejecting(directory: Any) -> Recording:
        loaded["rejecting"] = Recording(Guard.load(directory, peel=False))
        return loaded["rejecting"]

    return e2e.side_by_side(row, args, {  # loaded in this order
        "reject": rejecting, "peel": lambda directory: PeelingRejected(loaded["rejecting"], Guard.load(directory))})


def table(rows: list[dict[str, Any]]) -> str:
    return e2e.side_by_side_table(rows, VARIANTS, e2e.SIDE_BY_SIDE + [
        ("rejected clean", "rejected_clean", e2e.pct), ("rejected triggered", "rejected_triggered", e2e.pct),
        ("scans s: all → the rejected again, peeling", "scan_s", lambda x: f"{x:.1f}")])


def main() -> None:
    e2e.rows_main(__doc__, TINY, "peel", evaluate, table, NOTE)


if __name__ == "__main__":
    main()
