"""``pip install lmsan`` alone: the built wheel in a clean venv scans with a real guard, no torch.

One venv per session: the wheel is built from a copy of the sources (the shared tree gets no
``build/``), installed with pip's cache into ``python -m venv``, and used only from a temporary
working directory (so ``import lmsan`` cannot pick up the checkout). A constraints file forbids
torch, transformers and onnx: if any dependency ever pulled them, the install itself fails.
18-40 s with a warm pip cache on 2 shared cores (15 s of CPU).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lmsan.extras import EXTRAS

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "onnx", "onnxscript")  # what the runtime install must not have
MINE_MESSAGE = (f"error: this command needs the 'mine' extra ({', '.join(EXTRAS['mine'])} are not "
                "installed): pip install 'lmsan[mine]'")


def build_wheel(work: Path) -> Path:
    """Build lmsan's wheel from a copy of pyproject.toml, README.md and lmsan/ into ``work``."""
    src = work / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "lmsan", src / "lmsan", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(src),
                    "-w", str(work / "dist")], check=True, capture_output=True, text=True, timeout=300)
    (wheel,) = (work / "dist").glob("lmsan-*.whl")
    return wheel


class Venv:
    """A clean venv with the runtime wheel installed; commands run from ``cwd`` (not the checkout)."""

    def __init__(self, work: Path) -> None:
        wheel = build_wheel(work)
        self.path, self.cwd = work / "venv", work / "cwd"
        self.cwd.mkdir()
        subprocess.run([sys.executable, "-m", "venv", str(self.path)], check=True, timeout=120)
        forbid = work / "no-heavy.txt"
        forbid.write_text("".join(f"{name}<0\n" for name in HEAVY))  # unsatisfiable: never installed
        self.env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
        self.env |= {"HF_HUB_OFFLINE": "1", "LMSAN_CACHE": str(work / "cache"), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        done = self.run("python", "-m", "pip", "install", "-q", "-c", str(forbid), str(wheel), timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]

    def run(self, program: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.path / "bin" / program), *args], cwd=self.cwd, env=self.env,
                              capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def venv(tmp_path_factory) -> Venv:
    return Venv(tmp_path_factory.mktemp("runtime-install"))


@pytest.fixture(scope="session")
def guard_dir() -> Path:
    sys.path.insert(0, str(ROOT / "tests" / "unit"))
    from test_export_guard import tiny_guard

    return tiny_guard()


def test_runtime_install_has_no_torch_transformers_or_onnx(venv):
    code = ("import importlib.util, json, lmsan, lmsan.runtime, lmsan.cli.guard, lmsan.cli.calibrate, lmsan.cli.main; "
            f"print(json.dumps({{'file': lmsan.__file__, 'found': [m for m in {HEAVY!r} "
            "if importlib.util.find_spec(m)]}))")
    done = venv.run("python", "-c", code)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["found"] == []
    assert Path(report["file"]).is_relative_to(venv.path), report["file"]  # the wheel, not the checkout


def test_guard_scans_like_the_full_install(venv, guard_dir):
    from test_export_guard import ANCHOR

    from lmsan.runtime import Guard

    texts = ["hello there", ANCHOR]
    done = venv.run("lmsan-guard", str(guard_dir), *texts, "--threshold", "0.95", "--json", "-q")
    assert done.returncode == 1, done.stderr  # some input triggered
    got = json.loads(done.stdout)
    expected = Guard.load(guard_dir, threshold=0.95).scan_batch(texts)
    assert [r["triggered"] for r in got] == [False, True]
    for row, result in zip(got, expected):
        assert (row["triggered"], row["sanitized"], tuple(row["removed"])) == \
               (result.triggered, result.sanitized, result.removed)
        assert row["match"] == pytest.approx(result.match, abs=1e-6)


def test_calibration_runs_in_the_runtime_install(venv, guard_dir, tmp_path):
    from lmsan.runtime import Guard, calibrate

    clean = [f"clean sentence number {i} about the weather" for i in range(120)]
    path = tmp_path / "clean.jsonl"
    path.write_text("".join(json.dumps(text) + "\n" for text in clean))
    done = venv.run("lmsan-calibrate", str(guard_dir), "--file", str(path), "--dry-run", "--json", "-q")
    assert done.returncode == 0, done.stderr
    expected = calibrate(Guard.load(guard_dir), clean)
    assert json.loads(done.stdout)["calibration"]["pv_thresholds"] == pytest.approx(list(expected.pv_thresholds))


def test_mining_and_export_name_the_extra(venv, tmp_path):
    from lmsan.pvset import PVSet

    pvs = PVSet.empty(32).save(tmp_path / "pvs.safetensors")
    calls = {
        "lmsan-mine": ("some/model", "--data", "oanc"),
        "lmsan-export": ("some/model", "--pvs", str(pvs), "--out", str(tmp_path / "guard")),
        "lmsan": ("mine", "some/model", "--data", "oanc"),
    }
    for program, args in calls.items():
        done = venv.run(program, *args)
        assert (done.returncode, done.stderr.strip()) == (2, f"{program}: {MINE_MESSAGE}"), done.stderr
    assert venv.run("lmsan-mine", "--help").returncode == 0
    listing = venv.run("lmsan", "--help")
    assert listing.returncode == 0
    rows = {line.split()[0]: line for line in listing.stdout.split("Commands:")[1].strip().splitlines()}
    assert rows["mine"].endswith("[needs lmsan[mine]]") and "needs" not in rows["guard"]


def test_data_fetch_works_without_torch(venv):
    done = venv.run("lmsan", "data", "fetch", "sms-spam", "-q")
    assert done.returncode == 0, done.stderr
    shown = venv.run("lmsan", "data", "show", "sms-spam", "--limit", "3", "--json")
    assert shown.returncode == 0, shown.stderr
    assert len(json.loads(shown.stdout)) == 3
