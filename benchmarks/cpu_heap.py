"""glibc heap settings for torch CPU work, side by side (writes benchmarks/results/cpu_heap.*).

PyTorch on a CPU frees and re-allocates the same large activation tensors every step. glibc
serves blocks above its mmap threshold (32 MB at most) with ``mmap`` and returns each with
``munmap`` on free, so the next step page-faults fresh zeroed pages into the process. The
``keep`` setting turns that off for a process through the environment:

    default   the environment as it is
    keep      MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647 (no mmap'd blocks; the heap
              keeps what is freed): an opt-in for one-shot runs (docs/mining.md, Speed), not
              set by lmsan or its scripts, because a long-lived process's heap only grows

Each run is one fresh ``lmsan-mine`` process on the cached un-attacked tiny BERT with the
defense split (the trigger sweep, then ``--loops`` fuzz loops, one torch thread), the settings
alternating (default, keep, default, ...) for ``--repeats`` rounds. Reported per setting: the
median wall, user and system seconds and peak RSS (``resource.getrusage`` of the child), and
keep / default ratios.

    python benchmarks/cpu_heap.py [--repeats 2] [--loops 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _results import save

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SETTINGS = {
    "default": {},
    "keep": {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "2147483647"},
}


def run_once(command: list[str], extra_env: dict[str, str]) -> dict[str, float]:
    """One child process: wall, user and system seconds, peak RSS in MB."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("MALLOC_")}
    env.update(extra_env)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode not in (0, 1):
        raise SystemExit(f"lmsan-mine exited {done.returncode}: {done.stderr[-2000:]}")
    return {"wall_s": wall, "user_s": after.ru_utime - before.ru_utime, "sys_s": after.ru_stime - before.ru_stime,
            "peak_rss_mb": after.ru_maxrss / 1024}  # ru_maxrss: the largest child so far, in kB (Linux)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="rounds of (default, keep)")
    parser.add_argument("--loops", type=int, default=2, help="fuzz loops after the sweep per run")
    args = parser.parse_args(argv)
    from lmsan.data import standard_splits
    from lmsan.models.zoo import default_tiny

    model = default_tiny("bert").path
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "defense.txt"
        data.write_text("\n".join(standard_splits()["defense"][:2000]) + "\n", encoding="utf-8")
        command = [str(Path(sys.executable).parent / "lmsan-mine"), str(model), "--data", str(data), "--device",
                   "cpu", "--threads", "1", "--loops", str(args.loops), "--out", str(Path(tmp) / "scan"),
                   "--force", "-q"]
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in SETTINGS}
        for round_ in range(args.repeats):
            for name, extra in SETTINGS.items():
                # ru_maxrss of RUSAGE_CHILDREN is the largest child ever: run each in a fresh helper
                result = subprocess.run([sys.executable, __file__, "--child", name, *command], capture_output=True,
                                        text=True, check=True)
                runs[name].append(parse_row(result.stdout))
                print(f"round {round_ + 1} {name}: {runs[name][-1]}", file=sys.stderr)
    medians = {name: {key: statistics.median(run[key] for run in rows) for key in rows[0]} for name, rows in runs.items()}
    ratios = {key: medians["keep"][key] / medians["default"][key] for key in medians["default"]}
    report = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "python": sys.version.split()[0],
              "glibc": "-".join(platform.libc_ver()), "model": "tiny-bert (d=128, 2 layers)", "loops": args.loops,
              "repeats": args.repeats, "settings": SETTINGS, "runs": runs, "median": medians, "keep_over_default": ratios}
    lines = ["## glibc heap settings for torch CPU work (`benchmarks/cpu_heap.py`)", "",
             f"`lmsan-mine` on the un-attacked tiny BERT, 2000 defense sentences, sweep + {args.loops} loops, one "
             f"torch thread, {args.repeats} alternating rounds; medians.", "",
             "| setting | wall s | user s | sys s | peak RSS MB |", "|---|---|---|---|---|"]
    for name, row in medians.items():
        lines.append(f"| {name} | {row['wall_s']:.1f} | {row['user_s']:.1f} | {row['sys_s']:.1f} | {row['peak_rss_mb']:.0f} |")
    lines += ["", "keep / default: " + ", ".join(f"{key} {value:.2f}x" for key, value in ratios.items()), ""]
    save("cpu_heap", report, "\n".join(lines))
    return 0


def parse_row(text: str) -> dict[str, float]:
    """Parse the child helper's one line ``key=value ...``."""
    return {key: float(value) for key, value in (item.split("=") for item in text.split())}


def child(name: str, command: list[str]) -> int:
    row = run_once(command, SETTINGS[name])
    print(" ".join(f"{key}={value}" for key, value in row.items()))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        sys.exit(child(sys.argv[2], sys.argv[3:]))
    sys.exit(main())
