"""``MicroBatcher`` without HTTP: merging, the batch cap, per-request isolation, bound and shutdown.

The scan function is a plain one that records each call (the batcher takes any
``scan(values, sanitize=...)``); the HTTP tests in ``test_serve.py`` use the real guard.
"""

from __future__ import annotations

import threading
import time

import pytest

from lmsan.errors import InputError
from lmsan.serve import Closed, MicroBatcher, QueueFull


class Recorder:
    """``scan``: upper-cases each value, records every call; optionally waits for ``gate``."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.calls: list[tuple[list, bool]] = []
        self.gate, self.entered = gate, threading.Event()

    def __call__(self, values, *, sanitize):
        self.calls.append((list(values), sanitize))
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(10)
        for i, value in enumerate(values):
            if value == "":
                raise InputError("empty text", index=i)
        return [(value.upper(), sanitize) for value in values]


def test_concurrent_requests_merge_into_one_call_and_keep_their_order():
    scan = Recorder()
    batcher = MicroBatcher(scan, max_batch=64, max_wait_ms=200)
    futures = [batcher.submit([f"r{r}-{i}" for i in range(r + 1)]) for r in range(6)]  # 21 inputs
    results = [f.result(5) for f in futures]
    assert batcher.close(5)
    assert results == [[(f"R{r}-{i}", True) for i in range(r + 1)] for r in range(6)]
    assert len(scan.calls) == 1 and len(scan.calls[0][0]) == 21


def test_max_batch_splits_a_request_across_calls():
    scan = Recorder()
    batcher = MicroBatcher(scan, max_batch=4, max_wait_ms=50)
    assert batcher.submit(list("abcdefghij")).result(5) == [(c.upper(), True) for c in "abcdefghij"]
    batcher.close(5)
    assert [len(values) for values, _ in scan.calls] == [4, 4, 2]


def test_without_batching_each_call_scans_one_request():
    gate = threading.Event()
    scan = Recorder(gate)
    batcher = MicroBatcher(scan, max_batch=64, max_wait_ms=50, batching=False)
    futures = [batcher.submit(["a", "b"]), batcher.submit(["c"]), batcher.submit(["d", "e", "f"])]
    gate.set()
    assert [f.result(5) for f in futures] == [[("A", True), ("B", True)], [("C", True)],
                                              [("D", True), ("E", True), ("F", True)]]
    batcher.close(5)
    assert [values for values, _ in scan.calls] == [["a", "b"], ["c"], ["d", "e", "f"]]


def test_sanitize_flags_are_scanned_in_separate_calls():
    scan = Recorder()
    batcher = MicroBatcher(scan, max_wait_ms=100)
    one, two = batcher.submit(["x"], sanitize=False), batcher.submit(["y"], sanitize=True)
    assert one.result(5) == [("X", False)] and two.result(5) == [("Y", True)]
    batcher.close(5)
    assert sorted((values, flag) for values, flag in scan.calls) == [(["x"], False), (["y"], True)]


def test_an_input_error_fails_only_its_request():
    scan = Recorder()
    batcher = MicroBatcher(scan, max_wait_ms=100)
    good, bad, other = batcher.submit(["a"]), batcher.submit(["b", ""]), batcher.submit(["c", "d"])
    with pytest.raises(InputError) as info:
        bad.result(5)
    assert info.value.index == 1 and info.value.reason == "empty text"  # its index in its own request
    assert good.result(5) == [("A", True)] and other.result(5) == [("C", True), ("D", True)]
    batcher.close(5)
    assert [values for values, _ in scan.calls] == [["a", "b", "", "c", "d"], ["a", "c", "d"]]


def test_an_unexpected_error_fails_the_requests_of_that_batch():
    def broken(values, *, sanitize):
        raise RuntimeError("session died")

    batcher = MicroBatcher(broken, max_wait_ms=50)
    futures = [batcher.submit(["a"]), batcher.submit(["b"])]
    for future in futures:
        with pytest.raises(RuntimeError, match="session died"):
            future.result(5)
    batcher.close(5)


def test_a_full_queue_refuses_and_close_drains_then_refuses():
    gate = threading.Event()
    scan = Recorder(gate)
    batcher = MicroBatcher(scan, max_batch=1, max_wait_ms=0, max_queue=3)
    first = batcher.submit(["a"])
    assert scan.entered.wait(5)  # the worker holds "a"; the queue is empty again
    queued = batcher.submit(["b", "c", "d"])
    with pytest.raises(QueueFull, match="3 of 3"):
        batcher.submit(["e"])
    assert batcher.queued == 3
    closer = threading.Thread(target=batcher.close, args=(5,))
    closer.start()
    time.sleep(0.05)
    with pytest.raises(Closed):
        batcher.submit(["f"])
    gate.set()
    closer.join(5)
    assert first.result(0) == [("A", True)] and queued.result(0) == [("B", True), ("C", True), ("D", True)]


def test_close_timeout_fails_what_is_still_queued():
    gate = threading.Event()
    batcher = MicroBatcher(Recorder(gate), max_batch=1, max_wait_ms=0)
    running, waiting = batcher.submit(["a"]), batcher.submit(["b"])
    time.sleep(0.05)
    assert batcher.close(0.1) is False
    with pytest.raises(Closed):
        waiting.result(1)
    gate.set()
    assert running.result(5) == [("A", True)]


def test_workers_share_the_queue():
    gate = threading.Event()
    scan = Recorder(gate)
    batcher = MicroBatcher(scan, max_batch=1, max_wait_ms=0, workers=2)
    futures = [batcher.submit([c]) for c in "ab"]
    deadline = time.monotonic() + 5
    while len(scan.calls) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(scan.calls) == 2  # both calls are in flight at once
    gate.set()
    assert [f.result(5) for f in futures] == [[("A", True)], [("B", True)]]
    batcher.close(5)
