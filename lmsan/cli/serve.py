"""``lmsan serve`` / ``lmsan-serve``: an HTTP service around one guard, with micro-batching.

    lmsan serve guard/                          listen on 127.0.0.1:8000
    lmsan serve guard/ --host 0.0.0.0 --port 9000 --max-batch 64 --max-wait-ms 1
    LMSAN_SERVE_PORT=0 lmsan serve guard/ --json    a free port, announced as JSON on stdout

Every option can also come from the environment variable shown in ``--help``. Exit code 0 after
a clean shutdown (SIGTERM/SIGINT), 2 when the guard cannot be loaded or the port cannot be bound,
4 for a bad option. Imports the runtime stack, starlette and uvicorn inside the command, never
torch or transformers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from lmsan.cli._common import CONTEXT_SETTINGS, EXIT_CLEAN, common_options, configure_logging, run
from lmsan.runtime.removal import GROW_MARGIN, MAX_TRIALS

ENV = "LMSAN_SERVE_"


def _opt(*names: str, env: str, **kw):
    """A click option that can also be set by ``LMSAN_SERVE_<env>``."""
    return click.option(*names, envvar=ENV + env, show_envvar=True, **kw)


@click.command("lmsan-serve", context_settings=CONTEXT_SETTINGS)
@click.argument("directory", metavar="GUARD_DIR", envvar=ENV + "GUARD_DIR",
                type=click.Path(exists=True, file_okay=False, path_type=Path))
@_opt("--host", env="HOST", default="127.0.0.1", show_default=True,
      help="Interface to listen on (0.0.0.0: every interface).")
@_opt("--port", env="PORT", type=click.IntRange(0, 65535), default=8000, show_default=True,
      help="TCP port; 0 picks a free one (printed, and in --json).")
@_opt("--max-batch", env="MAX_BATCH", type=click.IntRange(min=1), default=32, show_default=True,
      help="Most inputs merged into one session call.")
@_opt("--max-wait-ms", env="MAX_WAIT_MS", type=click.FloatRange(min=0.0), default=0.0, show_default=True,
      help="How long a batch waits for more inputs after its first arrived (ms); 0: take what queued "
           "while the previous session call ran.")
@_opt("--max-queue", env="MAX_QUEUE", type=click.IntRange(min=1), default=1024, show_default=True,
      help="Most inputs waiting for a batch; a request that would overflow it gets 429 with Retry-After.")
@_opt("--workers", env="WORKERS", type=click.IntRange(min=1), default=1, show_default=True,
      help="Session calls in flight at once (threads sharing the onnxruntime session).")
@_opt("--no-batching", env="NO_BATCHING", is_flag=True,
      help="One request per session call (no merging across requests): the baseline micro-batching beats.")
@_opt("--max-items", env="MAX_ITEMS", type=click.IntRange(min=1), default=64, show_default=True,
      help="Most inputs in one request (413 beyond).")
@_opt("--max-body-bytes", env="MAX_BODY_BYTES", type=click.IntRange(min=1), default=1 << 20, show_default=True,
      help="Largest request body in bytes (413 beyond).")
@_opt("--max-connections", env="MAX_CONNECTIONS", type=click.IntRange(min=1), default=512, show_default=True,
      help="Most concurrent connections (503 beyond).")
@_opt("--drain-timeout", env="DRAIN_TIMEOUT", type=click.FloatRange(min=0.0, min_open=True), default=30.0,
      show_default=True, help="On SIGTERM/SIGINT, seconds to let in-flight requests finish.")
@_opt("--threshold", env="THRESHOLD", type=click.FloatRange(0.0, 1.0, max_open=True), default=None,
      help="T_match; default: the one in guard.json.")
@_opt("--task", env="TASK", default=None, metavar="KEY",
      help="Which task a shared task guard answers [default: its first].")
@_opt("--provider", "providers", env="PROVIDERS", multiple=True,
      help="onnxruntime provider: cpu, cuda or tensorrt (repeatable; the variable takes a space-separated list).")
@_opt("--threads", env="THREADS", type=click.IntRange(min=1), default=None,
      help="onnxruntime intra-op threads [default: onnxruntime's choice].")
@_opt("--expect-digest", env="EXPECT_DIGEST", metavar="HEX", default=None,
      help="Refuse any guard but the one whose guard.json digest this is.")
@_opt("--max-trials", env="MAX_TRIALS", type=click.IntRange(min=0), default=MAX_TRIALS, show_default=True,
      help="Work cap: most removal trials per input (0: no cap).")
@_opt("--time-budget", env="TIME_BUDGET", type=click.FloatRange(min=0.0, min_open=True), default=None,
      help="Work cap: seconds the removal of one batch may take (a merged batch shares it).")
@_opt("--fail-open", env="FAIL_OPEN", is_flag=True,
      help="An input whose removal hits a work cap passes unsanitized (default: rejected).")
@_opt("--grow-margin", env="GROW_MARGIN", type=click.FloatRange(0.0, 1.0, max_open=True), default=GROW_MARGIN,
      show_default=True, help="Also remove a word next to a cleared removal that lowers the flagging PV's share "
                              "of agreeing signs by at least this much more, or that the guard flags alone on "
                              "the same PV (the rest of a multi-word trigger); 0: never.")
@_opt("--no-known-triggers", env="NO_KNOWN_TRIGGERS", is_flag=True,
      help="Ignore the mined PVs' confirmed trigger spans (guard.json known_triggers); by default an input "
           "holding one is triggered and the words under it are removed.")
@_opt("--no-peel", env="NO_PEEL", is_flag=True,
      help="Reject an input that no window of up to 3 words clears (default: peel it: remove the word that "
           "lowers the flagging PV's share most and clean the text left like any input, up to 2 peeled words).")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object on stdout once listening: url, host, port, guard digest, settings.")
@common_options
def serve(directory: Path, host: str, port: int, max_batch: int, max_wait_ms: float, max_queue: int, workers: int,
          no_batching: bool, max_items: int, max_body_bytes: int, max_connections: int, drain_timeout: float,
          threshold: float | None, task: str | None, providers: tuple[str, ...], threads: int | None,
          expect_digest: str | None, max_trials: int, time_budget: float | None, fail_open: bool, grow_margin: float,
          no_known_triggers: bool, no_peel: bool, as_json: bool,
          verbose: int, quiet: bool, debug: bool) -> int:
    """Serve the guard in GUARD_DIR over HTTP until SIGTERM or SIGINT.

    \b
    POST /v1/scan  {"inputs": ["text", ["text a", "text b"]], "sanitize": true}
                   -> {"results": [ScanResult...], "guard": DIGEST}
    GET  /v1/info  guard digest, task, labels, threshold, limits
    GET  /healthz  liveness;  GET /readyz  200 once warmed up, 503 otherwise
    GET  /metrics  Prometheus text (requests, triggered, rejected, batch sizes, latency)

    Concurrent requests are merged into one session call (--max-batch, --max-wait-ms). A full
    queue answers 429, a bad request 400/413/422 with {"error": "..."}; see docs/serve.md.
    """
    configure_logging(verbose, quiet)
    from lmsan.runtime import Guard
    from lmsan.serve import ServeConfig
    from lmsan.serve.app import build_app
    from lmsan.serve.server import make_server

    config = ServeConfig(host=host, port=port, batching=not no_batching, max_batch=max_batch, max_wait_ms=max_wait_ms,
                         max_queue=max_queue, workers=workers, max_items=max_items, max_body_bytes=max_body_bytes,
                         max_connections=max_connections, drain_timeout_s=drain_timeout)
    guard = Guard.load(directory, providers=list(providers) or None, threshold=threshold, task=task, threads=threads,
                       expect_digest=expect_digest, max_trials=max_trials or None, time_budget_s=time_budget,
                       fail_open=fail_open, max_batch=max(64, max_batch),
                       grow_margin=grow_margin or None, known_triggers=not no_known_triggers, peel=not no_peel)

    def announce(bound_host: str, bound_port: int) -> None:
        url = f"http://{bound_host}:{bound_port}"
        if not quiet:
            click.echo(f"lmsan-serve: listening on {url} (guard {guard.digest or 'without digest'}, "
                       f"{guard.provider}, {'batching' if config.batching else 'no batching'})", err=True)
        if as_json:
            click.echo(json.dumps({"url": url, "host": bound_host, "port": bound_port, "guard": guard.digest,
                                   "provider": guard.provider, "config": config.to_dict()}, sort_keys=True))
            sys.stdout.flush()

    make_server(build_app(guard, config), config, on_listening=announce).run()
    return EXIT_CLEAN


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``lmsan-serve``."""
    run(serve, "lmsan-serve", argv)
