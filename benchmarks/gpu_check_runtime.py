"""GPU check of the runtime guard: provider in use, parity with the CPU, trigger removal, latency.

    # here (CPU): the inputs, from an exported guard of a backdoored model
    python benchmarks/gpu_check_runtime.py --write-texts texts.json --guard fp32=GUARD_DIR
    # on the GPU machine (onnxruntime-gpu installed)
    python benchmarks/gpu_check_runtime.py --guard fp32=DIR [--guard fp16=DIR ...] --texts texts.json \\
        [--shape-model MODEL_DIR] [--out results.json]

``texts.json`` holds, per length (16/64/128 tokens), clean texts the guard does not flag and the
same texts with one trigger word inserted (``benchmarks/runtime_latency.make_inputs``).

The first ``--guard`` on the CPU provider is the reference. Every guard is then loaded on each of
CPU, CUDA and TensorRT that the onnxruntime build offers (a fallback is reported, never silent),
warmed up, and checked against the reference: same ``triggered`` flags, ``match`` within 2/d, and
the same removed words with the ``probe``, ``bisect`` and ``code`` searches. p50 latencies: clean
(b) and triggered (d: each of those searches; e: sequential, batch 1) at batch 1 and 32. GPU providers run
twice: with shape buckets (their default; warm-up of every bucket) and without.

``--shape-model``: a model directory whose ``config.json`` and tokenizer give the shape of a larger
model (e.g. all-MiniLM-L6-v2's); it is built with random weights, exported in fp32 and fp16 with
random PVs and timed on clean input only (timings, not detection).

Writes the JSON summary after each section (``--out``), so a run cut short keeps what it measured.
Exit code 1 if a provider that loaded disagrees with the CPU reference.
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
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
PROVIDERS = ("CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider")
LENGTHS = ("16", "64", "128")
WARMUP_SHAPES = [(1, 16), (1, 64), (1, 128), (32, 16), (32, 64), (32, 128)]
SEARCHES = ("probe", "bisect", "code")


def p50_ms(fn, calls: list, reps: int) -> float:
    """Median wall time (ms) of ``fn(call)`` over ``reps`` calls cycling through ``calls``, after one warm-up."""
    fn(calls[0])
    times = []
    for i in range(reps):
        started = time.perf_counter()
        fn(calls[i % len(calls)])
        times.append(time.perf_counter() - started)
    return round(float(np.median(times) * 1e3), 3)


def write_texts(guard_dir: Path, out: Path, count: int = 64) -> None:
    """Clean and triggered texts per length, as ``benchmarks/runtime_latency.py`` makes them."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from runtime_latency import make_inputs

    from lmsan.runtime import Guard

    guard = Guard.load(guard_dir)
    texts = {}
    for length in LENGTHS:
        clean, poisoned = make_inputs(guard, int(length), count, seed=int(length))
        texts[length] = {"clean": clean, "poisoned": poisoned}
    out.write_text(json.dumps(texts))


def reference(guard_dir: Path, texts: dict) -> dict:
    """CPU results of the reference guard: per length, clean flags/matches and removal per search."""
    from lmsan.runtime import Guard

    guard = Guard.load(guard_dir, max_batch=64)
    ref = {}
    for length, sets in texts.items():
        ref[length] = {"clean": guard.scan_batch(sets["clean"], sanitize=False), "removed": {}}
        for search in SEARCHES:
            guard.search = search
            ref[length]["removed"][search] = [r.removed for r in guard.scan_batch(sets["poisoned"])]
        ref[length]["poisoned"] = guard.scan_batch(sets["poisoned"], sanitize=False)
    return ref


def check_guard(guard_dir: Path, provider: str, texts: dict, ref: dict, *, buckets: bool | None = None) -> dict:
    """Load ``guard_dir`` on ``provider`` (``buckets``: see ``Guard.load``); parity with ``ref``; p50 latencies."""
    from lmsan.errors import ProviderError
    from lmsan.runtime import Guard

    started = time.perf_counter()
    try:
        guard = Guard.load(guard_dir, providers=[provider], max_batch=64, buckets=buckets)
    except ProviderError as exc:
        return {"status": "unavailable", "message": str(exc)}
    out: dict = {"load_s": round(time.perf_counter() - started, 3), "provider_in_use": guard.provider,
                 "session_providers": guard.session.get_providers(), "buckets": guard.buckets,
                 "warmup_s": round(guard.warmup(None if guard.buckets else WARMUP_SHAPES), 3),
                 "parity": {}, "p50_ms": {}}
    agree = True
    for length, sets in texts.items():
        clean = guard.scan_batch(sets["clean"], sanitize=False)
        poisoned = guard.scan_batch(sets["poisoned"], sanitize=False)
        cell = {
            "max_match_diff": max(abs(a.match - b.match) for a, b in
                                  zip(clean + poisoned, ref[length]["clean"] + ref[length]["poisoned"])),
            "same_flags": all(a.triggered == b.triggered for a, b in
                              zip(clean + poisoned, ref[length]["clean"] + ref[length]["poisoned"])),
            "flagged_clean": sum(r.triggered for r in clean), "flagged_poisoned": sum(r.triggered for r in poisoned),
        }
        for search in SEARCHES:
            guard.search = search
            removed = [r.removed for r in guard.scan_batch(sets["poisoned"])]
            cell[f"same_removed_{search}"] = sum(a == b for a, b in zip(removed, ref[length]["removed"][search]))
        cell["count"] = len(sets["poisoned"])
        agree &= cell["same_flags"] and all(cell[f"same_removed_{s}"] == cell["count"] for s in SEARCHES)
        out["parity"][length] = cell
        out["p50_ms"][length] = time_cells(guard, sets)
    out["status"] = "ok" if agree else "mismatch"
    return out


