"""``ServeConfig``: the serving knobs of ``lmsan serve`` (the guard's own knobs go to ``Guard.load``).

Stdlib only; imports neither torch nor transformers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from lmsan.errors import ConfigError


@dataclass(frozen=True)
class ServeConfig:
    """How the service listens, batches and bounds its work. A value: use ``replace``.

    Attributes:
        host: interface to listen on; the default serves loopback only.
        port: TCP port; 0 picks a free one (``lmsan serve --json`` prints it).
        batching: merge concurrent requests into one ``Guard.scan_batch`` call (micro-batching).
            False: one request per session call (the baseline it is measured against).
        max_batch: most inputs in one merged call (a request with more is split across calls).
        max_wait_ms: how long a batch may wait for more inputs after its first arrived, in ms.
            0 (default): take what is queued, so a batch is whatever arrived while the previous
            session call ran; a wait added latency and no throughput on a CPU
            (``benchmarks/serve.py``).
        max_queue: most inputs waiting for a worker; a request that would overflow it gets 429.
            A batch being scanned no longer counts.
        workers: batches scanned at once (threads calling the shared session).
        max_items: most inputs in one request (413 beyond).
        max_body_bytes: largest request body, in bytes (413 beyond).
        max_connections: most concurrent connections; uvicorn answers 503 beyond.
        drain_timeout_s: on shutdown, seconds to let in-flight requests and queued inputs finish.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    batching: bool = True
    max_batch: int = 32
    max_wait_ms: float = 0.0
    max_queue: int = 1024
    workers: int = 1
    max_items: int = 64
    max_body_bytes: int = 1 << 20
    max_connections: int = 512
    drain_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be in [0, 65535], got {self.port}")
        for name in ("max_batch", "max_queue", "workers", "max_items", "max_body_bytes", "max_connections"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.max_wait_ms >= 0:
            raise ConfigError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        if not self.drain_timeout_s > 0:
            raise ConfigError(f"drain_timeout_s must be > 0, got {self.drain_timeout_s}")
        if self.max_items > self.max_queue:
            raise ConfigError(f"max_items ({self.max_items}) must be <= max_queue ({self.max_queue}): "
                              "a request that can never fit the queue would always get 429")

    def replace(self, **changes: Any) -> "ServeConfig":
        """A copy with ``changes`` applied (validated again)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
