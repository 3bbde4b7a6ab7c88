"""``lmsan scan-many`` on a local 2-CPU Ray cluster: equal to standalone ``lmsan-mine`` runs, resumable,
a failed model reported without stopping the rest, and a worker killed mid-scan retried with nothing lost.

One cluster per module (started here with ``ray.init``; in-process CLI runs reuse it, subprocess runs
join it with ``--ray ADDRESS``). Models: the cached tiny POR BERT (backdoored) and its clean control,
at a small budget (200 sentences of 16 tokens, no trigger sweep, 10 search loops: 2–5 s of mining each).
The fast checks at the end need no Ray and no model.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lmsan.cli import scan_many as scan_many_cli
from lmsan.mining import load_run
from lmsan.scale.plan import dir_name, plan, read_list

pytestmark = pytest.mark.e2e

MINE_OPTIONS = ["--mode", "search", "--loops", "10", "--limit", "200", "--max-length", "16"]


def env() -> dict[str, str]:
    """Environment of a subprocess, taken when it starts: after ``ray.init`` it carries the cluster's
    auth mode (``RAY_AUTH_MODE=token``), which a driver joining with ``--ray`` needs."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture(scope="module")
def budget(defense_sentences, tmp_path_factory) -> list[str]:
    """The mining options of every run here (the data file and a no-sweep --config included)."""
    root = tmp_path_factory.mktemp("scan-many-budget")
    (root / "defense.txt").write_text("\n".join(defense_sentences[:200]) + "\n")
    (root / "config.json").write_text(json.dumps({"sweep": False}))
    return ["--data", str(root / "defense.txt"), "--config", str(root / "config.json"), *MINE_OPTIONS]


