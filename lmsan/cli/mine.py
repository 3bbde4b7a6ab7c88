"""``lmsan-mine``: decide whether a model hides task-agnostic backdoors and recover its PVs.

    lmsan-mine MODEL --data SOURCE [--target cls|mask|token|last] [--mode detect|search]
               [--loops N] [--patience N] [--profile default|reference] [--config FILE]
               [--device auto|cpu|cuda|cuda:N] [--out DIR [--resume | --force]] [--json]

Writes ``DIR/pvs.safetensors`` and ``DIR/report.json`` (checkpointed after every fuzz loop, so
``--resume`` continues an interrupted search; a DIR holding an earlier run is refused without
``--resume`` or ``--force``). Exit 0 clean, 1 backdoored, 2 error, 4 usage.
Torch is imported inside the command, so ``--help`` stays fast.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import click

from lmsan.cli._common import (
    CONTEXT_SETTINGS,
    EXIT_CLEAN,
    EXIT_FOUND,
    common_options,
    config_overrides,
    configure_logging,
    emit_json,
    run,
)
from lmsan.errors import ConfigError, DataError


def _prepare_out_dir(out: str, *, resume: bool, force: bool) -> tuple[Path, list[Path]]:
    """Check ``--out`` before any slow work: refuse to overwrite an earlier run, prove it writable.

    Returns:
        The directory and the directories this call created (deepest first): the caller removes
        them again (``_remove_empty``) when the run fails before writing anything.

    Raises:
        FileExistsError: ``out`` holds ``report.json`` or ``pvs.safetensors`` and neither
            ``resume`` nor ``force`` is set. OSError: ``out`` is not a writable directory.
    """
    from lmsan.mining.report import PENDING_FILE, PVS_FILE, REPORT_FILE

    path = Path(out)
    earlier = [name for name in (REPORT_FILE, PVS_FILE, PENDING_FILE) if (path / name).exists()]
    if earlier and not (resume or force):
        raise FileExistsError(f"--out {out} holds an earlier run ({earlier[0]}): pass --resume to continue it "
                              "or --force to replace it")
    created = [p for p in (path, *path.parents) if not p.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".lmsan-write-test-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        _remove_empty(created)
        raise OSError(f"cannot write to --out {out}: {exc.strerror or exc}") from exc
    return path, created


def _remove_empty(directories: list[Path]) -> None:
    """Remove the directories a failed start created, deepest first; never one with files in it."""
    for directory in directories:
        try:
            directory.rmdir()
        except OSError:
            return


# Options that set a MiningConfig key: option -> key.
CONFIG_OPTIONS = {"--target": "target", "--mode": "mode", "--loops": "max_loops", "--patience": "patience",
                  "--max-length": "max_length"}


def mining_config(profile: str, config_file: str | None, options: dict[str, Any]) -> Any:
    """Build the run's ``MiningConfig`` from the profile, ``--config`` and the options given.

    An option given (not ``None``) whose key ``--config`` sets to another value is an error:
    neither silently wins. Keys neither sets keep the profile's value; ``patience`` defaults to
    200 in search mode (the paper: 200 loops without a new PV keep 90.5% recall).

    Args:
        profile: ``default`` or ``reference``.
        config_file: path of the ``--config`` JSON object, or ``None``.
        options: ``{config key: value or None}`` for the keys in ``CONFIG_OPTIONS``.

    Raises:
        ConfigError: unreadable ``--config``, a conflict, or an invalid value.
    """
    from lmsan.mining import MiningConfig

    overrides = config_overrides(config_file, options, CONFIG_OPTIONS)
    config = MiningConfig.profile(profile, **overrides)
    if config.mode == "search" and "patience" not in overrides:
        config = config.replace(patience=200)
    return config


class _Bars:
    """One tqdm bar per running fuzz loop (hidden off a TTY), fed by the miner's callbacks."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bars: dict[int, Any] = {}

    def step(self, info: Any) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        bar = self.bars.get(info.seed)
        if bar is None:
            bar = tqdm(total=info.total, desc=f"loop seed={info.seed}", position=info.slot, leave=False,
                       disable=None, unit="step", dynamic_ncols=True)
            self.bars[info.seed] = bar
        bar.update(1)
        if info.step % 5 == 0 or info.step == 1:
            bar.set_postfix_str(f"ep {info.epoch + 1} L_D {info.dist:.4g} L_div {info.div:.4g} L_P {info.path:.3g}",
                                refresh=False)

    def loop(self, trace: Any) -> None:
        bar = self.bars.pop(trace.seed, None)
        if bar is not None:
            bar.close()
        if self.enabled:
            click.echo(f"seed {trace.seed}: {trace.outcome} ({trace.reason})", err=True)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()


@click.command("lmsan-mine", context_settings=CONTEXT_SETTINGS)
@click.argument("model")
@click.option("--data", "source", required=True,
              help="Clean defense sentences: oanc, bbcnews, polarity, sms-spam, a .txt/.csv/.tsv/.jsonl file, "
                   "or hf:NAME[:CONFIG][@SPLIT].")