def time_cells(guard, sets: dict) -> dict:
    """p50 ms of clean (b) and triggered (d, e) scans at batch 1 and 32."""
    clean1 = [[t] for t in sets["clean"][:16]]
    poisoned1 = [[t] for t in sets["poisoned"][:16]]
    clean32, poisoned32 = [sets["clean"][:32], sets["clean"][32:64]], [sets["poisoned"][:32], sets["poisoned"][32:64]]
    cells = {"b/1": p50_ms(lambda t: guard.scan_batch(t), clean1, 40),
             "b/32": p50_ms(lambda t: guard.scan_batch(t), clean32, 10)}
    for search in SEARCHES:
        guard.search = search
        cells[f"d-{search}/1"] = p50_ms(lambda t: guard.scan_batch(t), poisoned1, 16)
        cells[f"d-{search}/32"] = p50_ms(lambda t: guard.scan_batch(t), poisoned32, 4)
    guard.search = "sequential"
    cells["e/1"] = p50_ms(lambda t: guard.scan_batch(t), poisoned1, 8)
    guard.search = "probe"
    return cells


def shape_model(config_dir: Path, work: Path, providers: list[str]) -> dict:
    """Random-weight model of ``config_dir``'s shape, exported fp32/fp16; clean-input latency per provider."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from lmsan.export import export_guard
    from lmsan.pvset import PVSet
    from lmsan.runtime import Guard

    config = AutoConfig.from_pretrained(config_dir)
    model = AutoModel.from_config(config)
    model.save_pretrained(work / "model")
    AutoTokenizer.from_pretrained(config_dir).save_pretrained(work / "model")
    pvs = PVSet(np.random.default_rng(0).standard_normal((6, config.hidden_size)).astype(np.float32))
    rng = np.random.default_rng(1)
    words = "the of and a to in is you that it he was for on are as with his they at be this from".split()
    out: dict = {"config": str(config_dir), "hidden": config.hidden_size, "layers": config.num_hidden_layers}
    for precision in ("fp32", "fp16"):
        guard_dir = export_guard(work / "model", pvs, work / precision, fp16=precision == "fp16").path
        for provider in providers:
            if precision == "fp16" and provider == "CPUExecutionProvider":
                continue  # fp16 is the GPU format
            guard = Guard.load(guard_dir, providers=[provider], max_batch=64)
            guard.warmup(None if guard.buckets else WARMUP_SHAPES)
            cells = {}
            for length in (16, 64, 128):
                texts = [" ".join(rng.choice(words, length - 2)) for _ in range(64)]
                cells[f"{length}/1"] = p50_ms(lambda t: guard.scan_batch(t), [[t] for t in texts[:16]], 40)
                cells[f"{length}/32"] = p50_ms(lambda t: guard.scan_batch(t), [texts[:32], texts[32:]], 10)
            out[f"{precision}/{guard.provider}"] = cells
            print(f"shape model {precision} {guard.provider}: {cells}", flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guard", action="append", default=[], metavar="NAME=DIR",
                        help="an exported guard; the first one, on the CPU, is the reference")
    parser.add_argument("--texts", type=Path, help="texts.json (see --write-texts)")
    parser.add_argument("--write-texts", type=Path, help="write texts.json from the first --guard and exit")
    parser.add_argument("--shape-model", type=Path, help="config + tokenizer dir of a model shape to time")
    parser.add_argument("--out", type=Path, help="also write the JSON summary here")
    args = parser.parse_args()
    guards = dict(item.split("=", 1) for item in args.guard)
    if not guards:
        parser.error("give at least one --guard NAME=DIR")
    if args.write_texts:
        write_texts(Path(next(iter(guards.values()))), args.write_texts)
        return 0
    import onnxruntime as ort

    offered = [p for p in PROVIDERS if p in ort.get_available_providers()]
    summary: dict = {"onnxruntime": ort.__version__, "device": ort.get_device(),
                     "offered": ort.get_available_providers(), "guards": {}}
    print(f"onnxruntime {ort.__version__} ({ort.get_device()}), providers offered: {', '.join(offered)}", flush=True)

    def save() -> None:
        if args.out:
            args.out.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")

    texts = json.loads(args.texts.read_text())
    ref = reference(Path(next(iter(guards.values()))), texts)
    for index, (name, directory) in enumerate(guards.items()):
        for provider in offered[index > 0:]:  # the CPU for the reference guard only
            variants = {"": None} if provider == "CPUExecutionProvider" else {"": None, "/no-buckets": False}
            for suffix, buckets in variants.items():
                result = check_guard(Path(directory), provider, texts, ref, buckets=buckets)
                summary["guards"][f"{name}/{provider}{suffix}"] = result
                print(f"{name} on {provider}{suffix}: {json.dumps(result, sort_keys=True)}", flush=True)
                save()
                if result["status"] == "unavailable":
                    break
    if args.shape_model:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                summary["shape_model"] = shape_model(args.shape_model, Path(tmp), offered[:2])
            except Exception as exc:  # timings only: report and keep the parity results
                summary["shape_model"] = {"error": f"{type(exc).__name__}: {exc}"}
        save()
    bad = [n for n, r in summary["guards"].items() if r.get("status") == "mismatch"]
    print(f"mismatches: {bad or 'none'}", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
