"""``lmsan serve``: an HTTP service around one ``lmsan.runtime.Guard``, with micro-batching.

Modules: ``config`` (``ServeConfig``), ``batcher`` (``MicroBatcher``: concurrent requests merged
into one ``Guard.scan_batch`` call, bounded queue), ``protocol`` (request parsing), ``metrics``
(Prometheus text), ``app`` (``build_app``: the Starlette app), ``server`` (uvicorn on a bound
socket, graceful shutdown). Imports the runtime stack, starlette and uvicorn only: never torch or
transformers. ``docs/serve.md`` describes the endpoints.
"""

from lmsan.serve.batcher import Closed, MicroBatcher, QueueFull
from lmsan.serve.config import ServeConfig

__all__ = ["Closed", "MicroBatcher", "QueueFull", "ServeConfig"]
