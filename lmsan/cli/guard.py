"""``lmsan-guard``: scan inputs with an exported guard, removing triggers.

    lmsan-guard DIR "some text" "more text"     scan the given texts
    lmsan-guard DIR --file inputs.jsonl         one JSON value per line (see --help)
    echo "some text" | lmsan-guard DIR          one text per stdin line

Exit code 1 when any input was triggered, 0 when none was. Imports ``lmsan.runtime`` inside the
command and never torch or transformers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Iterator

import click

from lmsan.cli._common import CONTEXT_SETTINGS, EXIT_CLEAN, EXIT_FOUND, common_options, configure_logging, emit_json, run
from lmsan.runtime.removal import SEARCHES

CHUNK = 256  # inputs per scan_batch call


@click.command("lmsan-guard", context_settings=CONTEXT_SETTINGS)
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("texts", nargs=-1)
@click.option("--file", "input_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help='JSONL inputs: a string, ["text_a", "text_b"], or {"text": ...} / {"text_a": ..., "text_b": ...}.')
@click.option("--threshold", type=click.FloatRange(0.0, 1.0, max_open=True), default=None,
              help="T_match; default: the one in guard.json.")
@click.option("--provider", "providers", multiple=True, help="onnxruntime provider: cpu, cuda or tensorrt (repeatable).")
@click.option("--search", type=click.Choice(list(SEARCHES)), default="probe", show_default=True,
              help="Trigger-removal search: probe (saliency guess, then keep-only splitting: fewest calls and "
                   "tokens), bisect (fewest trials), code (two calls), group, batched, sequential (the reference). "
                   "All return the sequential answer where removing more words never re-triggers; "
                   "see docs/runtime.md.")
@click.option("--no-saliency", is_flag=True,
              help="probe: ignore the guard's saliency output (no first guess): more session calls, the same "
                   "removals where removing more words never re-triggers.")
@click.option("--no-sanitize", is_flag=True, help="Only detect; do not search for the trigger.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of results.")
@common_options
def guard(directory: Path, texts: tuple[str, ...], input_file: Path | None, threshold: float | None,
          providers: tuple[str, ...], search: str, no_saliency: bool, no_sanitize: bool, as_json: bool,
          verbose: int, quiet: bool, debug: bool) -> int:
    """Scan TEXTS (or --file, or stdin lines) with the guard in DIRECTORY.

    Triggered inputs get their trigger removed (method.md §4) unless --no-sanitize. Exit code 1
    if any input was triggered.
    """
    configure_logging(verbose, quiet)
    from lmsan.runtime import Guard

    inputs = list(_inputs(texts, input_file))
    if not inputs:
        raise click.UsageError("no input: give TEXT arguments, --file, or lines on stdin")
    scanner = Guard.load(directory, providers=list(providers) or None, threshold=threshold, search=search,
                         saliency=not no_saliency)
    results = []
    for first in range(0, len(inputs), CHUNK):
        results += scanner.scan_batch(inputs[first : first + CHUNK], sanitize=not no_sanitize)
    if as_json:
        emit_json([{"input": list(i) if isinstance(i, tuple) else i, **r.to_dict()} for i, r in zip(inputs, results)])
    else:
        for result in results:
            click.echo(_line(result))
    flagged = sum(r.triggered for r in results)
    if not quiet:
        click.echo(f"{flagged} of {len(results)} inputs triggered ({scanner.provider})", err=True)
    return EXIT_FOUND if flagged else EXIT_CLEAN


def _inputs(texts: tuple[str, ...], input_file: Path | None) -> Iterator[Any]:
    """Texts from arguments, else JSONL lines from --file, else stdin lines (blank ones skipped)."""
    from lmsan.errors import DataError

    if texts and input_file:
        raise click.UsageError("give TEXT arguments or --file, not both")
    if texts:
        yield from texts
        return
    if input_file:
        with open(input_file, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if line.strip():
                    yield _parse(line, f"{input_file}:{number}", DataError)
        return
    if sys.stdin is None or sys.stdin.isatty():
        return
    for line in sys.stdin:
        if line.strip():
            yield line.rstrip("\n")


def _parse(line: str, where: str, error: type) -> Any:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        raise error(f"{where}: not JSON ({exc.msg})") from exc
    if isinstance(value, dict):
        if "text" in value:
            return value["text"]
        if "text_a" in value and "text_b" in value:
            return (value["text_a"], value["text_b"])
        raise error(f"{where}: an object needs 'text' or 'text_a' and 'text_b'")
    if isinstance(value, list) and len(value) == 2:
        return (value[0], value[1])
    return value  # a string; anything else is refused by the guard's input check


def _line(result: Any) -> str:
    if not result.triggered:
        return f"clean\tmatch={result.match:.3f}"
    pv = f"pv={result.pv_index}"
    if result.rejected:
        return f"REJECTED\tmatch={result.match:.3f}\t{pv}"
    if result.sanitized is None:
        return f"TRIGGERED\tmatch={result.match:.3f}\t{pv}"
    sanitized = result.sanitized if isinstance(result.sanitized, str) else " [SEP] ".join(result.sanitized)
    return f"TRIGGERED\tmatch={result.match:.3f}\t{pv}\tremoved={'|'.join(result.removed)}\t{sanitized}"


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``lmsan-guard``."""
    run(guard, "lmsan-guard", argv)


if __name__ == "__main__":
    main()
