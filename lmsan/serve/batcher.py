"""``MicroBatcher``: merge concurrent scan requests into few ``Guard.scan_batch`` calls.

Pure threading (no asyncio, no HTTP): ``submit`` queues a request's inputs and returns a
``concurrent.futures.Future``; worker threads drain the queue, each taking up to ``max_batch``
inputs (from any number of requests) or whatever arrived within ``max_wait_ms`` of the oldest
queued input, call the scan function once and resolve every finished request. The queue is
bounded (``QueueFull``), and ``close`` drains it before the workers stop. Stdlib only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from lmsan.errors import InputError, LmsanError

log = logging.getLogger(__name__)

ScanFn = Callable[..., list]  # scan(values, sanitize=bool) -> one result per value (Guard.scan_batch)
BatchHook = Callable[[int, float], None]  # on_batch(inputs in the call, seconds the call took)


class QueueFull(LmsanError):
    """The queue cannot take the request's inputs now (the service answers 429)."""


class Closed(LmsanError):
    """The batcher is shutting down and takes no new requests (the service answers 503)."""


class _Request:
    """One submitted request: its result slots, how many are still missing, and its future."""

    def __init__(self, count: int) -> None:
        self.results: list[Any] = [None] * count
        self.missing = count
        self.future: Future = Future()
        self.future.set_running_or_notify_cancel()  # a client that goes away cannot cancel a queued scan
        self.lock = threading.Lock()

    def resolve(self, index: int, result: Any) -> None:
        with self.lock:
            if self.future.done():
                return
            self.results[index] = result
            self.missing -= 1
            if self.missing == 0:
                self.future.set_result(self.results)

    def fail(self, exc: BaseException) -> None:
        with self.lock:
            if not self.future.done():
                self.future.set_exception(exc)


@dataclass(frozen=True)
class _Entry:
    """One queued input: its request, its position there, the value, the flag, when it was queued."""

    request: _Request
    index: int
    value: Any
    sanitize: bool
    queued: float = field(default_factory=time.monotonic)


class MicroBatcher:
    """Merge inputs of concurrent requests into batched scan calls.

    Args:
        scan: ``scan(values, sanitize=bool) -> list`` (``Guard.scan_batch``); thread-safe when
            ``workers > 1``. An ``InputError`` naming its ``index`` fails only that input's
            request; the rest of the batch is scanned again without it.
        max_batch: most inputs per call when ``batching``.
        max_wait_ms: how long a worker waits for a fuller batch after the oldest queued input
            arrived, in ms.
        max_queue: most queued inputs (not yet taken by a worker).
        batching: False: each call scans exactly one request (all its inputs), however many wait.
        workers: threads taking batches; each makes one call at a time.
        on_batch: called after each scan call with (inputs, seconds), from a worker thread.
    """

    def __init__(self, scan: ScanFn, *, max_batch: int = 32, max_wait_ms: float = 0.0, max_queue: int = 1024,
                 batching: bool = True, workers: int = 1, on_batch: BatchHook | None = None) -> None:
        self._scan, self._on_batch = scan, on_batch
        self.max_batch, self.max_wait_s, self.max_queue = max_batch, max_wait_ms / 1000.0, max_queue
        self.batching = batching
        self._queue: deque[_Entry] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._threads = [threading.Thread(target=self._work, name=f"lmsan-batcher-{i}", daemon=True)
                         for i in range(workers)]
        for thread in self._threads:
            thread.start()

    @property
    def queued(self) -> int:
        """Inputs waiting for a worker."""
        return len(self._queue)

    def submit(self, values: Sequence[Any], *, sanitize: bool = True) -> Future:
        """Queue one request's inputs; the future's result is their scan results, in order.

        The future fails with the scan's exception (an ``InputError`` carries the index within
        ``values``) or ``Closed`` if shutdown ran out of time before the request was scanned.

        Raises:
            QueueFull: fewer than ``len(values)`` free places in the queue.
            Closed: ``close`` was called.
        """
        request = _Request(len(values))
        if not values:
            request.future.set_result([])
            return request.future
        with self._cond:
            if self._closing:
                raise Closed("the service is shutting down")
            if len(self._queue) + len(values) > self.max_queue:
                raise QueueFull(f"queue full ({len(self._queue)} of {self.max_queue} inputs waiting)")
            self._queue.extend(_Entry(request, i, v, sanitize) for i, v in enumerate(values))
            self._cond.notify()
        return request.future

    def close(self, timeout: float | None = None) -> bool:
        """Refuse new requests, let the workers scan what is queued, and stop them.

        Returns True when everything queued was scanned within ``timeout`` seconds; otherwise the
        requests still queued fail with ``Closed`` and False is returned.
        """
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if deadline is None else max(deadline - time.monotonic(), 0.0))
        with self._cond:
            left = list(self._queue)
            self._queue.clear()
        for entry in left:
            entry.request.fail(Closed("the service shut down before this request was scanned"))
        return not left and not any(thread.is_alive() for thread in self._threads)

    def _work(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            started = time.perf_counter()
            for sanitize in (True, False):
                group = [entry for entry in batch if entry.sanitize is sanitize]
                if group:
                    self._scan_group(group, sanitize)
            if self._on_batch is not None:
                self._on_batch(len(batch), time.perf_counter() - started)

    def _take(self) -> list[_Entry] | None:
        """Block until there is work; return the next batch, or None once closing and drained."""
        with self._cond:
            while True:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return None
                if not self.batching:
                    first, batch = self._queue[0].request, []
                    while self._queue and self._queue[0].request is first:
                        batch.append(self._queue.popleft())
                    return batch
                while self._queue and len(self._queue) < self.max_batch and not self._closing:
                    remaining = self._queue[0].queued + self.max_wait_s - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                if self._queue:  # else another worker took them all while this one waited
                    return [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]

    def _scan_group(self, entries: list[_Entry], sanitize: bool) -> None:
        """Scan entries in one call; an input's ``InputError`` fails its request, the rest rerun."""
        while entries:
            try:
                results = self._scan([entry.value for entry in entries], sanitize=sanitize)
            except InputError as exc:
                if exc.index is None or not 0 <= exc.index < len(entries):
                    self._fail(entries, exc)
                    return
                bad = entries[exc.index]
                bad.request.fail(InputError(exc.reason, index=bad.index))
                entries = [entry for entry in entries if entry.request is not bad.request]
                continue
            except Exception as exc:  # noqa: BLE001 - the requests carry it to their clients
                log.error("scan of %d inputs failed: %s: %s", len(entries), type(exc).__name__, exc)
                self._fail(entries, exc)
                return
            for entry, result in zip(entries, results):
                entry.request.resolve(entry.index, result)
            return

    @staticmethod
    def _fail(entries: list[_Entry], exc: BaseException) -> None:
        for request in {id(entry.request): entry.request for entry in entries}.values():
            request.fail(exc)
