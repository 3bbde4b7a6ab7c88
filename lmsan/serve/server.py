"""Run the app under uvicorn: bind the socket first (so a busy port is an ``OSError``, not an
exit from inside uvicorn), announce once listening, and shut down gracefully.

Graceful shutdown (SIGTERM or SIGINT, or ``server.should_exit = True``): uvicorn stops accepting
connections, lets in-flight requests finish (up to ``drain_timeout_s``), then the app's lifespan
drains the batcher's queue (``lmsan.serve.app``). A second SIGINT forces the exit.
"""

from __future__ import annotations

import socket
from typing import Any, Callable

import uvicorn

from lmsan.serve.config import ServeConfig

Listening = Callable[[str, int], None]  # on_listening(host, port), called once the socket accepts


class Server(uvicorn.Server):
    """uvicorn's server on an already bound socket, calling ``on_listening`` after startup."""

    def __init__(self, config: uvicorn.Config, sock: socket.socket, on_listening: Listening | None = None) -> None:
        super().__init__(config)
        self.socket, self._on_listening = sock, on_listening
        self.address = sock.getsockname()[:2]  # (host, port): the real port when 0 was asked for

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and self._on_listening is not None:
            self._on_listening(*self.address)

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        self._captured_signals.clear()  # uvicorn re-raises the signal after shutdown; a drained exit is 0

    def run(self, sockets: list[socket.socket] | None = None) -> None:
        super().run(sockets=sockets or [self.socket])


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (port 0: a free one).

    Raises:
        OSError: the address cannot be resolved or bound (e.g. the port is in use), naming it.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


def make_server(app: Any, config: ServeConfig, *, on_listening: Listening | None = None) -> Server:
    """Bind ``config.host:config.port`` and build the server; start it with ``server.run()``.

    uvicorn's own logging setup is skipped (``lmsan.cli._common`` configures stderr logging);
    no access log. ``max_connections`` beyond which uvicorn answers 503.
    """
    sock = bind(config.host, config.port)
    settings = uvicorn.Config(app, lifespan="on", log_config=None, access_log=False, server_header=False,
                              limit_concurrency=config.max_connections,
                              timeout_graceful_shutdown=config.drain_timeout_s)
    return Server(settings, sock, on_listening)
