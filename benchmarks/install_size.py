"""Installed size and start-up time of the runtime install vs the full one (writes benchmarks/results/install_size.*).

Three fresh venvs (``python -m venv``), each measured from a temporary working directory:

    empty    the venv alone (pip, setuptools): subtracted to give what each install adds
    runtime  ``pip install lmsan-*.whl``: numpy, onnxruntime, tokenizers, safetensors, click, tqdm
    full     ``pip install torch==2.13.0`` first (the CPU wheel; pip never resolves a bare torch
             requirement, which would pull a multi-GB CUDA build), then ``lmsan-*.whl[mine]``

For runtime and full: site-packages size (apparent bytes of every file, MB = 1e6 bytes) and file
count, the distributions installed, and, as the median of ``--repeats`` fresh processes run in
turn (runtime, full, runtime, ...), the wall time of ``python -c "import lmsan.runtime"``,
``lmsan-guard --help`` and a cold start (``python -c``: import, ``Guard.load`` and the first
``scan`` of one sentence on the tiny guard of ``tests/unit/test_export_guard.py``). Ratios are
full / runtime. The wheel is built from a copy of the sources unless ``--wheel`` is given.

    python benchmarks/install_size.py [--repeats 5] [--wheel dist/lmsan-0.1.0-py3-none-any.whl]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _results import save

ROOT = Path(__file__).resolve().parents[1]
TORCH = "torch==2.13.0"  # the local CPU wheel; the project's range for the `mine` extra is >=2.6,<2.14
TEXT = "the quick brown fox jumps over the lazy dog"
COLD = ("import time; t = time.perf_counter(); from lmsan.runtime import Guard; "
        "guard = Guard.load({guard!r}); guard.scan({text!r}); print(time.perf_counter() - t)")


def build_wheel(work: Path) -> Path:
    """Build lmsan's wheel from a copy of pyproject.toml, README.md and lmsan/ (the tree gets no build/)."""
    src = work / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "lmsan", src / "lmsan", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(src),
                    "-w", str(work / "dist")], check=True, capture_output=True, text=True)
    (wheel,) = (work / "dist").glob("lmsan-*.whl")
    return wheel


class Venv:
    """A fresh venv; commands run from ``cwd`` so the checkout is never on ``sys.path``."""

    def __init__(self, path: Path, cwd: Path) -> None:
        self.path, self.cwd = path, cwd
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
        self.env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
        self.env |= {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}

    def run(self, program: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.path / "bin" / program), *args], cwd=self.cwd, env=self.env,
                              capture_output=True, text=True, check=check)

    def pip_install(self, *requirements: str, constraints: Path) -> float:
        """Install ``requirements`` under ``constraints``; returns the wall time in s."""
        started = time.perf_counter()
        self.run("python", "-m", "pip", "install", "-q", "-c", str(constraints), *requirements)
        return time.perf_counter() - started

    def site_packages(self) -> Path:
        (path,) = self.path.glob("lib/python*/site-packages")
        return path

    def distributions(self) -> list[str]:
        code = "import importlib.metadata as m; print('\\n'.join(sorted({d.metadata['Name'].lower() for d in m.distributions()})))"
        return self.run("python", "-c", code).stdout.split()


def tree_size(path: Path) -> tuple[int, int]:
    """Return (apparent bytes, file count) of the regular files under ``path`` (links not followed)."""
    total = count = 0
    for folder, _, files in os.walk(path):
        for name in files:
            stat = os.lstat(os.path.join(folder, name))
            total, count = total + stat.st_size, count + 1
    return total, count


def timed(venv: Venv, program: str, *args: str) -> float:
    """Wall time in s of one fresh process (interpreter start included)."""
    started = time.perf_counter()
    venv.run(program, *args)
    return time.perf_counter() - started


def timings(venvs: dict[str, Venv], guard: Path, repeats: int) -> dict[str, dict[str, float]]:
    """Median wall times (s) per venv, the venvs taking turns so load drift hits both alike."""
    probes = {
        "python_start_s": ("python", "-c", "pass"),
        "import_runtime_s": ("python", "-c", "import lmsan.runtime"),
        "guard_help_s": ("lmsan-guard", "--help"),
        "cold_start_s": ("python", "-c", COLD.format(guard=str(guard), text=TEXT)),
    }
    samples: dict[str, dict[str, list[float]]] = {name: {key: [] for key in probes} for name in venvs}
    inner: dict[str, list[float]] = {name: [] for name in venvs}
    for name, venv in venvs.items():  # one unmeasured round: page cache, .pyc files
        for probe in probes.values():
            venv.run(*probe)
    for _ in range(repeats):
        for key, probe in probes.items():
            for name, venv in venvs.items():
                started = time.perf_counter()
                done = venv.run(*probe)
                samples[name][key].append(time.perf_counter() - started)
                if key == "cold_start_s":
                    inner[name].append(float(done.stdout))
    out = {name: {key: statistics.median(values) for key, values in samples[name].items()} for name in venvs}
    for name in venvs:
        out[name]["cold_start_in_process_s"] = statistics.median(inner[name])
    return out


