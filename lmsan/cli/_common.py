"""Shared CLI plumbing: logging to stderr, one error line, and the exit codes.

Exit codes (the only place they are decided):
    0  clean / nothing triggered
    1  backdoored / some input triggered
    2  LmsanError, OSError, a missing optional extra (``lmsan.extras``) or an unexpected error
    4  usage error (click) or ConfigError
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

import click

from lmsan.errors import ConfigError, LmsanError
from lmsan.extras import explain

EXIT_CLEAN = 0
EXIT_FOUND = 1
EXIT_ERROR = 2
EXIT_USAGE = 4

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class _StderrHandler(logging.StreamHandler):
    """A stream handler that writes to whatever ``sys.stderr`` is at the time of each record, so a
    command run in-process after another (tests, embedding) never logs into a closed stream."""

    @property  # type: ignore[override]
    def stream(self):  # noqa: D102
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def configure_logging(verbose: int, quiet: bool) -> None:
    """Send logs to stderr: WARNING with -q, INFO by default, DEBUG with -v; others at WARNING."""
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("lmsan").setLevel(level)


def common_options(func: Callable) -> Callable:
    """Add ``-v/--verbose``, ``-q/--quiet`` and ``--debug`` to a click command."""
    func = click.option("--debug", is_flag=True, help="Show a traceback on errors.")(func)
    func = click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors on stderr.")(func)
    func = click.option("-v", "--verbose", count=True, help="Debug logging on stderr.")(func)
    return func


def config_overrides(config_file: str | None, options: dict[str, Any], flags: dict[str, str],
                     overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The config keys a run sets: ``--config``'s JSON object, then the options given.

    An option given (not ``None``) whose key the file sets to another value is an error: neither
    silently wins.

    Args:
        config_file: path of the ``--config`` JSON object, or ``None``.
        options: ``{config key: value or None}``, one entry per option.
        flags: ``{option flag: config key}`` (``--loops`` -> ``max_loops``), for the error message.
        overrides: the file's keys when the caller has already read (and adjusted) them;
            default: read ``config_file`` here (``read_config_file``).

    Raises:
        ConfigError: unreadable ``--config``, or an option that conflicts with it.
    """
    merged = dict(read_config_file(config_file) if overrides is None else overrides)
    flag_of = {key: flag for flag, key in flags.items()}
    for key, value in options.items():
        if value is None:
            continue
        if key in merged and merged[key] != value:
            raise ConfigError(f"{flag_of[key]} {value} conflicts with {key}={merged[key]!r} in --config "
                              f"{config_file}: drop one")
        merged[key] = value
    return merged


def read_config_file(config_file: str | None) -> dict[str, Any]:
    """The ``--config`` file's JSON object (``{}`` without one), less its ``lmsan_version`` stamp.

    Raises:
        ConfigError: the file cannot be read or does not hold a JSON object.
    """
    if config_file is None:
        return {}
    try:
        data = json.loads(Path(config_file).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read --config {config_file}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"--config {config_file} must hold a JSON object")
    data.pop("lmsan_version", None)
    return data


def emit_json(payload: Any) -> None:
    """Write one JSON document to stdout (results only ever go to stdout)."""
    click.echo(json.dumps(payload, indent=2, sort_keys=True))


def run(command: click.Command, prog: str, argv: list[str] | None = None) -> None:
    """Run a click command, map its outcome to an exit code and exit once.

    The command returns the exit code (0 or 1). Errors print one line to stderr:
    ``<prog>: error: <message>``, with a traceback only under ``--debug``; a command whose optional
    extra is not installed says which one (``lmsan.extras``). Under ``--json``
    an error also prints ``{"error": ...}`` to stdout so stdout stays valid JSON.
    """
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    as_json = "--json" in args
    try:
        code = command.main(args=args, prog_name=prog, standalone_mode=False)
    except click.exceptions.Exit as exc:  # --help, --version
        code = exc.exit_code
    except click.UsageError as exc:
        _report(prog, exc.format_message(), debug, as_json, "usage")
        code = EXIT_USAGE
    except click.Abort:
        _report(prog, "aborted", debug, as_json, "aborted")
        code = EXIT_ERROR
    except ConfigError as exc:
        _report(prog, str(exc), debug, as_json, "config")
        code = EXIT_USAGE
    except (LmsanError, OSError) as exc:
        _report(prog, str(exc), debug, as_json, type(exc).__name__)
        code = EXIT_ERROR
    except ModuleNotFoundError as exc:  # an optional extra's package (torch, ...) is not installed
        missing = explain(exc, prog.removeprefix("lmsan-") if prog.startswith("lmsan-") else None)
        message = str(missing) if missing else f"unexpected {type(exc).__name__}: {exc}"
        _report(prog, message, debug, as_json, type(missing).__name__ if missing else "internal")
        code = EXIT_ERROR
    except Exception as exc:  # last resort: never a bare traceback
        _report(prog, f"unexpected {type(exc).__name__}: {exc}", debug, as_json, "internal")
        code = EXIT_ERROR
    sys.exit(int(code or 0))


def _report(prog: str, message: str, debug: bool, as_json: bool, kind: str) -> None:
    if debug:
        traceback.print_exc(file=sys.stderr)
    first_line = message.strip().splitlines()[0] if message.strip() else kind
    click.echo(f"{prog}: error: {first_line}", err=True)
    if as_json:
        emit_json({"error": {"kind": kind, "message": message.strip()}})
