"""Many-model scans: ``lmsan scan-many`` on a local 2-CPU Ray cluster versus one ``lmsan-mine`` after another.

    python benchmarks/scan_many.py [--models bert-por bert-por-clean ...] [--keep DIR]

The models are cached tiny standard attacks and their clean controls (``lmsan.attacks.standard_attack``),
scanned at the e2e tests' budget: 200 defense sentences of 16 tokens, no trigger sweep, search
mode, 10 fuzz loops. Three ways, in one run on the same machine:

* ``sequential-1t``: ``lmsan-mine MODEL ... --threads 1`` per model, one after another (a shell loop);
* ``sequential-2t``: the same with ``--threads 2`` (one scan using both cores);
* ``scan-many``: ``lmsan scan-many LIST --num-cpus 2`` (a fresh local cluster, one task of 1 CPU
  per model, 2 at a time), wall time from the command's start to its exit, Ray start-up included.

Every scan-many verdict and PV count must equal the sequential ones. Figures: models per hour,
the ratio to each baseline, and per verdict the mining seconds (``report.json`` ``timings_s.total``)
and the task's seconds (mining plus loading the model and data in a warm worker). The scaling note
for N GPUs uses those and the H200 times to verdict in BENCHMARKS.md ("Mining on a GPU").
Writes ``benchmarks/results/scan_many.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import save  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
MODELS = ("bert-por", "bert-por-clean", "roberta-por", "roberta-por-clean", "bert-neuba", "bert-neuba-clean",
          "bert-por-single", "bert-por-single-clean")
BUDGET = ["--mode", "search", "--loops", "10", "--limit", "200", "--max-length", "16"]
# BENCHMARKS.md, "Mining on a GPU" (benchmarks/results/gpu_check.json): H200, detect mode, 10 loops,
# 1000 sentences, before the trigger sweep existed: time to verdict in seconds.
H200_TO_VERDICT_S = {"bert-por (backdoored, 1 loop, CUDA warm-up included)": 1.42,
                     "bert-por-clean (clean, 10 loops)": 0.52}


def prepare(root: Path, names: list[str]) -> tuple[list[Path], list[str]]:
    """The models' cached directories and the mining options (data file and a no-sweep --config in ``root``)."""
    from lmsan.attacks import standard_attack
    from lmsan.data import standard_splits

    (root / "defense.txt").write_text("\n".join(standard_splits()["defense"][:200]) + "\n")
    (root / "config.json").write_text(json.dumps({"sweep": False}))
    options = ["--data", str(root / "defense.txt"), "--config", str(root / "config.json"), *BUDGET]
    return [standard_attack(name) for name in names], options


def sequential(models: list[Path], options: list[str], out: Path, threads: int) -> dict:
    """One ``lmsan-mine`` process per model, one after another; wall seconds and each verdict."""
    rows = []
    start = time.perf_counter()
    for index, model in enumerate(models):
        scan = out / f"{index}"
        begun = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "lmsan.cli.mine", str(model), *options, "--device", "cpu",
                               "--threads", str(threads), "--out", str(scan), "-q"], capture_output=True, text=True)
        if done.returncode not in (0, 1):
            raise SystemExit(f"lmsan-mine {model} failed: {done.stderr.strip()}")
        report = json.loads((scan / "report.json").read_text())
        rows.append({"verdict": report["verdict"], "pvs": report["pvs"]["size"],
                     "mining_s": report["timings_s"]["total"], "process_s": round(time.perf_counter() - begun, 3)})
    return {"wall_s": round(time.perf_counter() - start, 3), "models": rows}


