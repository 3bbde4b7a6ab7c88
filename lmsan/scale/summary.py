"""Per-model results of a many-model scan and the run's summary (``summary.json`` + ``summary.md``).

Both summary files are rewritten atomically after every finished model, so an interrupted run
keeps every result it had (models not finished yet are listed as ``pending``). Rendering for
humans (``markdown``) is kept apart from the data. Stdlib and lmsan core only: no torch, no ray.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lmsan import __version__
from lmsan.files import atomic_write_text, write_json
from lmsan.scale.plan import SUMMARY_JSON, SUMMARY_MD, ModelJob

SUMMARY_SCHEMA = 1
STATUSES = ("clean", "backdoored", "failed", "pending")


@dataclass(frozen=True)
class ModelResult:
    """What became of one model.

    Attributes:
        entry: the model as written in LIST; source: what was loaded (absolute path or hub id).
        dir: the scan directory relative to ``--out`` (``report.json``, ``pvs.safetensors``).
        status: ``clean`` / ``backdoored`` (the report's verdict), ``failed`` or ``pending``.
        pvs: PVs found (``K``), ``None`` unless clean or backdoored.
        seconds: wall seconds of the scan task in this run; for a skipped model, the earlier
            report's ``timings_s.total``; ``None`` when failed or pending.
        skipped: the scan was complete before this run (no task ran).
        resumed: the task continued a partial checkpoint (a run or a worker killed mid-scan).
        error: one line saying why the model failed, else ``None``.
    """

    entry: str
    source: str
    dir: str
    status: str
    pvs: int | None = None
    seconds: float | None = None
    skipped: bool = False
    resumed: bool = False
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["seconds"] = None if self.seconds is None else round(self.seconds, 3)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelResult":
        return cls(**data)


def from_report(job: ModelJob, report: dict[str, Any], *, seconds: float | None = None, skipped: bool = False,
                resumed: bool = False) -> ModelResult:
    """The result of a finished scan, read from its ``report.json`` payload.

    Args:
        seconds: the task's wall seconds; ``None`` takes the report's ``timings_s.total``.
    """
    if seconds is None:
        seconds = float(report.get("timings_s", {}).get("total", 0.0))
    return ModelResult(entry=job.entry, source=job.source, dir=job.rel_dir, status=report["verdict"],
                       pvs=int(report.get("pvs", {}).get("size", 0)), seconds=seconds, skipped=skipped,
                       resumed=resumed)


def failed(job: ModelJob, error: str, *, resumed: bool = False) -> ModelResult:
    """A model whose scan did not finish; ``error`` is cut to its first line."""
    first = error.strip().splitlines()[0] if error.strip() else "unknown error"
    return ModelResult(entry=job.entry, source=job.source, dir=job.rel_dir, status="failed", resumed=resumed,
                       error=first)


def pending(job: ModelJob) -> ModelResult:
    """A model not finished yet in this run."""
    return ModelResult(entry=job.entry, source=job.source, dir=job.rel_dir, status="pending")


def counts(results: list[ModelResult]) -> dict[str, int]:
    """``{status: count}`` for every status (zeros included) plus ``skipped`` and ``resumed``."""
    tally = dict.fromkeys(STATUSES, 0)
    for result in results:
        tally[result.status] += 1
    tally["skipped"] = sum(result.skipped for result in results)
    tally["resumed"] = sum(result.resumed for result in results)
    return tally


def build(results: list[ModelResult], *, list_path: str, settings: dict[str, Any], resources: dict[str, Any],
          wall_s: float) -> dict[str, Any]:
    """The ``summary.json`` payload.

    Args:
        results: one per model, in LIST order.
        list_path: the LIST file; settings: the result-affecting mining options (``check_settings``).
        resources: ``cpus_per_task``, ``gpus_per_task``, ``max_retries``, ``cluster``.
        wall_s: seconds since this run started.

    ``models_per_hour`` counts the models this run finished (clean or backdoored, not skipped)
    over ``wall_s``; ``seconds_per_verdict`` is their mean task time.
    """
    scanned = [r for r in results if r.status in ("clean", "backdoored") and not r.skipped]
    hours = wall_s / 3600.0
    return {
        "schema_version": SUMMARY_SCHEMA,
        "lmsan_version": __version__,
        "list": list_path,
        "settings": settings,
        "resources": resources,
        "counts": counts(results),
        "complete": not any(r.status == "pending" for r in results),
        "wall_s": round(wall_s, 3),
        "scanned": len(scanned),
        "models_per_hour": round(len(scanned) / hours, 1) if scanned and hours > 0 else None,
        "seconds_per_verdict": (round(sum(r.seconds or 0.0 for r in scanned) / len(scanned), 3)
                                if scanned else None),
        "models": [r.to_dict() for r in results],
    }


def markdown(summary: dict[str, Any]) -> str:
    """``summary.md``: one line of counts, then a table with one row per model."""
    c = summary["counts"]
    rate = summary["models_per_hour"]
    lines = [
        "# lmsan scan-many",
        "",
        f"{len(summary['models'])} model(s) from `{summary['list']}`: {c['backdoored']} backdoored, "
        f"{c['clean']} clean, {c['failed']} failed, {c['pending']} pending ({c['skipped']} done before this run, "
        f"{c['resumed']} resumed). "
        f"This run: {summary['scanned']} scanned in {summary['wall_s']:.1f} s"
        + (f" ({rate:.0f} models/hour)." if rate else "."),
        "",
        "| model | status | PVs | seconds | report | error |",
        "|---|---|---:|---:|---|---|",
    ]
    for m in summary["models"]:
        status = m["status"] + (" (skipped)" if m["skipped"] else "") + (" (resumed)" if m["resumed"] else "")
        pvs = "" if m["pvs"] is None else str(m["pvs"])
        seconds = "" if m["seconds"] is None else f"{m['seconds']:.1f}"
        error = (m["error"] or "").replace("|", "\\|")
        report = f"`{m['dir']}/report.json`" if m["status"] in ("clean", "backdoored") else ""
        lines.append(f"| `{m['entry']}` | {status} | {pvs} | {seconds} | {report} | {error} |")
    return "\n".join(lines) + "\n"


def write(out: str | Path, summary: dict[str, Any]) -> None:
    """Write ``summary.json`` and ``summary.md`` into ``out``, each atomically."""
    out = Path(out)
    write_json(out / SUMMARY_JSON, summary)
    atomic_write_text(out / SUMMARY_MD, markdown(summary))
