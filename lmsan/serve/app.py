"""``build_app(guard, config)``: the Starlette application of ``lmsan serve``.

Endpoints (JSON unless noted; every error is ``{"error": "..."}`` with a 4xx/5xx code):

    POST /v1/scan   {"inputs": [...], "sanitize": true} -> {"results": [ScanResult dicts], "guard": digest}
    GET  /v1/info   guard digest, task and labels, threshold (and calibrated per-PV ones), known triggers in use,
                    provider, version, serving limits
    GET  /healthz   200 while the process serves (liveness)
    GET  /readyz    200 once warmed up, 503 before that and while shutting down (readiness)
    GET  /metrics   Prometheus text format (``lmsan.serve.metrics``)

Scans run off the event loop in the ``MicroBatcher``'s worker threads. The lifespan starts the
batcher, warms the guard up in the background (not ready until done) and, on shutdown, refuses
new scans and lets the queue drain. Imports the runtime stack and starlette only.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from lmsan import __version__
from lmsan.errors import InputError
from lmsan.runtime.known import names
from lmsan.serve.batcher import Closed, MicroBatcher, QueueFull
from lmsan.serve.config import ServeConfig
from lmsan.serve.metrics import CONTENT_TYPE, Metrics
from lmsan.serve.protocol import TOO_LARGE, UNPROCESSABLE, RequestError, parse_scan_request

log = logging.getLogger(__name__)

RETRY_AFTER_S = 1  # the Retry-After of a 429: batches take milliseconds, so a second is generous


@dataclass
class ServeState:
    """What the handlers share: the guard, the batcher, the metrics, and readiness.

    ``status`` is ``starting`` (warming up), ``ready``, ``draining`` (shutting down) or
    ``failed`` (warm-up raised; the reason is in ``detail``).
    """

    guard: Any
    config: ServeConfig
    metrics: Metrics
    batcher: MicroBatcher | None = None
    status: str = "starting"
    detail: str = "warming up"
    tasks: set = field(default_factory=set)

    @property
    def ready(self) -> bool:
        return self.status == "ready"


def build_app(guard: Any, config: ServeConfig) -> Starlette:
    """Build the service around a loaded ``lmsan.runtime.Guard`` (shared by the worker threads).

    Args:
        guard: the guard; its ``scan_batch`` is called from ``config.workers`` threads.
        config: the serving knobs; ``host``/``port`` are the server's business, not the app's.
    """
    state = ServeState(guard=guard, config=config, metrics=Metrics())

    @asynccontextmanager
    async def lifespan(app: Starlette):
        state.batcher = MicroBatcher(guard.scan_batch, max_batch=config.max_batch, max_wait_ms=config.max_wait_ms,
                                     max_queue=config.max_queue, batching=config.batching, workers=config.workers,
                                     on_batch=state.metrics.batch)
        warm = asyncio.create_task(_warm_up(state))
        state.tasks.add(warm)
        warm.add_done_callback(state.tasks.discard)
        try:
            yield
        finally:
            state.status, state.detail = "draining", "shutting down"
            drained = await asyncio.to_thread(state.batcher.close, config.drain_timeout_s)
            log.info("batcher closed (%s)", "drained" if drained else "timed out; queued requests failed")

    routes = [Route("/v1/scan", _counted(state, "/v1/scan", _scan), methods=["POST"]),
              Route("/v1/info", _counted(state, "/v1/info", _info), methods=["GET"]),
              Route("/healthz", _counted(state, "/healthz", _healthz), methods=["GET"]),
              Route("/readyz", _counted(state, "/readyz", _readyz), methods=["GET"]),
              Route("/metrics", _counted(state, "/metrics", _metrics), methods=["GET"])]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: _http_error})
    app.state.serve = state
    return app


async def _warm_up(state: ServeState) -> None:
    try:
        seconds = await asyncio.to_thread(state.guard.warmup)
    except Exception as exc:  # noqa: BLE001 - reported by /readyz; the process stays up for inspection
        log.error("warm-up failed: %s: %s", type(exc).__name__, exc)
        state.status, state.detail = "failed", f"warm-up failed: {type(exc).__name__}: {exc}"
        return
    if state.status == "starting":
        state.status, state.detail = "ready", "ready"
        log.info("ready (warm-up %.2f s)", seconds)


Handler = Callable[[ServeState, Request], Awaitable[Response]]


def _counted(state: ServeState, path: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a handler: count its answer by status code (scan answers also feed the latency histogram)."""

    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        started = time.perf_counter()
        response = await handler(state, request)
        seconds = time.perf_counter() - started if path == "/v1/scan" else None
        state.metrics.request(path, response.status_code, seconds)
        return response

    return endpoint


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    """Routing errors (404, 405) as JSON too."""
    return _error(exc.status_code, f"{exc.detail}: {request.method} {request.url.path}", exc.headers)