def scan_many(models: list[Path], options: list[str], out: Path) -> dict:
    """``lmsan scan-many`` on a fresh local cluster of 2 CPUs; wall seconds and its summary."""
    out.parent.mkdir(parents=True, exist_ok=True)
    listing = out.parent / "models.txt"
    listing.write_text("".join(f"{model}\n" for model in models))
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "lmsan.cli.scan_many", str(listing), "--out", str(out), *options,
                           "--num-cpus", "2", "--json", "-q"], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode not in (0, 1):
        raise SystemExit(f"scan-many failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    summary = json.loads(done.stdout)
    rows = []
    for entry in summary["models"]:
        report = json.loads((out / entry["dir"] / "report.json").read_text())
        rows.append({"verdict": entry["status"], "pvs": entry["pvs"], "mining_s": report["timings_s"]["total"],
                     "task_s": entry["seconds"]})
    return {"wall_s": round(wall, 3), "summary_wall_s": summary["wall_s"], "models": rows}


def per_hour(count: int, seconds: float) -> float:
    return round(count * 3600.0 / seconds, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), help="standard attack names (and -clean)")
    parser.add_argument("--keep", type=Path, default=None, help="keep the scans in this directory")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="lmsan-scan-many-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    models, options = prepare(root, args.models)
    load_before = os.getloadavg()
    runs = {"sequential-1t": sequential(models, options, root / "seq1", threads=1),
            "sequential-2t": sequential(models, options, root / "seq2", threads=2),
            "scan-many": scan_many(models, options, root / "many" / "out")}
    load_after = os.getloadavg()
    want = [(row["verdict"], row["pvs"]) for row in runs["sequential-1t"]["models"]]
    for name, run in runs.items():
        got = [(row["verdict"], row["pvs"]) for row in run["models"]]
        if got != want:
            raise SystemExit(f"{name} verdicts {got} differ from sequential-1t {want}")
    n = len(models)
    many = runs["scan-many"]
    mining_s = statistics.mean(row["mining_s"] for row in many["models"])
    task_s = statistics.mean(row["task_s"] for row in many["models"])
    process_s = statistics.mean(row["process_s"] for row in runs["sequential-1t"]["models"])
    figures = {name: {"wall_s": run["wall_s"], "models_per_hour": per_hour(n, run["wall_s"])}
               for name, run in runs.items()}
    for name in ("sequential-1t", "sequential-2t"):
        figures["scan-many"][f"speedup_vs_{name}"] = round(runs[name]["wall_s"] / many["wall_s"], 2)
    overhead_s = task_s - mining_s  # model + data load in a warm worker
    report = {
        "machine": {"cpu_cores": os.cpu_count(), "gpu": None, "platform": platform.platform(),
                    "python": platform.python_version(), "load_avg_before": load_before, "load_avg_after": load_after},
        "models": args.models, "budget": BUDGET + ["--limit 200 sentences", "--config {sweep: false}"],
        "verdicts": [{"model": name, "verdict": v, "pvs": k} for name, (v, k) in zip(args.models, want)],
        "runs": runs, "figures": figures,
        "per_verdict_s": {"mining_cpu_1t": round(mining_s, 3), "scan_many_task_cpu_1t": round(task_s, 3),
                          "task_overhead": round(overhead_s, 3), "lmsan_mine_process_1t": round(process_s, 3)},
        "scaling": {
            "formula": "models/hour(N GPUs) = 3600 * N * c / (t_verdict + t_load), c = 1/--gpus-per-task scans "
                       "sharing one GPU while it is not saturated; tasks are independent, so it is linear in N "
                       "until the driver or the shared file system limits it",
            "t_load_s (measured here, CPU, warm worker)": round(overhead_s, 3),
            "t_verdict_s (H200, BENCHMARKS.md, not this run)": H200_TO_VERDICT_S,
            "models_per_hour_per_gpu_c1": {key: per_hour(1, value + overhead_s)
                                           for key, value in H200_TO_VERDICT_S.items()},
            "cpu_figure": f"This run: {per_hour(1, task_s)} models/hour per 1-CPU task at {task_s:.2f} s per verdict",
        },
    }
    save("scan_many", report, table(report))


def table(report: dict) -> str:
    f, p, s = report["figures"], report["per_verdict_s"], report["scaling"]
    lines = [
        f"# scan-many vs sequential lmsan-mine ({len(report['models'])} tiny models, 2-core CPU, no GPU)",
        "",
        f"Budget: {' '.join(BUDGET)}, 200 sentences, no trigger sweep. Load average "
        f"{report['machine']['load_avg_before'][0]:.2f} before, {report['machine']['load_avg_after'][0]:.2f} after "
        "(machine shared with other jobs). Verdicts and PV counts identical in all three.",
        "",
        "| run | wall (s) | models/hour | scan-many speed-up |",
        "|---|---:|---:|---:|",
    ]
    for name in ("sequential-1t", "sequential-2t", "scan-many"):
        ratio = "" if name != "scan-many" else (f"{f[name]['speedup_vs_sequential-1t']:.2f}x vs 1t, "
                                                f"{f[name]['speedup_vs_sequential-2t']:.2f}x vs 2t")
        lines.append(f"| {name} | {f[name]['wall_s']:.1f} | {f[name]['models_per_hour']:.0f} | {ratio} |")
    lines += [
        "",
        f"Per verdict (means): mining {p['mining_cpu_1t']:.2f} s (report `timings_s.total`, 1 thread), "
        f"scan-many task {p['scan_many_task_cpu_1t']:.2f} s (so {p['task_overhead']:.2f} s to load model and data in "
        f"a warm worker), a standalone `lmsan-mine` process {p['lmsan_mine_process_1t']:.2f} s "
        "(torch import included). "
        "scan-many gains more than 2x on 2 cores because, besides running two scans at once, a warm Ray worker "
        "imports torch once for many models; a second `--threads` does not speed up these small scans.",
        "",
        f"Scaling on paper: {s['formula']}. With t_load = {s['t_load_s (measured here, CPU, warm worker)']:.2f} s "
        "(CPU, this run) and the H200 times to verdict of BENCHMARKS.md (another budget: detect mode, "
        "1000 sentences, before the trigger sweep): "
        + "; ".join(f"{key}: {value:.0f} models/hour per GPU"
                    for key, value in s["models_per_hour_per_gpu_c1"].items())
        + f", times N. {s['cpu_figure']}.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
