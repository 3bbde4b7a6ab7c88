"""``lmsan-mine --resume`` after a real interruption: a search killed with SIGKILL after its first
checkpoint, then resumed, ends with the PV set and loop outcomes of a run never interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lmsan.mining import load_run

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LOOPS = 5


def mine_command(model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "lmsan.cli.mine", str(model), "--data", str(data), "--mode", "search",
            "--loops", str(LOOPS), "--limit", "200", "--max-length", "16", "--device", "cpu", "--threads", "1",
            "--out", str(out), "-q", *extra]


def test_search_killed_after_a_checkpoint_resumes_to_the_uninterrupted_result(bert_por, defense_sentences,
                                                                              tmp_path):
    data = tmp_path / "defense.txt"
    data.write_text("\n".join(defense_sentences[:200]) + "\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}

    whole = subprocess.run(mine_command(bert_por, data, tmp_path / "whole"), env=env, capture_output=True,
                           text=True, timeout=600)
    assert whole.returncode == 1, whole.stderr  # bert-por is backdoored

    cut = tmp_path / "cut"
    process = subprocess.Popen(mine_command(bert_por, data, cut), env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not (cut / "report.json").exists():
            assert process.poll() is None, "lmsan-mine ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)  # no handler, no cleanup: a real crash or power loss
    finally:
        process.kill()
        process.wait()
    killed, _ = load_run(cut)
    assert killed.status == "partial" and 1 <= len(killed.loops) < LOOPS

    resumed = subprocess.run(mine_command(bert_por, data, cut, "--resume"), env=env, capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 1, resumed.stderr
    (want, want_pvs), (got, got_pvs) = load_run(tmp_path / "whole"), load_run(cut)
    assert got.status == "complete" and got.stop_reason == want.stop_reason and got.verdict == want.verdict
    assert [(t.seed, t.outcome, t.pv_index, t.steps) for t in got.loops] == \
        [(t.seed, t.outcome, t.pv_index, t.steps) for t in want.loops]
    assert [t.trigger and t.trigger["trigger"] for t in got.loops] == [t.trigger and t.trigger["trigger"]
                                                                       for t in want.loops]
    np.testing.assert_array_equal(got_pvs.seeds, want_pvs.seeds)
    np.testing.assert_allclose(got_pvs.vectors, want_pvs.vectors, rtol=1e-5, atol=1e-6)
    for got_loop, want_loop in zip(got.loops, want.loops):  # the same training, epoch by epoch
        np.testing.assert_allclose([[e.dist, e.div, e.path] for e in got_loop.epochs],
                                   [[e.dist, e.div, e.path] for e in want_loop.epochs], rtol=1e-4, atol=1e-6)