@click.option("--target", type=click.Choice(["cls", "mask", "token", "last"]), default=None,
              help="Output position the PVs live at (mask: BToP / P-tuning; last: summary token last) "
                   "[default: --config's target, else cls].")
@click.option("--mode", type=click.Choice(["detect", "search"]), default=None,
              help="detect stops at the first PV; search collects PVs [default: --config's mode, else detect].")
@click.option("--loops", type=click.IntRange(min=1), default=None,
              help="L_max, fuzz loops to try [default: 10 detect after the trigger sweep, 30 without it, 1000 search].")
@click.option("--patience", type=click.IntRange(min=0), default=None,
              help="search: stop after N loops in a row without a new PV (0: never) [default: 200 in search].")
@click.option("--profile", type=click.Choice(["default", "reference"]), default="default", show_default=True,
              help="reference reproduces the authors' code.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="JSON object of MiningConfig overrides (unknown keys, wrong types and values that "
                   "contradict an option given are errors).")
@click.option("--limit", type=click.IntRange(min=1), default=2000, show_default=True, help="Sentences to use.")
@click.option("--max-length", type=click.IntRange(min=4), default=None,
              help="Tokens per sentence before the prompt [default: 64].")
@click.option("--device", default="auto", show_default=True,
              help="torch device: auto (cuda when available, else cpu), cpu, cuda or cuda:N.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch CPU threads [default: torch's].")
@click.option("--out", type=click.Path(), default=None, help="Directory for pvs.safetensors and report.json.")
@click.option("--resume", is_flag=True, help="Continue the run checkpointed in --out.")
@click.option("--force", is_flag=True, help="Replace the earlier run in --out (refused otherwise).")
@click.option("--allow-pickle", is_flag=True, help="Also load pickle (.bin) weights; only for trusted models.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@common_options
def mine(model: str, source: str, target: str | None, mode: str | None, loops: int | None, patience: int | None,
         profile: str, config_file: str | None, limit: int, max_length: int | None, device: str,
         threads: int | None, out: str | None, resume: bool, force: bool, allow_pickle: bool, as_json: bool,
         verbose: int, quiet: bool, debug: bool) -> int:
    """Mine pre-defined vectors (PVs) from MODEL (a local directory or hub id).

    Exit status: 0 clean, 1 backdoored, 2 error, 4 usage.
    """
    configure_logging(verbose, quiet)
    if (resume or force) and out is None:
        raise click.UsageError(f"{'--resume' if resume else '--force'} needs --out DIR")
    if resume and force:
        raise click.UsageError("--resume continues the run in --out, --force replaces it: choose one")
    config = mining_config(profile, config_file, {"target": target, "mode": mode, "max_loops": loops,
                                                  "patience": patience, "max_length": max_length})
    from lmsan.models.checks import resolve_device

    device = resolve_device(device)
    out_dir, created = _prepare_out_dir(out, resume=resume, force=force) if out is not None else (None, [])
    try:
        return _run(model, source, config, limit=limit, device=device, threads=threads, out_dir=out_dir,
                    resume=resume, allow_pickle=allow_pickle, as_json=as_json, quiet=quiet)
    except BaseException:
        _remove_empty(created)  # a failed start leaves no empty --out behind
        raise


def _run(model: str, source: str, config: Any, *, limit: int, device: str, threads: int | None,
         out_dir: Path | None, resume: bool, allow_pickle: bool, as_json: bool, quiet: bool) -> int:
    """Load the data and the model, mine, checkpoint into ``out_dir`` and report; returns the exit code."""
    from lmsan.mining import load_run, save_run, summary_lines

    previous = load_run(out_dir) if resume and out_dir is not None else None

    from lmsan.data import load_sentences

    sentences = load_sentences(source, limit=limit)
    if len(sentences) < config.batch_size:
        raise DataError(f"{source} gives {len(sentences)} sentences; mining needs at least one batch "
                        f"({config.batch_size})")
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    from lmsan.mining.search import mine as run_mining
    from lmsan.models import load_model

    loaded = load_model(model, allow_pickle=allow_pickle, device=device)
    bars = _Bars(enabled=not quiet)

    def checkpoint(result: Any) -> None:
        if out_dir is not None:
            save_run(out_dir, result.report, result.pvset)

    try:
        result = run_mining(loaded, sentences, config, resume=previous, on_loop=bars.loop, on_step=bars.step,
                            checkpoint=checkpoint, source=str(source))
    finally:
        bars.close()
    report = result.report
    if not quiet:
        for line in summary_lines(report):
            click.echo(line, err=True)
        if out_dir is not None:
            click.echo(f"wrote {out_dir / 'pvs.safetensors'} and {out_dir / 'report.json'}", err=True)
    if as_json:
        emit_json(report.to_dict())
    return EXIT_FOUND if report.backdoored else EXIT_CLEAN


def main(argv: list[str] | None = None) -> None:
    """Console entry point of ``lmsan-mine``; exits once with the mapped code."""
    run(mine, "lmsan-mine", argv)


if __name__ == "__main__":
    main()
