"""Scan one model the way ``lmsan-mine`` does: the code that runs inside each Ray task.

``scan_one`` calls the ``lmsan-mine`` click command in-process with the run's mining options and
``--out <scan directory>``, so a task's ``report.json`` and ``pvs.safetensors`` are exactly what
``lmsan-mine MODEL ... --out DIR`` writes. A task that finds a partial checkpoint (its worker was
killed, or an earlier run was interrupted) passes ``--resume`` and continues after the last
finished fuzz loop, ending as an uninterrupted scan would. A model that cannot be scanned comes
back as a ``failed`` result with one error line; ``scan_one`` never raises for it.

While a task runs, its scan directory holds ``worker.json`` (host, pid, start time) naming the
process doing the work; a worker killed mid-scan leaves it behind until the retry replaces it.

No ray import (the runner wraps this); torch loads inside ``lmsan-mine``.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path

from lmsan.errors import LmsanError
from lmsan.files import read_json, write_json
from lmsan.mining.report import PENDING_FILE, PVS_FILE, REPORT_FILE, REPORT_SCHEMA, load_run
from lmsan.scale.plan import ModelJob
from lmsan.scale.summary import ModelResult, failed, from_report

log = logging.getLogger(__name__)

WORKER_FILE = "worker.json"


def checkpoint_flag(out_dir: Path) -> list[str]:
    """``lmsan-mine``'s flag for the state of ``out_dir``.

    Returns:
        ``["--resume"]`` when a partial checkpoint can be continued, ``["--force"]`` when the
        directory holds an unusable one (a save killed before its first report, or a pair that
        does not load: it is scanned from scratch), else ``[]``.
    """
    if (out_dir / REPORT_FILE).exists():
        try:
            report, _ = load_run(out_dir)
        except LmsanError as exc:
            log.warning("%s: cannot resume (%s): scanning from scratch", out_dir, exc)
            return ["--force"]
        return ["--resume"] if report.status == "partial" else ["--force"]
    if (out_dir / PVS_FILE).exists() or (out_dir / PENDING_FILE).exists():
        return ["--force"]
    return []


def scan_one(job: ModelJob, mine_args: tuple[str, ...]) -> ModelResult:
    """Run ``lmsan-mine job.source *mine_args --out job.out_dir -q`` in this process.

    Args:
        job: the model and its scan directory.
        mine_args: ``lmsan-mine`` options shared by every model (``--data``, ``--mode``, ...,
            ``--device``, ``--threads``), already validated by the CLI.

    Returns:
        ``clean`` / ``backdoored`` with the PV count and the task's wall seconds, or ``failed``
        with the error line ``lmsan-mine`` would have printed.
    """
    import click

    from lmsan.cli.mine import mine

    out_dir = Path(job.out_dir)
    start = time.perf_counter()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(out_dir / WORKER_FILE, {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()})
        flag = checkpoint_flag(out_dir)
    except OSError as exc:
        return failed(job, f"cannot write the scan directory {out_dir}: {exc}")
    resumed = flag == ["--resume"]
    log.info("scanning %s into %s%s", job.source, out_dir, " (resuming)" if resumed else "")
    try:
        mine.main(args=[job.source, *mine_args, "--out", str(out_dir), *flag, "-q"], prog_name="lmsan-mine",
                  standalone_mode=False)
        report = read_json(out_dir / REPORT_FILE, schema_version=REPORT_SCHEMA)
    except click.ClickException as exc:  # usage errors the CLI's early checks did not catch
        return failed(job, exc.format_message(), resumed=resumed)
    except (LmsanError, OSError) as exc:
        return failed(job, str(exc), resumed=resumed)
    except Exception as exc:  # noqa: BLE001 - one model's failure never stops the others
        return failed(job, f"unexpected {type(exc).__name__}: {exc}", resumed=resumed)
    finally:
        (out_dir / WORKER_FILE).unlink(missing_ok=True)
    return from_report(job, report, seconds=time.perf_counter() - start, resumed=resumed)