@pytest.fixture(scope="module")
def ray_address():
    """A local Ray cluster with 2 CPUs for this module; yields its GCS address."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def standalone(bert_por, bert_por_clean, budget, tmp_path_factory) -> dict[str, Path]:
    """``lmsan-mine MODEL <budget> --device cpu --threads 1 --out DIR`` per model, as a user runs it
    (two processes side by side on the 2 cores); returns ``{model path: DIR}``."""
    root = tmp_path_factory.mktemp("standalone")
    runs = {}
    for index, model in enumerate((bert_por, bert_por_clean)):
        out = root / f"mine-{index}"
        command = [sys.executable, "-m", "lmsan.cli.mine", str(model), *budget, "--device", "cpu", "--threads", "1",
                   "--out", str(out), "-q"]
        runs[str(model)] = (out, subprocess.Popen(command, env=env(), stderr=subprocess.PIPE, text=True))
    for model, (out, process) in runs.items():
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == (1 if model == str(bert_por) else 0), stderr
    return {model: out for model, (out, _) in runs.items()}


def scan_many(argv: list[str]) -> tuple[int, dict]:
    """Run the CLI in this process (``-q``); returns its exit code and the ``summary.json`` it wrote."""
    with pytest.raises(SystemExit) as exit_info:
        scan_many_cli.main([*argv, "-q"])
    out = Path(argv[argv.index("--out") + 1])
    return int(exit_info.value.code), json.loads((out / "summary.json").read_text())


def assert_same_scan(got_dir: Path, want_dir: Path, *, exact: bool = True) -> None:
    """The scan in ``got_dir`` is the one in ``want_dir``: verdict, loops (seed, outcome, PV row, steps,
    trigger, epoch losses) and the PV set (vectors, seeds, sign patterns)."""
    (got, got_pvs), (want, want_pvs) = load_run(got_dir), load_run(want_dir)
    assert (got.status, got.verdict, got.stop_reason) == ("complete", want.verdict, want.stop_reason)
    assert got.config == want.config and got.feature_scale == want.feature_scale
    assert [(t.seed, t.outcome, t.pv_index, t.steps, t.trigger and t.trigger["trigger"]) for t in got.loops] == \
        [(t.seed, t.outcome, t.pv_index, t.steps, t.trigger and t.trigger["trigger"]) for t in want.loops]
    np.testing.assert_array_equal(got_pvs.seeds, want_pvs.seeds)
    np.testing.assert_array_equal(got_pvs.signs, want_pvs.signs)
    got_losses, want_losses = ([[[e.dist, e.div, e.path] for e in t.epochs] for t in report.loops]
                               for report in (got, want))
    if exact:  # same code, same thread count: bit for bit (observed on CPU)
        np.testing.assert_array_equal(got_pvs.vectors, want_pvs.vectors)
        assert got_losses == want_losses
    else:  # resumed after a kill: as tests/e2e/test_mine_resume.py allows
        np.testing.assert_allclose(got_pvs.vectors, want_pvs.vectors, rtol=1e-5, atol=1e-6)
        for got_loop, want_loop in zip(got_losses, want_losses):
            np.testing.assert_allclose(got_loop, want_loop, rtol=1e-4, atol=1e-6)


@pytest.fixture(scope="module")
def first_run(bert_por, bert_por_clean, budget, ray_address, tmp_path_factory, standalone):
    """One scan-many run (in this process, on the module's cluster) over a LIST of the two models and
    a broken model directory; returns (LIST, --out, exit code, summary, wall seconds)."""
    root = tmp_path_factory.mktemp("scan-many")
    broken = root / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "bert"}')
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    listing = root / "models.txt"
    listing.write_text(f"# two tiny BERTs and a broken directory\n{bert_por}\n\n{bert_por_clean}\n./broken\n")
    out = root / "out"
    start = time.perf_counter()
    code, summary = scan_many([str(listing), "--out", str(out), *budget])
    return listing, out, code, summary, time.perf_counter() - start


@pytest.mark.slow
def test_scan_many_equals_standalone_mine_and_reports_a_broken_model(first_run, standalone, bert_por,
                                                                     bert_por_clean):
    listing, out, code, summary, _ = first_run
    assert code == 2  # a model failed (the backdoored one is still reported)
    assert [m["entry"] for m in summary["models"]] == [str(bert_por), str(bert_por_clean), "./broken"]
    by_entry = {m["entry"]: m for m in summary["models"]}
    assert summary["complete"] and summary["counts"] == {"clean": 1, "backdoored": 1, "failed": 1, "pending": 0,
                                                       "skipped": 0, "resumed": 0}
    for model in (bert_por, bert_por_clean):
        entry = by_entry[str(model)]
        want, want_pvs = load_run(standalone[str(model)])
        assert (entry["status"], entry["pvs"]) == (want.verdict, len(want_pvs.seeds))
        assert entry["error"] is None and entry["seconds"] > 0
        assert_same_scan(out / entry["dir"], standalone[str(model)])
    assert by_entry[str(bert_por)]["status"] == "backdoored" and by_entry[str(bert_por)]["pvs"] >= 1
    broken = by_entry["./broken"]
    assert broken["status"] == "failed" and str(listing.parent / "broken") in broken["error"]
    assert "\n" not in broken["error"] and broken["pvs"] is None
    table = (out / "summary.md").read_text()
    assert table.count("\n| `") == 3 and "| backdoored | " in table and "| failed |" in table


@pytest.mark.slow
def test_a_second_run_skips_the_done_models_without_ray(first_run, budget, bert_por, bert_por_clean, capsys):
    listing, out, _, first, _ = first_run
    done = listing.with_name("done.txt")
    done.write_text(f"{bert_por}\n{bert_por_clean}\n")
    # nothing listens at this address: joining a cluster would fail, so this proves no task started
    command = [sys.executable, "-m", "lmsan.cli.scan_many", str(done), "--out", str(out), *budget,
               "--ray", "127.0.0.1:9", "--json"]
    start = time.perf_counter()
    rerun = subprocess.run(command, env=env(), capture_output=True, text=True, timeout=120)
    wall_s = time.perf_counter() - start
    assert rerun.returncode == 1, rerun.stderr  # one backdoored model, none failed
    summary = json.loads(rerun.stdout)
    assert summary == json.loads((out / "summary.json").read_text())
    assert summary["counts"]["skipped"] == 2 and summary["scanned"] == 0
    assert [(m["status"], m["pvs"], m["dir"]) for m in summary["models"]] == \
        [(m["status"], m["pvs"], m["dir"]) for m in first["models"][:2]]
    assert wall_s < 30, f"skipping two done models took {wall_s:.1f}s"

    # the whole LIST again, on the cluster: only the failed model is tried again (and fails again)
    code, again = scan_many([str(listing), "--out", str(out), *budget])
    assert code == 2
    assert [(m["status"], m["skipped"]) for m in again["models"]] == \
        [("backdoored", True), ("clean", True), ("failed", False)]


@pytest.mark.slow
def test_a_worker_killed_mid_scan_is_retried_and_resumes(bert_por, budget, ray_address, standalone, tmp_path):
    listing = tmp_path / "one.json"
    listing.write_text(json.dumps([str(bert_por)]))
    out = tmp_path / "out"
    scan_dir = out / "models" / dir_name(str(bert_por))
    command = [sys.executable, "-m", "lmsan.cli.scan_many", str(listing), "--out", str(out), *budget,
               "--ray", ray_address, "--max-retries", "2", "--json", "-q"]
    driver = subprocess.Popen(command, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (scan_dir / "report.json").exists():  # the scan's first checkpoint
            assert driver.poll() is None, driver.communicate()[1]
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.005)
        worker = json.loads((scan_dir / "worker.json").read_text())
        assert load_run(scan_dir)[0].status == "partial", "the scan finished before the kill"
        os.kill(worker["pid"], signal.SIGKILL)  # the Ray worker process running the scan: a crash
        stdout, stderr = driver.communicate(timeout=180)
    finally:
        driver.kill()
        driver.wait()
    assert driver.returncode == 1, stderr
    (entry,) = json.loads(stdout)["models"]
    assert entry["status"] == "backdoored" and entry["resumed"], entry  # the retry continued the checkpoint
    assert not (scan_dir / "worker.json").exists()
    with pytest.raises(ProcessLookupError):
        os.kill(worker["pid"], 0)
    assert_same_scan(scan_dir, standalone[str(bert_por)], exact=False)


# --- no Ray, no model ---------------------------------------------------------------------------

def test_list_parsing_resolves_directories_against_the_list_and_dedupes(tmp_path):
    (tmp_path / "a").mkdir()
    listing = tmp_path / "list.txt"
    listing.write_text("# comment\n\n  a  \n./a\nacme/bert-base\n/abs/model\n")
    assert read_list(listing) == ["a", "./a", "acme/bert-base", "/abs/model"]
    jobs = plan(listing, tmp_path / "out")
    assert [job.source for job in jobs] == [str(tmp_path / "a"), "acme/bert-base", "/abs/model"]
    assert len({job.name for job in jobs}) == 3
    assert all(Path(job.out_dir) == (tmp_path / "out" / job.rel_dir).resolve() for job in jobs)
    assert dir_name("acme/bert-base") == dir_name("acme/bert-base") != dir_name("acme/bert-large")
    assert dir_name("acme/bert-base").startswith("acme-bert-base-")
    as_json = tmp_path / "list.json"
    as_json.write_text(json.dumps(["a", "acme/bert-base"]))
    assert [job.source for job in plan(as_json, tmp_path / "out")] == [str(tmp_path / "a"), "acme/bert-base"]


@pytest.mark.parametrize("content, name, code, message", [
    ("# nothing\n\n", "list.txt", 2, "names no model"),
    ('{"model": "a"}', "list.json", 2, "JSON list of non-empty strings"),
    ("a\n", "list.txt", 4, "--device cuda needs --gpus-per-task"),
    ("a\n", "list.txt", 4, "--num-cpus sizes a local cluster"),
    ("a\n", "list.txt", 4, "unknown"),
])
def test_bad_input_is_one_error_line(tmp_path, capsys, content, name, code, message):
    listing = tmp_path / name
    listing.write_text(content)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"no_such_knob": 1} if message == "unknown" else {}))
    extra = {"--device cuda needs --gpus-per-task": ["--device", "cuda"],
             "--num-cpus sizes a local cluster": ["--ray", "auto", "--num-cpus", "2"]}.get(message, [])
    with pytest.raises(SystemExit) as exit_info:
        scan_many_cli.main([str(listing), "--out", str(tmp_path / "out"), "--data", "oanc", "--config", str(config),
                            *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == code
    assert len(err) == 1 and err[0].startswith("lmsan-scan-many: error: ") and message in err[0], err
    assert not (tmp_path / "out").exists()


def test_other_mining_settings_in_the_same_out_are_refused(tmp_path, capsys):
    listing = tmp_path / "list.txt"
    listing.write_text("acme/bert-base\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text(json.dumps({"settings": {"data": "oanc", "limit": 1000}}))
    with pytest.raises(SystemExit) as exit_info:
        scan_many_cli.main([str(listing), "--out", str(out), "--data", "oanc", "--limit", "500"])
    assert exit_info.value.code == 4
    assert "was scanned with " in capsys.readouterr().err
