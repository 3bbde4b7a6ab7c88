"""``lmsan-guard``: scan inputs with an exported guard, removing triggers.

    lmsan-guard DIR "some text" "more text"     scan the given texts
    lmsan-guard DIR --file inputs.jsonl         one JSON value per line (see --help)
    echo "some text" | lmsan-guard DIR          one text per stdin line

Exit code 2 when any input was bad (the others are still scanned and printed), else 1 when any
input was triggered, 0 when none was. Imports ``lmsan.runtime`` inside the command and never
torch or transformers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from lmsan.cli._common import (CONTEXT_SETTINGS, EXIT_CLEAN, EXIT_ERROR, EXIT_FOUND, common_options, configure_logging,
                               emit_json, run)
from lmsan.cli._inputs import Item, read_inputs
from lmsan.runtime.removal import GROW_MARGIN, MAX_TRIALS, SEARCHES

CHUNK = 256  # inputs per scan_batch call
SHOWN_TAGS = 40  # a token task's text line shows this many word/TAG pairs (--json has them all)


@click.command("lmsan-guard", context_settings=CONTEXT_SETTINGS)
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("texts", nargs=-1)
@click.option("--file", "input_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help='JSONL inputs: a string, ["text_a", "text_b"], or {"text": ...} / {"text_a": ..., "text_b": ...}.')
@click.option("--threshold", type=click.FloatRange(0.0, 1.0, max_open=True), default=None,
              help="T_match; default: the one in guard.json.")
@click.option("--expect-digest", metavar="HEX", default=None,
              help="Refuse any guard but the one whose guard.json digest this is (lmsan-export prints it).")
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
@click.option("--max-trials", type=click.IntRange(min=0), default=MAX_TRIALS, show_default=True,
              help="Work cap: most removal trials per input (0: no cap).")
@click.option("--time-budget", type=click.FloatRange(min=0.0, min_open=True), default=None,
              help="Work cap: seconds the removal of one batch of inputs may take (default: none).")
@click.option("--fail-open", is_flag=True,
              help="An input whose removal hits a work cap passes unsanitized (default: REJECTED).")
@click.option("--grow-margin", type=click.FloatRange(0.0, 1.0, max_open=True), default=GROW_MARGIN, show_default=True,
              help="Once a removal clears an input, also remove a word next to it when that lowers the flagging "
                   "PV's share of agreeing signs by at least this much more and the text left is still nearest "
                   "that PV, or when the guard flags that word alone on the same PV (the rest of a multi-word "
                   "trigger); 0: never.")
@click.option("--no-known-triggers", is_flag=True,
              help="Ignore the mined PVs' confirmed trigger spans (guard.json known_triggers): by default an "
                   "input holding one is triggered, and the words under it are removed wherever they occur.")
@click.option("--no-peel", is_flag=True,
              help="Reject an input that no window of up to 3 words clears (default: peel it: remove the word "
                   "that lowers the flagging PV's share most, with the rest of its trigger, and clean the text "
                   "left like any input, up to 2 peeled words: two triggers in one input, or topic words a PV "
                   "pulls), and grow a removal only into texts that no PV flags.")
@click.option("--task", "task", default=None, metavar="KEY",
              help="Which task a shared task guard answers (lmsan-export with several --task: each task's "
                   "directory name) [default: its first].")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of results.")
@common_options
def guard(directory: Path, texts: tuple[str, ...], input_file: Path | None, threshold: float | None,
          expect_digest: str | None, providers: tuple[str, ...], search: str, no_saliency: bool, no_sanitize: bool,
          max_trials: int, time_budget: float | None, fail_open: bool, grow_margin: float,
          no_known_triggers: bool, no_peel: bool, task: str | None, as_json: bool, verbose: int,
          quiet: bool, debug: bool) -> int:
    """Scan TEXTS (or --file, or stdin lines) with the guard in DIRECTORY.

    Triggered inputs get their trigger removed (method.md §4) unless --no-sanitize. One result per
    input, in order; a bad input (its file:line or argument number named) gets an error line and
    the others are still scanned. A task guard adds its answer for the (sanitized) input:
    label=NAME, or for a token task tags=word/TAG ... (the first 40 words; --json lists every
    word, tag and probability). Exit code 2 if any input was bad, else 1 if any was triggered.
    """
    configure_logging(verbose, quiet)
    from lmsan.runtime import Guard

    if texts and input_file:
        raise click.UsageError("give TEXT arguments or --file, not both")
    items = list(read_inputs(texts, input_file))
    if not items:
        raise click.UsageError("no input: give TEXT arguments, --file, or lines on stdin")
    scanner = Guard.load(directory, providers=list(providers) or None, threshold=threshold, search=search,
                         saliency=not no_saliency, expect_digest=expect_digest, max_trials=max_trials or None,
                         time_budget_s=time_budget, fail_open=fail_open, task=task,
                         grow_margin=grow_margin or None, known_triggers=not no_known_triggers, peel=not no_peel)
    results: list[Any] = []
    for first in range(0, len(items), CHUNK):
        results += _scan_chunk(scanner, items[first : first + CHUNK], sanitize=not no_sanitize)
    errors = [r for r in results if isinstance(r, Failed)]
    for failed in errors:
        click.echo(f"lmsan-guard: error: {failed.where}: {failed.reason}", err=True)
    if as_json:
        emit_json([_record(item, result) for item, result in zip(items, results)])
    else:
        for result in results:
            click.echo(f"ERROR\t{result.where}: {result.reason}" if isinstance(result, Failed) else _line(result))
    flagged = sum(not isinstance(r, Failed) and r.triggered for r in results)
    if not quiet:
        bad = f", {len(errors)} bad" if errors else ""
        click.echo(f"{flagged} of {len(results)} inputs triggered{bad} ({scanner.provider})", err=True)
    return EXIT_ERROR if errors else EXIT_FOUND if flagged else EXIT_CLEAN


@dataclass(frozen=True)
class Failed:
    """The answer for a bad input."""

    where: str
    reason: str


def _scan_chunk(scanner: Any, items: list[Item], *, sanitize: bool) -> list[Any]:
    """Scan ``items`` in one batch; a bad input becomes a ``Failed`` and the rest are rescanned
    (one ``scan_batch`` call per bad input found, plus one)."""
    from lmsan.errors import InputError

    results: list[Any] = [Failed(item.where, item.error) if item.error else None for item in items]
    todo = [i for i, result in enumerate(results) if result is None]
    while todo:
        try:
            found = scanner.scan_batch([items[i].value for i in todo], sanitize=sanitize)
        except InputError as exc:
            if exc.index is None:
                raise
            bad = todo.pop(exc.index)
            results[bad] = Failed(items[bad].where, exc.reason)
            continue
        for i, result in zip(todo, found):
            results[i] = result
        break
    return results


def _record(item: Item, result: Any) -> dict[str, Any]:
    value = list(item.value) if isinstance(item.value, tuple) else item.value
    if isinstance(result, Failed):
        return {"input": value, "where": item.where, "error": result.reason}
    return {"input": value, "where": item.where, **result.to_dict()}


def _answer(result: Any) -> str:
    """A task guard's answer as a tab-led field: ``label=NAME``, or a token task's ``tags=word/TAG ...``
    (the first ``SHOWN_TAGS`` words, then ``…(+N)``); empty without one."""
    if result.prediction is None:
        return ""
    if result.words is None:
        return f"\tlabel={result.prediction}"
    pairs = [f"{word}/{tag}" for word, tag in zip(result.words, result.prediction)]
    more = f" …(+{len(pairs) - SHOWN_TAGS})" if len(pairs) > SHOWN_TAGS else ""
    return f"\ttags={' '.join(pairs[:SHOWN_TAGS])}{more}"


def _line(result: Any) -> str:
    """One tab-separated line per input; a task guard's answer follows the verdict (``_answer``)."""
    label = _answer(result)
    if not result.triggered:
        return f"clean\tmatch={result.match:.3f}{label}"
    pv = f"pv={result.pv_index}"
    if result.rejected:
        return f"REJECTED\tmatch={result.match:.3f}\t{pv}\treason={result.reason}"
    if result.sanitized is None:
        return f"TRIGGERED\tmatch={result.match:.3f}\t{pv}"
    sanitized = result.sanitized if isinstance(result.sanitized, str) else " [SEP] ".join(result.sanitized)
    reason = f"\treason={result.reason}" if result.reason else ""  # passed unsanitized (fail open)
    known = f"\tknown={'|'.join(result.known_triggers)}" if result.known_triggers else ""
    return (f"TRIGGERED\tmatch={result.match:.3f}\t{pv}{label}\tremoved={'|'.join(result.removed)}{known}{reason}"
            f"\t{sanitized}")


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``lmsan-guard``."""
    run(guard, "lmsan-guard", argv)


if __name__ == "__main__":
    main()
