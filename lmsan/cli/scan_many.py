"""``lmsan scan-many``: scan many models on a Ray cluster, one task per model, resumable.

    lmsan scan-many LIST --out DIR --data SOURCE [mining options] [--ray ADDRESS | --num-cpus N]
                    [--cpus-per-task 1] [--gpus-per-task 0] [--max-retries 2] [--json]

Writes ``DIR/models/<name>/{report.json,pvs.safetensors}`` per model (what ``lmsan-mine`` writes)
and ``DIR/summary.{json,md}``, rewritten after every finished model. Exit 0 all clean, 1 some
backdoored (none failed), 2 some failed or an error, 4 usage. Ray and torch are imported inside
the command, so ``--help`` stays fast.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from pathlib import Path
from typing import Any

import click

from lmsan.cli._common import (
    CONTEXT_SETTINGS,
    EXIT_CLEAN,
    EXIT_ERROR,
    EXIT_FOUND,
    common_options,
    configure_logging,
    emit_json,
    run,
)

log = logging.getLogger("lmsan.cli.scan_many")  # not __name__: "__main__" under python -m


def _absolute(path: str | None) -> str | None:
    """An existing file's absolute path (Ray workers do not share the driver's cwd), else unchanged."""
    return str(Path(path).resolve()) if path is not None and Path(path).exists() else path


def build_mine_args(options: dict[str, Any]) -> tuple[str, ...]:
    """``lmsan-mine`` options from ``{option name without --: value}``; ``None`` and ``False`` are left out."""
    args: list[str] = []
    for name, value in options.items():
        if value is None or value is False:
            continue
        args.append(f"--{name}")
        if value is not True:
            args.append(str(value))
    return tuple(args)


def task_device(device: str, gpus_per_task: float) -> str:
    """The ``--device`` each task mines on: ``auto`` is ``cuda`` with GPUs reserved, else ``cpu``.

    Ray shows a task only the GPUs it reserved (as ``cuda:0``...), so a task without GPUs must
    not pick CUDA by itself, and ``cuda`` without a reservation has no GPU to use.

    Raises:
        click.UsageError: ``cuda`` without ``--gpus-per-task``, or ``cpu`` with it.
    """
    if device == "auto":
        return "cuda" if gpus_per_task > 0 else "cpu"
    if device == "cuda" and gpus_per_task <= 0:
        raise click.UsageError("--device cuda needs --gpus-per-task > 0 (Ray shows a task only the GPUs it reserves)")
    if device == "cpu" and gpus_per_task > 0:
        raise click.UsageError("--device cpu with --gpus-per-task > 0 would reserve GPUs no task uses")
    return device


@click.command("lmsan-scan-many", context_settings=CONTEXT_SETTINGS)
@click.argument("list_file", metavar="LIST", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Directory for models/<name>/ (one lmsan-mine --out per model) and summary.{json,md}.")
@click.option("--data", "source", required=True,
              help="Clean defense sentences for every model (as lmsan-mine --data).")
@click.option("--target", type=click.Choice(["cls", "mask", "token", "last"]), default=None,
              help="lmsan-mine --target.")
@click.option("--mode", type=click.Choice(["detect", "search"]), default=None, help="lmsan-mine --mode.")
@click.option("--loops", type=click.IntRange(min=1), default=None, help="lmsan-mine --loops.")
@click.option("--patience", type=click.IntRange(min=0), default=None, help="lmsan-mine --patience.")
@click.option("--profile", type=click.Choice(["default", "reference"]), default="default", show_default=True,
              help="lmsan-mine --profile.")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="lmsan-mine --config: JSON object of MiningConfig overrides.")
@click.option("--limit", type=click.IntRange(min=1), default=2000, show_default=True, help="lmsan-mine --limit.")
@click.option("--max-length", type=click.IntRange(min=4), default=None, help="lmsan-mine --max-length.")
@click.option("--allow-pickle", is_flag=True, help="lmsan-mine --allow-pickle (trusted models only).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="auto: cuda when --gpus-per-task > 0, else cpu.")
@click.option("--ray", "address", default=None, metavar="ADDRESS",
              help="Join this Ray cluster (host:port or 'auto') [default: start a local one].")
@click.option("--num-cpus", type=click.IntRange(min=1), default=None,
              help="CPUs of the local cluster [default: all of this machine's]; not with --ray.")
@click.option("--cpus-per-task", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Ray CPUs each model's task reserves.")
@click.option("--gpus-per-task", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Ray GPUs each task reserves (0.25: four scans share a GPU).")
@click.option("--max-retries", type=click.IntRange(min=0), default=2, show_default=True,
              help="Retries of a task whose worker process died; the retry resumes the scan's checkpoint.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch threads per task [default: --cpus-per-task, rounded down, at least 1].")
@click.option("--json", "as_json", is_flag=True, help="Print summary.json on stdout at the end.")
@common_options
def scan_many(list_file: str, out: str, source: str, target: str | None, mode: str | None, loops: int | None,
              patience: int | None, profile: str, config_file: str | None, limit: int, max_length: int | None,
              allow_pickle: bool, device: str, address: str | None, num_cpus: int | None, cpus_per_task: float,
              gpus_per_task: float, max_retries: int, threads: int | None, as_json: bool, verbose: int,
              quiet: bool, debug: bool) -> int:
    """Scan every model in LIST for backdoors, one Ray task per model.

    LIST holds one model directory or hub id per line (blank lines and '#' comments skipped;
    relative directories resolve against LIST's folder), or is a .json list of them. Each model
    is scanned exactly as `lmsan-mine MODEL ... --out DIR/models/<name>` would; the mining
    options are passed on. Models whose scan is complete in DIR are skipped (no task starts), a
    partial scan is resumed, and a failed model is reported without stopping the rest.
    Paths (LIST's models, --data and --config files, --out) must be readable at the same path on
    every Ray node.

    \b
    Examples:
      lmsan scan-many models.txt --out scans --data oanc                # local cluster, all CPUs
      lmsan scan-many models.txt --out scans --data oanc --num-cpus 8 --mode search
      lmsan scan-many models.json --out scans --data oanc --ray head:6379 --gpus-per-task 0.25

    Writes DIR/models/<name>/{report.json,pvs.safetensors} per model and DIR/summary.{json,md},
    rewritten after every finished model (docs/scan-many.md).

    Exit status: 0 all clean, 1 some backdoored and none failed, 2 some failed (or an error), 4 usage.
    """
    configure_logging(verbose, quiet)
    if address and num_cpus is not None:
        raise click.UsageError("--num-cpus sizes a local cluster; with --ray the cluster's own CPUs count")
    from lmsan.cli.mine import mining_config
    from lmsan.scale.plan import check_settings, plan
    from lmsan.scale.runner import Resources

    config = mining_config(profile, config_file, {"target": target, "mode": mode, "max_loops": loops,
                                                  "patience": patience, "max_length": max_length})
    settings = {"data": _absolute(source), "limit": limit, "allow_pickle": allow_pickle, "config": config.to_dict()}
    mine_args = build_mine_args({
        "data": _absolute(source), "target": target, "mode": mode, "loops": loops, "patience": patience,
        "profile": profile, "config": _absolute(config_file), "limit": limit, "max-length": max_length,
        "allow-pickle": allow_pickle, "device": task_device(device, gpus_per_task),
        "threads": threads or max(1, int(cpus_per_task))})
    resources = Resources(cpus_per_task=cpus_per_task, gpus_per_task=gpus_per_task, max_retries=max_retries)
    jobs = plan(list_file, out)
    check_settings(out, settings)
    Path(out).mkdir(parents=True, exist_ok=True)
    summary = _scan(jobs, mine_args, resources, out=Path(out), address=address, num_cpus=num_cpus,
                    meta={"list_path": str(Path(list_file).resolve()), "settings": settings},
                    progress=not quiet)
    if not quiet:
        for line in _final_lines(summary, out):
            click.echo(line, err=True)
    if as_json:
        emit_json(summary)
    counts = summary["counts"]
    return EXIT_ERROR if counts["failed"] else EXIT_FOUND if counts["backdoored"] else EXIT_CLEAN


def _scan(jobs: list, mine_args: tuple[str, ...], resources: Any, *, out: Path, address: str | None,
          num_cpus: int | None, meta: dict[str, Any], progress: bool) -> dict[str, Any]:
    """Skip the complete scans, run the rest on Ray, rewrite the summary after each; return it."""
    from lmsan.scale import summary as summaries
    from lmsan.scale.plan import finished_report

    start = time.perf_counter()
    results = {}
    for job in jobs:
        report = finished_report(job.out_dir)
        results[job.source] = (summaries.from_report(job, report, skipped=True) if report is not None
                               else summaries.pending(job))
    todo = [job for job in jobs if results[job.source].status == "pending"]
    info = {**meta, "resources": {"cpus_per_task": resources.cpus_per_task,
                                  "gpus_per_task": resources.gpus_per_task,
                                  "max_retries": resources.max_retries, "cluster": address or "local"}}

    def save() -> dict[str, Any]:
        summary = summaries.build(list(results.values()), wall_s=time.perf_counter() - start, **info)
        summaries.write(out, summary)
        return summary

    save()
    log.info("%d model(s): %d done before, %d to scan", len(jobs), len(jobs) - len(todo), len(todo))
    if not todo:
        return save()
    from tqdm import tqdm

    from lmsan.scale import runner

    bar = tqdm(total=len(todo), desc="models", unit="model", disable=None if progress else True, leave=False)

    def record(result: Any) -> None:
        results[result.source] = result
        save()
        bar.update(1)
        detail = f"error={result.error}" if result.error else f"pvs={result.pvs} seconds={result.seconds:.1f}"
        log.info("model=%s status=%s %s%s", result.entry, result.status, detail, " resumed" if result.resumed else "")

    # Ray's driver prints worker-death notices to sys.stdout; stdout carries results only
    with contextlib.redirect_stdout(sys.stderr):
        joined = runner.connect(address, num_cpus=num_cpus)
        try:
            runner.check_fits(resources, strict=joined and not address)
            runner.scan_all(todo, mine_args, resources, on_result=record)
        except KeyboardInterrupt:
            raise click.Abort() from None
        finally:
            bar.close()
            if joined:
                runner.disconnect()
    return save()


def _final_lines(summary: dict[str, Any], out: str) -> list[str]:
    """Human lines for stderr: the counts, each failure, where the summary is."""
    c = summary["counts"]
    rate = f", {summary['models_per_hour']:.0f} models/hour" if summary["models_per_hour"] else ""
    lines = [f"{len(summary['models'])} model(s): {c['backdoored']} backdoored, {c['clean']} clean, "
             f"{c['failed']} failed ({c['skipped']} done before, {summary['scanned']} scanned in "
             f"{summary['wall_s']:.1f}s{rate})"]
    lines += [f"failed: {m['entry']}: {m['error']}" for m in summary["models"] if m["status"] == "failed"]
    lines.append(f"wrote {Path(out) / 'summary.json'} and {Path(out) / 'summary.md'}")
    return lines


def main(argv: list[str] | None = None) -> None:
    """Console entry point (``lmsan scan-many``); exits once with the mapped code."""
    run(scan_many, "lmsan-scan-many", argv)


if __name__ == "__main__":
    main()