async def _scan(state: ServeState, request: Request) -> Response:
    if not state.ready:
        state.metrics.refuse("not_ready")
        return _error(503, f"not ready: {state.detail}", {"Retry-After": str(RETRY_AFTER_S)})
    try:
        body = await _read_body(request, state.config.max_body_bytes)
        scan = parse_scan_request(body, max_items=state.config.max_items, max_chars=state.guard.max_chars)
    except RequestError as exc:
        return _error(exc.status, str(exc))
    try:
        future = state.batcher.submit(scan.inputs, sanitize=scan.sanitize)
    except QueueFull as exc:
        state.metrics.refuse("queue_full")
        return _error(429, f"overloaded: {exc}; retry later", {"Retry-After": str(RETRY_AFTER_S)})
    except Closed as exc:
        state.metrics.refuse("not_ready")
        return _error(503, f"not ready: {exc}")
    try:
        results = await asyncio.wrap_future(future)
    except InputError as exc:  # found only when encoded, e.g. a pair longer than the model's maximum
        return _error(UNPROCESSABLE, f"inputs[{exc.index}]: {exc.reason}")
    except Closed as exc:
        return _error(503, str(exc))
    except Exception as exc:  # noqa: BLE001 - logged by the batcher; the client gets one line
        return _error(500, f"scan failed: {type(exc).__name__}: {exc}")
    state.metrics.results(inputs=len(results), triggered=sum(r.triggered for r in results),
                          rejected=sum(r.rejected for r in results))
    return JSONResponse({"results": [r.to_dict() for r in results], "guard": state.guard.digest})


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(TOO_LARGE, f"body of {int(declared)} bytes exceeds the limit of {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(TOO_LARGE, f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _info(state: ServeState, request: Request) -> Response:
    guard, config = state.guard, state.config
    task = guard.manifest.task
    return JSONResponse({
        "guard": guard.digest, "version": __version__, "provider": guard.provider, "threshold": guard.threshold,
        "pv_thresholds": None if guard.pv_thresholds is None else list(guard.pv_thresholds),
        "task": None if task is None else task.get("key", task.get("name")),
        "labels": None if guard.labels is None else list(guard.labels), "max_chars": guard.max_chars,
        "known_triggers": list(names(guard.known.spans)),
        "serving": {k: v for k, v in config.to_dict().items() if k not in ("host", "port")},
    })


async def _healthz(state: ServeState, request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def _readyz(state: ServeState, request: Request) -> Response:
    if state.ready:
        return JSONResponse({"ready": True, "status": state.status})
    return JSONResponse({"ready": False, "status": state.status, "error": f"not ready: {state.detail}"},
                        status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})


async def _metrics(state: ServeState, request: Request) -> Response:
    queued = state.batcher.queued if state.batcher is not None else 0
    return PlainTextResponse(state.metrics.render(queued=queued, ready=state.ready), media_type=CONTENT_TYPE)
