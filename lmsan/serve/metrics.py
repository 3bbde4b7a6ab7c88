"""Service metrics in the Prometheus text exposition format (0.0.4), without prometheus_client.

``Metrics`` holds a few counters, two gauges and three histograms; every update takes one lock,
so the event loop and the batcher's worker threads may update it at once. Stdlib only.
"""

from __future__ import annotations

import bisect
import math
import threading
from dataclasses import dataclass, field

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass
class Histogram:
    """Counts of observations per upper bound (``le``); ``+Inf`` is implicit."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)  # per bucket, not cumulative; last = above all bounds
    total: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def lines(self, name: str) -> list[str]:
        out, running = [], 0
        for bound, count in zip((*self.bounds, math.inf), self.counts):
            running += count
            out.append(f'{name}_bucket{{le="{_number(bound)}"}} {running}')
        return out + [f"{name}_sum {_number(self.total)}", f"{name}_count {running}"]


class Metrics:
    """What ``GET /metrics`` reports. Names carry the ``lmsan_serve_`` prefix.

    Counters: requests by path and status code, inputs scanned, inputs triggered, inputs rejected
    (triggered and not cleaned: ``ScanResult.rejected``), requests refused for overload (429) or
    while not ready (503). Gauges: queued inputs, readiness. Histograms: request latency of
    ``POST /v1/scan`` (s), inputs per session call, seconds per session call.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = {}
        self.inputs = self.triggered = self.rejected = 0
        self.refused: dict[str, int] = {"queue_full": 0, "not_ready": 0}
        self.latency = Histogram(LATENCY_BUCKETS_S)
        self.batch_size = Histogram(SIZE_BUCKETS)
        self.batch_seconds = Histogram(LATENCY_BUCKETS_S)

    def request(self, path: str, code: int, seconds: float | None = None) -> None:
        """Count one answered request; ``seconds`` (scan requests only) feeds the latency histogram."""
        with self._lock:
            self.requests[(path, code)] = self.requests.get((path, code), 0) + 1
            if seconds is not None:
                self.latency.observe(seconds)

    def results(self, *, inputs: int, triggered: int, rejected: int) -> None:
        with self._lock:
            self.inputs += inputs
            self.triggered += triggered
            self.rejected += rejected

    def refuse(self, reason: str) -> None:
        """Count a request refused: ``queue_full`` (429) or ``not_ready`` (503)."""
        with self._lock:
            self.refused[reason] += 1

    def batch(self, size: int, seconds: float) -> None:
        """Record one session call of ``size`` inputs that took ``seconds`` (the batcher's hook)."""
        with self._lock:
            self.batch_size.observe(size)
            self.batch_seconds.observe(seconds)

    def render(self, *, queued: int, ready: bool) -> str:
        """The exposition text: ``# HELP`` and ``# TYPE`` lines, then the samples, one per line."""
        p = "lmsan_serve"
        with self._lock:
            out = [f"# HELP {p}_requests_total HTTP requests answered, by path and status code.",
                   f"# TYPE {p}_requests_total counter"]
            out += [f'{p}_requests_total{{path="{_label(path)}",code="{code}"}} {n}'
                    for (path, code), n in sorted(self.requests.items())]
            for name, value, text in (("inputs", self.inputs, "Inputs scanned."),
                                      ("triggered", self.triggered, "Inputs whose match exceeded the threshold."),
                                      ("rejected", self.rejected, "Triggered inputs the removal could not clean "
                                                                  "(fail closed).")):
                out += [f"# HELP {p}_{name}_total {text}", f"# TYPE {p}_{name}_total counter",
                        f"{p}_{name}_total {value}"]
            out += [f"# HELP {p}_refused_total Requests refused: queue_full (429) or not_ready (503).",
                    f"# TYPE {p}_refused_total counter"]
            out += [f'{p}_refused_total{{reason="{reason}"}} {n}' for reason, n in sorted(self.refused.items())]
            out += [f"# HELP {p}_queued_inputs Inputs waiting for a batch.", f"# TYPE {p}_queued_inputs gauge",
                    f"{p}_queued_inputs {queued}",
                    f"# HELP {p}_ready 1 once warmed up and not shutting down.", f"# TYPE {p}_ready gauge",
                    f"{p}_ready {int(ready)}"]
            for name, histogram, text in (
                    ("request_duration_seconds", self.latency, "Latency of POST /v1/scan, body read to answer."),
                    ("batch_size", self.batch_size, "Inputs per session call (Guard.scan_batch)."),
                    ("batch_duration_seconds", self.batch_seconds, "Seconds per session call.")):
                out += [f"# HELP {p}_{name} {text}", f"# TYPE {p}_{name} histogram", *histogram.lines(f"{p}_{name}")]
        return "\n".join(out) + "\n"


def _number(value: float) -> str:
    return "+Inf" if value == math.inf else repr(float(value))


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
