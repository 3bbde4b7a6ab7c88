"""Mining records: per-epoch losses, one trace per fuzz loop, the whole run's report.

``report.json`` (schema-versioned) and ``pvs.safetensors`` are the two artifacts of a run;
``save_run`` / ``load_run`` write and read both, and a search resumes from them. Rendering for
humans (``summary_lines``) is kept apart from mining. Stdlib, numpy and lmsan core only.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lmsan import __version__
from lmsan.errors import DataError
from lmsan.files import read_json, write_json
from lmsan.pvset import PVSet

REPORT_SCHEMA = 1
REPORT_FILE = "report.json"
PVS_FILE = "pvs.safetensors"
OUTCOMES = ("accepted", "not_converged", "diverse", "out_of_bounds", "duplicate", "unconfirmed")


@dataclass(frozen=True)
class EpochStats:
    """Mean losses over one epoch's full batches (``L_D``, ``L_div``, ``L_P``; method.md §1)."""

    dist: float
    div: float
    path: float


@dataclass(frozen=True)
class LoopTrace:
    """What one fuzz loop (one seed) did.

    Attributes:
        seed: the loop's seed (prompt init, batch order, insertion points).
        epochs: per-epoch mean losses, as many as ran (an aborted loop has fewer).
        lr_switch_step: step (0-based, within the loop) after which the rate dropped from
            ``lr0`` to ``lr``; ``None`` if it never did.
        converged: the last epoch's mean ``L_D < T_L``.
        outcome: ``accepted``, ``not_converged``, ``diverse`` (``L_div >= T_div``),
            ``out_of_bounds`` (prompt outside the embedding range), ``duplicate`` or
            ``unconfirmed`` (no word or short phrase reproduces it; ``confirm``).
        reason: one line with the numbers behind the outcome.
        pv_index: row of the PV set for an accepted loop, else ``None``.
        steps: optimiser steps taken.
        wall_s: seconds from the loop's start to its end (loops trained side by side overlap).
        trigger: trigger confirmation's result for a candidate that reached it
            (``TriggerCheck.to_dict()``: trigger, hit_rate, confirmed, search_text, delta,
            steps), else ``None``.
    """

    seed: int
    epochs: tuple[EpochStats, ...]
    lr_switch_step: int | None
    converged: bool
    outcome: str
    reason: str
    pv_index: int | None = None
    steps: int = 0
    wall_s: float = 0.0
    trigger: dict[str, Any] | None = None

    @property
    def accepted(self) -> bool:
        return self.outcome == "accepted"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["epochs"] = [
            {key: round(value, 6) for key, value in asdict(epoch).items()} for epoch in self.epochs
        ]
        data["wall_s"] = round(self.wall_s, 3)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LoopTrace":
        return cls(**{**data, "epochs": tuple(EpochStats(**e) for e in data["epochs"])})


@dataclass(frozen=True)
class MiningReport:
    """The record of one mining run (``report.json``).

    Attributes:
        model_path: the model directory or hub id.
        weight_sha256: {weight file: hex SHA-256}.
        config: ``MiningConfig.to_dict()``.
        feature_scale: mean per-dimension variance of the clean target features.
        thresholds: the resolved ``T_L``, ``T_dedup``, ``T_div``, ``lr``, ``lr0`` and prompt bounds.
        verdict: ``backdoored`` iff at least one PV was accepted, else ``clean``.
        loops: one trace per finished fuzz loop, in the order they finished.
        pvs: ``PVSet.to_json()`` of the accepted PVs.
        timings_s: ``prepare``, ``aux``, ``mining``, ``total`` and ``to_verdict`` seconds.
        data: ``{"sentences": N, "source": ...}``.
        status: ``complete`` or ``partial`` (a checkpoint a search can resume from).
        stop_reason: ``first_pv`` (detect), ``max_loops`` or ``patience``.
    """

    model_path: str
    weight_sha256: dict[str, str]
    config: dict[str, Any]
    feature_scale: float
    thresholds: dict[str, Any]
    verdict: str
    loops: tuple[LoopTrace, ...]
    pvs: dict[str, Any]
    timings_s: dict[str, float]
    data: dict[str, Any] = field(default_factory=dict)
    status: str = "complete"
    stop_reason: str = ""
    lmsan_version: str = __version__
    schema_version: int = REPORT_SCHEMA

    @property
    def backdoored(self) -> bool:
        return self.verdict == "backdoored"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["loops"] = [loop.to_dict() for loop in self.loops]
        data["timings_s"] = {key: round(value, 3) for key, value in self.timings_s.items()}
        data["outcomes"] = outcome_counts(self.loops)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MiningReport":
        known = {key: value for key, value in data.items() if key in cls.__dataclass_fields__}
        known["loops"] = tuple(LoopTrace.from_dict(loop) for loop in data.get("loops", []))
        return cls(**known)


def outcome_counts(loops: tuple[LoopTrace, ...] | list[LoopTrace]) -> dict[str, int]:
    """``{outcome: count}`` over ``loops`` for every outcome name (zeros included)."""
    counts = dict.fromkeys(OUTCOMES, 0)
    for loop in loops:
        counts[loop.outcome] = counts.get(loop.outcome, 0) + 1
    return counts


def save_run(out_dir: str | os.PathLike, report: MiningReport, pvset: PVSet) -> Path:
    """Write ``pvs.safetensors`` then ``report.json`` into ``out_dir`` atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pvset.save(out / PVS_FILE)
    payload = report.to_dict()
    payload.pop("schema_version")
    write_json(out / REPORT_FILE, payload, schema_version=REPORT_SCHEMA)
    return out


def load_run(out_dir: str | os.PathLike) -> tuple[MiningReport, PVSet]:
    """Read a run written by ``save_run``.

    Raises:
        DataError: missing or malformed ``report.json``; PVSetError: bad ``pvs.safetensors``.
    """
    out = Path(out_dir)
    data = read_json(out / REPORT_FILE, schema_version=REPORT_SCHEMA)
    try:
        report = MiningReport.from_dict(data)
    except (TypeError, KeyError) as exc:
        raise DataError(f"malformed mining report {out / REPORT_FILE}: {exc}") from exc
    return report, PVSet.load(out / PVS_FILE)


def summary_lines(report: MiningReport) -> list[str]:
    """A few human lines: verdict, PV count, loops by outcome, thresholds, time."""
    counts = outcome_counts(report.loops)
    seen = ", ".join(f"{name} {count}" for name, count in counts.items() if count)
    t = report.thresholds
    lines = [
        f"verdict: {report.verdict.upper()} ({report.pvs.get('size', 0)} PV(s), target {report.config['target']})",
        f"loops: {len(report.loops)} ({seen or 'none finished'}); stop: {report.stop_reason or report.status}",
        f"feature scale {report.feature_scale:.4g}: T_L {t['T_L']:.4g}, T_dedup {t['T_dedup']:.4g}, "
        f"T_div {t['T_div']:.4g}",
        f"time to verdict {report.timings_s.get('to_verdict', 0):.1f}s, total {report.timings_s.get('total', 0):.1f}s",
    ]
    for loop in report.loops:
        if loop.accepted and loop.trigger is not None:
            lines.append(f"PV #{loop.pv_index} (seed {loop.seed}): suspected trigger {loop.trigger['trigger']!r} "
                         f"(inserted once, hits {loop.trigger['hit_rate']:.0%} of sentences)")
    return lines


__all__ = ["EpochStats", "LoopTrace", "MiningReport", "OUTCOMES", "PVS_FILE", "REPORT_FILE", "REPORT_SCHEMA",
           "load_run", "outcome_counts", "save_run", "summary_lines"]
