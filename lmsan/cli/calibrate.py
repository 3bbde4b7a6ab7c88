"""``lmsan-calibrate``: give each PV of a guard its own threshold, from clean inputs.

    lmsan-calibrate DIR --file clean.jsonl          calibrate on a sample of clean traffic
    lmsan-calibrate DIR --file clean.jsonl --dry-run   print the thresholds, write nothing
    lmsan-calibrate DIR --reset                     back to T_match for every PV

Inputs are read as ``lmsan-guard`` reads them (TEXT arguments, a JSONL ``--file``, or stdin
lines); any bad one stops the calibration (exit 2, its place named), so no input is silently
left out. The thresholds go into the guard's ``guard.json`` with a new digest (printed: pin it
with ``lmsan-guard --expect-digest``). Torch-free, like ``lmsan-guard``.
"""

from __future__ import annotations

from pathlib import Path

import click

from lmsan.cli._common import CONTEXT_SETTINGS, EXIT_CLEAN, common_options, configure_logging, emit_json, run
from lmsan.cli._inputs import read_inputs

DEFAULT_QUANTILE = 0.99  # lmsan.runtime.calibrate (not imported: --help stays fast)
DEFAULT_CAP = 0.9


@click.command("lmsan-calibrate", context_settings=CONTEXT_SETTINGS)
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("texts", nargs=-1)
@click.option("--file", "input_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSONL clean inputs: a JSON string, {\"text\": ...}, {\"text_a\": ..., \"text_b\": ...} or "
                   "[a, b] per line. Without TEXTs or --file: one text per stdin line.")
@click.option("--quantile", type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True), default=DEFAULT_QUANTILE,
              show_default=True,
              help="Each PV's threshold is this quantile of the clean inputs' shares of agreeing signs with it "
                   "(about 1 - QUANTILE of such inputs flag each raised PV); a PV flags above the larger of T_match and "
                   "its threshold. Needs more than 1 / (1 - QUANTILE) inputs (101 at 0.99).")
@click.option("--cap", type=click.FloatRange(0.0, 1.0, min_open=True), default=DEFAULT_CAP, show_default=True,
              help="Highest threshold calibration may set. Clean inputs that reach a PV harder are the backdoor "
                   "firing on a natural word or triggered inputs in the sample: those PVs stay at the cap (warned).")
@click.option("--task", "task", default=None, metavar="KEY", help="A shared task guard's task to read with.")
@click.option("--dry-run", is_flag=True, help="Compute and print the thresholds; leave guard.json as it is.")
@click.option("--reset", is_flag=True, help="Remove the calibration: every PV flags above T_match again.")
@click.option("--json", "as_json", is_flag=True, help="Print the calibration (and the new digest) as JSON.")
@common_options
def calibrate(directory: Path, texts: tuple[str, ...], input_file: Path | None, quantile: float, cap: float,
              task: str | None, dry_run: bool, reset: bool, as_json: bool, verbose: int, quiet: bool,
              debug: bool) -> int:
    """Calibrate the per-PV thresholds of the guard in DIRECTORY on clean TEXTS (or --file, or stdin).

    T_match is one number for every PV; a PV that many clean inputs come near flags them, and the
    guard edits or rejects them. Calibration raises such a PV's threshold to the QUANTILE of the
    clean inputs' shares (never below T_match, never above --cap), trading some detection for
    fewer false flags. Use inputs the guard will see, as it will see them. Exit code 0, or 2 for a
    bad input (nothing is written), 4 for a usage error.
    """
    configure_logging(verbose, quiet)
    from lmsan.errors import InputError
    from lmsan.runtime import Guard
    from lmsan.runtime.calibrate import calibrate as calibrate_guard
    from lmsan.runtime.calibrate import write_calibration

    if reset:
        if texts or input_file or dry_run:
            raise click.UsageError("--reset takes no inputs and no --dry-run")
        digest = write_calibration(directory, None)
        _report({"calibration": None, "digest": digest}, as_json)
        return EXIT_CLEAN
    if texts and input_file:
        raise click.UsageError("give TEXT arguments or --file, not both")
    items = list(read_inputs(texts, input_file))
    bad = next((item for item in items if item.error), None)
    if bad is not None:
        raise InputError(f"{bad.where}: {bad.error} (nothing written)")
    if not items:
        raise click.UsageError("no input: give TEXT arguments, --file, or lines on stdin")
    guard = Guard.load(directory, task=task, grow_margin=None)
    try:
        found = calibrate_guard(guard, [item.value for item in items], quantile=quantile, cap=cap)
    except InputError as exc:
        if exc.index is None:
            raise
        raise InputError(f"{items[exc.index].where}: {exc.reason} (nothing written)") from exc
    digest = None if dry_run else write_calibration(directory, found)
    _report({"calibration": found.to_dict(), "digest": digest}, as_json)
    return EXIT_CLEAN


def _report(outcome: dict, as_json: bool) -> None:
    """The outcome: JSON on stdout, or a summary on stderr and the new digest on stdout."""
    if as_json:
        emit_json(outcome)
        return
    found = outcome["calibration"]
    if found is None:
        click.echo("calibration removed: every PV flags above T_match", err=True)
    else:
        thresholds = " ".join(f"{max(t, found['threshold']):.3f}" for t in found["pv_thresholds"])
        click.echo(f"PV thresholds at T_match {found['threshold']:.3f} (cap {found['cap']:.3f}): {thresholds}", err=True)
        click.echo(f"clean inputs flagged: {100 * found['flagged_before']:.1f} % at T_match -> "
                   f"{100 * found['flagged_after']:.1f} % calibrated ({found['inputs']} inputs)", err=True)
        if found["capped"]:
            click.echo(f"PVs at the cap: {found['capped']} (see the warning above)", err=True)
    if outcome["digest"] is None:
        click.echo("dry run: guard.json unchanged", err=True)
    else:
        click.echo(outcome["digest"])
        click.echo("new digest above (pin it: lmsan-guard --expect-digest)", err=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``lmsan-calibrate``."""
    run(calibrate, "lmsan-calibrate", argv)


if __name__ == "__main__":
    main()
