"""``save_run`` / ``load_run``: a checkpoint's two files always come back as one consistent pair."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest

from lmsan.errors import DataError
from lmsan.mining import report as report_module
from lmsan.mining.report import PVS_FILE, REPORT_FILE, LoopTrace, MiningReport, load_run, save_run, summary_lines
from lmsan.pvset import PVSet


def run(k: int) -> tuple[MiningReport, PVSet]:
    """A partial run after ``k`` accepted loops: ``k`` PVs of width 4."""
    pvset = PVSet(np.arange(4 * k, dtype=np.float32).reshape(k, 4), seeds=np.arange(1, k + 1), target="cls")
    loops = tuple(LoopTrace(seed, (), None, True, "accepted", "", pv_index=seed - 1) for seed in range(1, k + 1))
    report = MiningReport(model_path="m", weight_sha256={}, config={"target": "cls"}, feature_scale=1.0,
                          thresholds={}, verdict="backdoored" if k else "clean", loops=loops, pvs=pvset.to_json(),
                          timings_s={}, status="partial")
    return report, pvset


def assert_pair(out, k: int) -> None:
    report, pvset = load_run(out)
    assert len(report.loops) == k and pvset.size == k == report.pvs["size"]


def test_round_trip(tmp_path):
    save_run(tmp_path, *run(2))
    assert_pair(tmp_path, 2)
    assert json.loads((tmp_path / REPORT_FILE).read_text())["pvs_file"]["name"] == PVS_FILE
    assert sorted(p.name for p in tmp_path.iterdir()) == [PVS_FILE, REPORT_FILE]


def test_crash_before_the_report_is_written_keeps_the_previous_pair(tmp_path, monkeypatch):
    save_run(tmp_path, *run(1))

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # killed between the PV file and the report

    monkeypatch.setattr(report_module, "write_json", crash)
    with pytest.raises(KeyboardInterrupt):
        save_run(tmp_path, *run(2))
    monkeypatch.undo()
    assert_pair(tmp_path, 1)
    save_run(tmp_path, *run(3))  # the next checkpoint replaces the leftover
    assert_pair(tmp_path, 3)


def test_crash_after_the_report_is_written_finishes_the_save(tmp_path):
    save_run(tmp_path / "a", *run(1))
    save_run(tmp_path / "b", *run(2))
    # the state after the report of run b was committed, before its PV file was moved into place
    shutil.copy(tmp_path / "b" / REPORT_FILE, tmp_path / "a" / REPORT_FILE)
    shutil.copy(tmp_path / "b" / PVS_FILE, tmp_path / "a" / (PVS_FILE + ".pending"))
    assert_pair(tmp_path / "a", 2)
    assert not (tmp_path / "a" / (PVS_FILE + ".pending")).exists()


def test_a_pv_file_that_does_not_match_its_report_is_refused(tmp_path):
    save_run(tmp_path, *run(1))
    run(2)[1].save(tmp_path / PVS_FILE)  # e.g. an older lmsan killed between its two writes
    with pytest.raises(DataError, match=r"pvs.safetensors does not match .*report.json"):
        load_run(tmp_path)


def test_reports_without_a_recorded_pv_hash_still_load(tmp_path):
    save_run(tmp_path, *run(2))
    data = json.loads((tmp_path / REPORT_FILE).read_text())
    del data["pvs_file"]
    (tmp_path / REPORT_FILE).write_text(json.dumps(data))
    assert_pair(tmp_path, 2)


def test_basins_round_trip_exactly_and_old_checkpoints_fall_back_to_the_pvs(tmp_path):
    """A resumed search repels the same soft-prompt outputs as the run it continues."""
    from lmsan.mining.report import repelled_basins

    report, pvset = run(2)
    basins = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    loops = tuple(LoopTrace(t.seed, t.epochs, None, True, t.outcome, "", t.pv_index, basin=tuple(b.tolist()))
                  for t, b in zip(report.loops, basins))
    save_run(tmp_path, MiningReport(**{**report.__dict__, "loops": loops}), pvset)
    loaded, pvs = load_run(tmp_path)
    np.testing.assert_array_equal(repelled_basins(loaded.loops, pvs), basins)
    np.testing.assert_array_equal(repelled_basins(report.loops, pvset), pvset.vectors)  # no basins recorded
    assert repelled_basins((), pvset).shape == (0, pvset.width)  # a fresh run: nothing yet (its sweep PVs come apart)


def test_summary_names_each_pv_source_with_what_is_known_of_it():
    report, _ = run(2)
    report = dataclasses.replace(report, thresholds={"T_L": -1.0, "T_dedup": 1.0, "T_div": -3.0}, pv_sources=(
        {"pv_index": 0, "method": "soft_prompt", "seed": 3, "trigger": None, "hit_rate": None},  # confirm off
        {"pv_index": 1, "method": "sweep", "seed": None, "trigger": "cf", "hit_rate": 1.0, "clean_overlap": 0.0105},
    ))
    lines = summary_lines(report)
    assert "PV #0 (soft prompt, seed 3): no trigger text" in lines
    assert ("PV #1 (trigger sweep): suspected trigger 'cf' (inserted once, hits 100% of sentences; "
            "1.1% of clean sentences match it)") in lines
