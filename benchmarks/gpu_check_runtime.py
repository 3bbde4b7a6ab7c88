"""GPU check of the runtime guard: CUDA and TensorRT providers, provider in use, latency, parity.

    python benchmarks/gpu_check_runtime.py [--guard DIR] [--out results.json]

Without ``--guard`` it builds a random-init tiny BERT (d=128, 2 layers; needs torch and
transformers) and exports a guard for it. For each of CUDAExecutionProvider and
TensorrtExecutionProvider that this onnxruntime build offers, it loads the guard (no silent
fallback: a fallback to CPU is reported as such), times the warm-up (TensorRT builds its engine,
cached under $LMSAN_CACHE/tensorrt), checks the scores against the CPU provider and prints p50
latency at 64 tokens, batch 1 and 32. Providers that are missing are skipped; the script exits 0
unless a provider that is offered fails or disagrees with the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
WORDS = "the of and a to in is you that it he was for on are as with his they at be this from have or".split()


def export_tiny(out: Path) -> Path:
    """Export a random-init tiny BERT with random PVs (a smoke-test guard, not a backdoor)."""
    from lmsan.export import export_guard
    from lmsan.models.tiny import TinySpec, build_tiny
    from lmsan.pvset import PVSet

    model, tokenizer = build_tiny(TinySpec(arch="bert", hidden=128, layers=2, heads=2, intermediate=512))
    model.save_pretrained(out / "model")
    tokenizer.save_pretrained(out / "model")
    pvs = PVSet(np.random.default_rng(0).standard_normal((6, 128)).astype(np.float32))
    return export_guard(out / "model", pvs, out / "guard").path


def p50_ms(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e3)


def check(guard_dir: Path, provider: str, texts: list[str], reference: list) -> dict:
    from lmsan.errors import ProviderError
    from lmsan.runtime import Guard

    try:
        started = time.perf_counter()
        guard = Guard.load(guard_dir, providers=[provider], max_batch=32)
        load_s = time.perf_counter() - started
    except ProviderError as exc:
        return {"status": "fallback-or-unavailable", "message": str(exc)}
    warmup_s = guard.warmup([(1, 16), (1, 64), (32, 64)])
    results = guard.scan_batch(texts, sanitize=False)
    max_diff = max(abs(r.match - ref.match) for r, ref in zip(results, reference))
    same_flags = all(r.triggered == ref.triggered for r, ref in zip(results, reference))
    out = {
        "status": "ok" if max_diff <= 2 / 128 and same_flags else "mismatch",
        "provider_in_use": guard.provider, "session_providers": guard.session.get_providers(),
        "load_s": round(load_s, 3), "warmup_s": round(warmup_s, 3),
        "max_match_diff_vs_cpu": max_diff, "same_triggered_as_cpu": same_flags,
        "p50_ms_b1_t64": p50_ms(lambda: guard.scan(texts[0], sanitize=False), 50),
        "p50_ms_b32_t64": p50_ms(lambda: guard.scan_batch(texts[:32], sanitize=False), 20),
    }
    started = time.perf_counter()
    Guard.load(guard_dir, providers=[provider], max_batch=32).warmup([(1, 16), (1, 64), (32, 64)])
    out["reload_and_warmup_s_cached_engine"] = round(time.perf_counter() - started, 3)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guard", type=Path, help="an exported guard directory (default: export a tiny one)")
    parser.add_argument("--out", type=Path, help="also write the JSON summary here")
    args = parser.parse_args()
    import onnxruntime as ort

    available = ort.get_available_providers()
    print(f"onnxruntime {ort.__version__}, device {ort.get_device()}, providers offered: {', '.join(available)}")
    wanted = [p for p in ("CUDAExecutionProvider", "TensorrtExecutionProvider") if p in available]
    summary: dict = {"onnxruntime": ort.__version__, "offered": available, "providers": {}}
    if not wanted:
        print("SKIP: this onnxruntime build offers neither CUDA nor TensorRT (pip install onnxruntime-gpu)")
        summary["skipped"] = True
    else:
        from lmsan.runtime import Guard

        with tempfile.TemporaryDirectory() as tmp:
            guard_dir = args.guard or export_tiny(Path(tmp))
            rng = np.random.default_rng(0)
            texts = [" ".join(rng.choice(WORDS, 60)) for _ in range(32)]
            cpu = Guard.load(guard_dir)
            reference = cpu.scan_batch(texts, sanitize=False)
            summary["providers"]["CPUExecutionProvider"] = {
                "p50_ms_b1_t64": p50_ms(lambda: cpu.scan(texts[0], sanitize=False), 50),
                "p50_ms_b32_t64": p50_ms(lambda: cpu.scan_batch(texts, sanitize=False), 10),
            }
            for provider in wanted:
                summary["providers"][provider] = check(guard_dir, provider, texts, reference)
    for name, result in summary["providers"].items():
        print(f"{name}: {json.dumps(result, sort_keys=True)}")
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    bad = [n for n, r in summary["providers"].items() if r.get("status") == "mismatch"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