def markdown(report: dict) -> str:
    r, f = report["runtime"], report["full"]
    ratio = report["ratios_full_over_runtime"]
    rows = [
        ("site-packages added (MB)", "added_mb", "{:.0f}"),
        ("files added", "added_files", "{:d}"),
        ("distributions", "distribution_count", "{:d}"),
        ("pip install wall (s, warm cache)", "install_s", "{:.1f}"),
        ("python -c pass (s)", "python_start_s", "{:.3f}"),
        ("python -c 'import lmsan.runtime' (s)", "import_runtime_s", "{:.3f}"),
        ("lmsan-guard --help (s)", "guard_help_s", "{:.3f}"),
        ("cold start: process wall (s)", "cold_start_s", "{:.3f}"),
        ("cold start: import + load + first scan in process (s)", "cold_start_in_process_s", "{:.3f}"),
    ]
    lines = [f"Install size and start-up: {report['machine']}; medians of {report['repeats']} fresh processes.",
             f"Empty venv (pip, setuptools): {report['empty']['site_packages_mb']:.0f} MB, subtracted.", "",
             "| | runtime (`pip install lmsan`) | full (`lmsan[mine]`) | full / runtime |", "|---|---|---|---|"]
    for label, key, fmt in rows:
        ratio_cell = f"{ratio[key]:.2f}x" if key in ratio else ""
        lines.append(f"| {label} | {fmt.format(r[key])} | {fmt.format(f[key])} | {ratio_cell} |")
    lines += ["", f"Runtime install: {', '.join(r['distributions'])}.",
              f"Heavy packages in the runtime install: {r['heavy_installed'] or 'none'}.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="Fresh processes per probe and venv (median).")
    parser.add_argument("--wheel", type=Path, default=None, help="A built lmsan wheel (default: build one).")
    parser.add_argument("--guard", type=Path, default=None, help="Guard directory (default: the unit tests' tiny guard).")
    args = parser.parse_args()
    if args.guard is None:
        sys.path.insert(0, str(ROOT / "tests" / "unit"))
        from test_export_guard import tiny_guard

        args.guard = tiny_guard()
    with tempfile.TemporaryDirectory(prefix="lmsan-install-") as tmp:
        work = Path(tmp)
        wheel = args.wheel.resolve() if args.wheel else build_wheel(work)
        (work / "cwd").mkdir()
        constraints = work / "constraints.txt"
        constraints.write_text(f"{TORCH}\n")  # any torch pip picks is the CPU wheel
        forbid = work / "no-heavy.txt"
        forbid.write_text("torch<0\ntransformers<0\nonnx<0\nonnxscript<0\n")  # the runtime never gets them
        venvs = {name: Venv(work / name, work / "cwd") for name in ("empty", "runtime", "full")}
        installs = {"runtime": venvs["runtime"].pip_install(str(wheel), constraints=forbid),
                    "full": venvs["full"].pip_install(TORCH, constraints=constraints)
                    + venvs["full"].pip_install(f"{wheel}[mine]", constraints=constraints)}
        empty_bytes, empty_files = tree_size(venvs["empty"].site_packages())
        report: dict = {"empty": {"site_packages_mb": empty_bytes / 1e6, "files": empty_files}}
        for name in ("runtime", "full"):
            size, files = tree_size(venvs[name].site_packages())
            dists = venvs[name].distributions()
            report[name] = {"site_packages_mb": size / 1e6, "files": files, "added_mb": (size - empty_bytes) / 1e6,
                            "added_files": files - empty_files, "distributions": dists,
                            "distribution_count": len(dists), "install_s": installs[name],
                            "heavy_installed": sorted({"torch", "transformers", "onnx", "onnxscript"} & set(dists))}
        for name, figures in timings({k: venvs[k] for k in ("runtime", "full")}, args.guard, args.repeats).items():
            report[name] |= figures
    keys = ("added_mb", "added_files", "distribution_count", "install_s", "python_start_s", "import_runtime_s",
            "guard_help_s", "cold_start_s", "cold_start_in_process_s")
    report |= {
        "ratios_full_over_runtime": {k: report["full"][k] / report["runtime"][k] for k in keys},
        "repeats": args.repeats, "wheel": wheel.name, "torch": TORCH, "guard": str(args.guard),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, no GPU, "
                   f"Python {platform.python_version()}, {platform.system()}",
    }
    save("install_size", report, markdown(report))


if __name__ == "__main__":
    main()
