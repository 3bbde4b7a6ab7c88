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

import numpy as np

from lmsan import __version__
from lmsan.errors import DataError
from lmsan.files import read_json, sha256_file, write_json
from lmsan.pvset import PVSet

REPORT_SCHEMA = 1
REPORT_FILE = "report.json"
PVS_FILE = "pvs.safetensors"
PENDING_FILE = PVS_FILE + ".pending"  # the next PV set, until its report is written (save_run)
OUTCOMES = ("accepted", "not_converged", "diverse", "out_of_bounds", "duplicate", "unconfirmed", "natural")


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
            ``unconfirmed`` (no word or short phrase reproduces it; ``confirm``) or ``natural``
            (more than ``max_clean_overlap`` of clean sentences already match the PV).
        reason: one line with the numbers behind the outcome.
        pv_index: row of the PV set for an accepted loop, else ``None``.
        steps: optimiser steps taken.
        wall_s: seconds from the loop's start to its end (loops trained side by side overlap).
        trigger: trigger confirmation's result for a candidate that reached it
            (``TriggerCheck.to_dict()``: trigger, token_ids, hit_rate, hit_rows, confirmed,
            search_text, delta, steps), else ``None``.
        basin: float32 [d] as floats, the soft prompt's output this loop added to the set the path
            loss repels later loops from (with trigger confirmation it differs from the PV), else
            ``None``. Checkpointed so that a resumed search trains exactly like an uninterrupted one.
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
    basin: tuple[float, ...] | None = None

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
        basin = data.get("basin")
        return cls(**{**data, "epochs": tuple(EpochStats(**e) for e in data["epochs"]),
                      "basin": None if basin is None else tuple(basin)})


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
        sweep: ``SweepResult.to_dict()`` of the trigger sweep (``None`` when it did not run).
        pv_sources: one entry per PV, in PV order: ``{"pv_index", "method": "sweep" |
            "soft_prompt", "trigger", "hit_rate", "seed", "loops_done", "at_s", "clean_overlap"}``
            (which method found it, its text, how many fuzz loops and seconds into the run, and
            the share of clean sentences already matching it; reports before the natural-vector
            filter lack the last).
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
    sweep: dict[str, Any] | None = None
    pv_sources: tuple[dict[str, Any], ...] = ()
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
        known["pv_sources"] = tuple(data.get("pv_sources", ()))
        return cls(**known)


def repelled_basins(loops: tuple[LoopTrace, ...] | list[LoopTrace], pvset: PVSet) -> np.ndarray:
    """The outputs the path loss repels after ``loops`` (each one's ``basin``, in order): float32 [K', d].

    No loops yet: nothing (``[0, d]``). A checkpoint written before loops recorded their basin
    (loops, none with a basin) falls back to the PV set's vectors.
    """
    rows = [loop.basin for loop in loops if loop.basin is not None]
    if not rows:
        return pvset.vectors.astype(np.float32, copy=True) if loops else np.zeros((0, pvset.width), np.float32)
    return np.asarray(rows, dtype=np.float32).reshape(len(rows), pvset.width)


def outcome_counts(loops: tuple[LoopTrace, ...] | list[LoopTrace]) -> dict[str, int]:
    """``{outcome: count}`` over ``loops`` for every outcome name (zeros included)."""
    counts = dict.fromkeys(OUTCOMES, 0)
    for loop in loops:
        counts[loop.outcome] = counts.get(loop.outcome, 0) + 1
    return counts


def save_run(out_dir: str | os.PathLike, report: MiningReport, pvset: PVSet) -> Path:
    """Write a checkpoint (``pvs.safetensors`` and ``report.json``) so that the two always pair up.

    ``report.json`` is the commit point: the PVs go to ``pvs.safetensors.pending`` first, then the
    report, which records that file's SHA-256 and size (``pvs_file``), replaces ``report.json``,
    then the pending file replaces ``pvs.safetensors``. Killed before the report, the directory
    holds the previous pair (and a stale pending file); killed after it, ``load_run`` finishes the
    move. Each file is written atomically.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pending = out / PENDING_FILE
    pvset.save(pending)
    payload = report.to_dict()
    payload.pop("schema_version")
    payload["pvs_file"] = {"name": PVS_FILE, "sha256": sha256_file(pending), "bytes": pending.stat().st_size}
    write_json(out / REPORT_FILE, payload, schema_version=REPORT_SCHEMA)
    os.replace(pending, out / PVS_FILE)
    return out


def load_run(out_dir: str | os.PathLike) -> tuple[MiningReport, PVSet]:
    """Read a run written by ``save_run``, finishing a save that was killed after its report.

    Raises:
        DataError: missing or malformed ``report.json``, or a ``pvs.safetensors`` whose SHA-256
            differs from the one the report recorded (and no pending file that matches);
        PVSetError: bad ``pvs.safetensors``.
    """
    out = Path(out_dir)
    data = read_json(out / REPORT_FILE, schema_version=REPORT_SCHEMA)
    try:
        report = MiningReport.from_dict(data)
    except (TypeError, KeyError) as exc:
        raise DataError(f"malformed mining report {out / REPORT_FILE}: {exc}") from exc
    recorded = data.get("pvs_file")  # absent in reports written before lmsan recorded it
    if isinstance(recorded, dict) and not _same_file(out / PVS_FILE, recorded):
        if not _same_file(out / PENDING_FILE, recorded):
            raise DataError(f"{out / PVS_FILE} does not match the checkpoint {out / REPORT_FILE} (SHA-256 "
                            f"{str(recorded.get('sha256'))[:12]}… recorded): the files come from different "
                            "saves; start again without --resume (--force)")
        os.replace(out / PENDING_FILE, out / PVS_FILE)
    return report, PVSet.load(out / PVS_FILE)


def _same_file(path: Path, recorded: dict[str, Any]) -> bool:
    """``path`` exists and has the size and SHA-256 that ``save_run`` recorded."""
    return (path.is_file() and path.stat().st_size == recorded.get("bytes")
            and sha256_file(path) == recorded.get("sha256"))


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
    if report.sweep is not None:
        natural = report.sweep.get("natural", [])  # reports before the natural filter have none
        lines.append(f"trigger sweep: {report.sweep['tokens']} tokens x {report.sweep['rows']} sentences, "
                     f"{len(report.sweep['hits'])} trigger(s), {report.sweep['wall_s']:.1f}s"
                     + (f"; {len(natural)} natural span(s) rejected (clean text already matches their output)"
                        if natural else ""))
    for source in report.pv_sources:
        found_by = "trigger sweep" if source["method"] == "sweep" else f"soft prompt, seed {source['seed']}"
        facts = []
        if source.get("hit_rate") is not None:  # None: a soft-prompt PV mined without trigger confirmation
            facts.append(f"inserted once, hits {source['hit_rate']:.0%} of sentences")
        if source.get("clean_overlap") is not None:  # None: a report from before the natural-vector filter
            facts.append(f"{source['clean_overlap']:.1%} of clean sentences match it")
        trigger = f"suspected trigger {source['trigger']!r}" if source.get("trigger") else "no trigger text"
        lines.append(f"PV #{source['pv_index']} ({found_by}): {trigger}" + (f" ({'; '.join(facts)})" if facts else ""))
    return lines


__all__ = ["EpochStats", "LoopTrace", "MiningReport", "OUTCOMES", "PENDING_FILE", "PVS_FILE", "REPORT_FILE",
           "REPORT_SCHEMA", "load_run", "outcome_counts", "repelled_basins", "save_run", "summary_lines"]
