"""What one shared graph for many tasks costs against a graph per task (writes
benchmarks/results/multitask.{json,md}).

For each backbone: tune two tasks (P-tuning v2, short runs: the answers do not matter here),
export a per-task guard for the first (its prompt and head baked in) and one shared guard for
both (prompt and head as graph inputs, ``lmsan-export --task A --task B``), then time
``Guard.scan_batch`` of clean inputs on both, interleaved, in one process (median of
``--repeats`` rounds), at batch 1 and 32. Also: answers agree, and disk size per added task.

    .venv/bin/python benchmarks/multitask.py [--minilm] [--repeats 30]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from _results import save

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def tuned(model: Path, task: str, out: Path) -> Path:
    from lmsan.models import load_model
    from lmsan.tuning.config import TuningConfig
    from lmsan.tuning.store import save_task
    from lmsan.tuning.tasks import task_data
    from lmsan.tuning.train import tune

    config = TuningConfig(task=task, method="prefix", epochs=1, train_size=200, test_size=50)
    loaded = load_model(model)
    return save_task(out / task, tune(loaded, task_data(task, train_size=200, test_size=50), config,
                                      progress=False), loaded)


def clean_pvs(model: Path):
    """Three random PVs (the guard must not fire on clean input: it times the clean path)."""
    import numpy as np

    from lmsan.models import load_model
    from lmsan.pvset import PVSet

    width = load_model(model).hidden_size
    return PVSet(np.random.default_rng(0).standard_normal((3, width)).astype(np.float32), target="cls")


def size_mb(directory: Path, pattern: str = "*") -> float:
    return sum(p.stat().st_size for p in directory.glob(pattern) if p.is_file()) / 2**20


def time_pair(a, b, texts: list[str], repeats: int) -> tuple[float, float]:
    """Median seconds per scan_batch(texts) of guards a and b, interleaved."""
    times = ([], [])
    for _ in range(repeats):
        for guard, bucket in ((a, times[0]), (b, times[1])):
            started = time.perf_counter()
            guard.scan_batch(texts)
            bucket.append(time.perf_counter() - started)
    return statistics.median(times[0]), statistics.median(times[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minilm", action="store_true", help="also all-MiniLM-L6-v2")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()

    import torch

    from lmsan.data import standard_splits
    from lmsan.export import export_guard
    from lmsan.models.zoo import default_tiny
    from lmsan.runtime import Guard

    torch.set_num_threads(1)
    backbones = {"tiny-bert": default_tiny("bert").path}
    if args.minilm:
        from lmsan.models import minilm_path

        backbones["all-MiniLM-L6-v2"] = minilm_path()
    sentences = standard_splits()["test"][:32]
    rows = []
    for name, model in backbones.items():
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            first, second = tuned(model, "sms-spam", out), tuned(model, "polarity", out)
            pvs = clean_pvs(model)
            own = export_guard(model, pvs, out / "own", task=first).path
            shared = export_guard(model, pvs, out / "shared", task=[first, second]).path
            own_guard = Guard.load(own, threshold=0.99)
            shared_guard = Guard.load(shared, threshold=0.99, task="sms-spam")
            agree = [a.prediction == b.prediction for a, b in zip(own_guard.scan_batch(sentences),
                                                                   shared_guard.scan_batch(sentences))]
            row = {"model": name, "answers_agree": sum(agree) / len(agree),
                   "own_graph_mb": round(size_mb(own, "model.onnx*"), 2),
                   "shared_graph_mb": round(size_mb(shared, "model.onnx*"), 2),
                   "task_tensors_mb": round(size_mb(shared, "task-sms-spam.safetensors"), 3)}
            for batch in (1, 32):
                texts = sentences[:batch]
                own_guard.scan_batch(texts), shared_guard.scan_batch(texts)  # warm up
                own_s, shared_s = time_pair(own_guard, shared_guard, texts, args.repeats)
                row[f"batch{batch}_own_ms"] = round(1000 * own_s, 3)
                row[f"batch{batch}_shared_ms"] = round(1000 * shared_s, 3)
                row[f"batch{batch}_ratio"] = round(shared_s / own_s, 3)
            rows.append(row)
            print(row, flush=True)
    lines = ["| model | batch 1: own / shared ms (ratio) | batch 32: own / shared ms (ratio) | answers agree "
             "| graph MB (own, shared) | per added task MB |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['batch1_own_ms']} / {r['batch1_shared_ms']} ({r['batch1_ratio']}x) | "
                     f"{r['batch32_own_ms']} / {r['batch32_shared_ms']} ({r['batch32_ratio']}x) | "
                     f"{r['answers_agree']:.0%} | {r['own_graph_mb']}, {r['shared_graph_mb']} | "
                     f"{r['task_tensors_mb']} (own graph: {r['own_graph_mb']}) |")
    report = {"rows": rows, "repeats": args.repeats,
              "machine": {"cpu_count": os.cpu_count(), "torch_threads": 1, "platform": platform.platform()}}
    save("multitask", report, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
