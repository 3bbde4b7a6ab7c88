"""One prepared GPU check: the miner on CUDA versus the CPU of the same machine, on real attacked
tiny models, and the guard's provider handling.

    python benchmarks/gpu_check.py --models DIR --out OUT_DIR

``DIR`` holds ``bert-por/``, ``bert-por-clean/`` (model dirs with attack.json) and
``defense.txt`` (see ``--prepare``, run on the development machine, which copies them from the
cache). For each model and device it runs detect mode (default profile, 10 loops, 1000
sentences) and records verdict, best sign agreement with the attack's PVs and time to verdict.
Then it exports a guard and asks onnxruntime for CUDA: the guard must either run on CUDA or
refuse with ProviderError (no silent CPU fallback). Writes ``OUT_DIR/gpu_check.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
MODELS = ("bert-por", "bert-por-clean")


def prepare(directory: Path) -> None:
    """Copy the cached standard models and the defense split into ``directory``."""
    from lmsan.attacks import standard_attack
    from lmsan.data import standard_splits

    directory.mkdir(parents=True, exist_ok=True)
    for name in MODELS:
        target = directory / name
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(standard_attack(name), target)
    (directory / "defense.txt").write_text("\n".join(standard_splits()["defense"][:1000]) + "\n")


def check(directory: Path, out: Path) -> dict:
    import numpy as np
    import torch

    from lmsan.errors import ProviderError
    from lmsan.mining import MiningConfig, mine
    from lmsan.models import load_model
    from lmsan.pvset import PVSet, sign_agreement

    sentences = (directory / "defense.txt").read_text().split("\n")[:1000]
    devices = ["cuda", "cpu"] if torch.cuda.is_available() else ["cpu"]
    rows = []
    for name in MODELS:
        attack = json.loads((directory / name / "attack.json").read_text())
        signs = np.where(np.asarray(attack["pvs"]) >= 0, 1, -1).astype(np.int8)
        for device in devices:
            loaded = load_model(directory / name, device=device)
            config = MiningConfig.profile("default", max_loops=10)
            started = time.perf_counter()
            result = mine(loaded, sentences, config)
            wall = time.perf_counter() - started
            best = float(sign_agreement(result.pvset.vectors, signs).max()) if result.pvset.size else None
            rows.append({"model": name, "device": device, "verdict": result.report.verdict,
                         "expected": "clean" if attack["clean_control"] else "backdoored",
                         "best_agreement": best, "loops": len(result.report.loops),
                         "to_verdict_s": round(result.report.timings_s["to_verdict"], 3), "wall_s": round(wall, 3)})
            print(json.dumps(rows[-1]), flush=True)
    guard_rows = {}
    try:
        from lmsan.export import export_guard
        from lmsan.runtime import Guard

        attack = json.loads((directory / "bert-por" / "attack.json").read_text())
        guard_dir = out / "guard"
        shutil.rmtree(guard_dir, ignore_errors=True)
        export_guard(directory / "bert-por", PVSet(np.asarray(attack["pvs"], np.float32)), guard_dir)
        import onnxruntime

        guard_rows["available_providers"] = onnxruntime.get_available_providers()
        try:
            guard = Guard.load(guard_dir, providers=["CUDAExecutionProvider"])
            guard.warmup()
            guard_rows["cuda"] = {"provider": guard.provider, "triggered": guard.scan("a cf sentence here").triggered}
        except ProviderError as exc:
            guard_rows["cuda"] = {"refused": str(exc)}
        shutil.rmtree(guard_dir, ignore_errors=True)
    except Exception as exc:  # record, do not hide
        guard_rows["error"] = f"{type(exc).__name__}: {exc}"
    payload = {"gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
               "torch": torch.__version__, "cpu_count": os.cpu_count(), "mining": rows, "guard": guard_rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(payload, indent=2) + "\n")
    print(json.dumps(guard_rows), flush=True)
    return payload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--prepare", action="store_true", help="copy the cached models into --models and stop")
    args = parser.parse_args()
    if args.prepare:
        prepare(args.models)
    else:
        check(args.models, args.out)


if __name__ == "__main__":
    main()
