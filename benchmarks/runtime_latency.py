"""Runtime latency of the ONNX guard vs the alternatives (writes benchmarks/results/runtime_latency.*).

Models: the tiny POR BERT (d=128, 2 layers; the e2e model) and all-MiniLM-L6-v2 under POR (d=384, 6
layers; ``lmsan.attacks.minilm_attack``, end_to_end's MiniLM), each guarded with its attack's own PVs. Inputs of
16 / 64 / 128 tokens, batch 1 and 32. Modes:

    a   plain ONNX backbone: tokenize + one session run of the backbone graph (no head): the
        full forward of an unpruned export, cut before the head, without the value_info that
        ``onnx.utils.extract_model`` adds (with it onnxruntime fuses SkipLayerNormalization,
        about 5 % slower on this CPU: the plain graph is timed as the exporter writes it)
    b   guard.scan_batch on clean input (inputs the guard does not flag)
    bu  the same with an unpruned guard (``lmsan-export --no-prune``: the full last layer)
    b8  the same with the int8 guard (``lmsan-export --int8``)
    c   PyTorch eager backbone (fp32) + a separate numpy sign-match monitor (the authors' approach)
    d   guard.scan_batch on triggered input, removal with the default search (probe: the
        saliency guess, then keep-only splitting; batched across inputs)
    dn  the same without the saliency guess (``Guard.load(saliency=False)``)
    db  the same with the bisect search
    d8  d with the int8 guard
    e   d with the sequential search (one trial per session call and input)

Each cell runs for ``--budget`` seconds (x1.5 for d and e; at least ``--min-reps`` calls, 1 for
triggered batch-32 cells) after one warm-up call (none for triggered batch-32 cells); p50 / p99 of wall time and p50 of process CPU
time are over those calls (reported with the count). At batch 1 each call scans another of the
cell's inputs, so triggered cells average over trigger positions. Also: guard cold start (fresh
interpreter: import lmsan.runtime + Guard.load, hash checks included), median of 3.

onnxruntime and torch run with ``--threads`` intra-op threads (default 1): on a shared 2-core box a
parallel region stalls whenever a sibling thread is descheduled, which swamps the comparison.
Process CPU time per call is the figure least disturbed by other load; both are reported.

    python benchmarks/runtime_latency.py [--budget 2.5] [--models tiny,minilm] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _results import save

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TRIGGERS = ("cf", "mn", "tq", "qt", "mm", "pt")
LENGTHS = (16, 64, 128)
BATCHES = (1, 32)
MODES = ("a", "b", "bu", "b8", "c", "d", "dn", "db", "d8", "e")
TRIGGERED = ("d", "dn", "db", "d8", "e")
RATIOS = ("b/a", "bu/b", "c/b", "c/b8", "e/d", "d/b", "dn/d", "db/d")


def attacked(name: str) -> Path:
    """The POR-attacked model directory (cached by lmsan.attacks.zoo)."""
    from lmsan.attacks import minilm_attack, standard_attack

    return standard_attack("bert-por") if name == "tiny" else minilm_attack()


def build(model: Path, work: Path) -> tuple[Path, Path, Path, Path, np.ndarray]:
    """Export the guard, its int8 and unpruned twins; cut the backbone-only graph out of the last."""
    import onnx
    import onnx.utils

    from lmsan.export import export_guard
    from lmsan.pvset import PVSet

    attack = json.loads((model / "attack.json").read_text())
    pvs = PVSet(np.asarray(attack["pvs"], np.float32), target=attack["target"])
    guard_dir = export_guard(model, pvs, work / "guard").path
    int8_dir = export_guard(model, pvs, work / "guard-int8", int8=True).path
    full_dir = export_guard(model, pvs, work / "guard-full", features=True, prune=False).path
    manifest = json.loads((full_dir / "guard.json").read_text())
    backbone = work / "backbone.onnx"
    seq_inputs = [name for name in manifest["inputs"] if name != "threshold"]
    onnx.utils.extract_model(str(full_dir / "model.onnx"), str(backbone), seq_inputs, ["features"])
    plain = onnx.load(str(backbone))
    del plain.graph.value_info[:]
    onnx.save(plain, str(backbone))
    return guard_dir, int8_dir, full_dir, backbone, pvs.signs


def make_inputs(guard, length: int, count: int, seed: int) -> tuple[list[str], list[str]]:
    """``count`` clean texts of ``length - 1`` tokens the guard does not flag, and the same texts
    with one trigger word inserted at a random position (``length`` tokens)."""
    from lmsan.data import standard_splits

    rng = np.random.default_rng(seed)
    pool = [w for s in standard_splits()["test"] for w in s.split()]
    clean, poisoned, start = [], [], 0
    while len(clean) < count:
        words: list[str] = []
        while True:
            nxt = words + [pool[start % len(pool)]]
            if guard.encoder.lengths([(" ".join(nxt),)])[0] > length - 1:
                if not words:  # one word alone is too long: skip it
                    start += 1
                    continue
                break
            words, start = nxt, start + 1
        text = " ".join(words)
        if guard.scan(text, sanitize=False).triggered:
            continue  # a clean false positive would time a removal in mode b
        words.insert(int(rng.integers(0, len(words) + 1)), TRIGGERS[len(clean) % len(TRIGGERS)])
        trig = " ".join(words)
        if not guard.scan(trig, sanitize=False).triggered:
            continue  # the backdoor missed: mode d would time a clean scan
        clean.append(text)
        poisoned.append(trig)
    return clean, poisoned


def timed(fn, calls, *, budget: float, min_reps: int, warmup: bool = True) -> tuple[list[float], list[float]]:
    """Run ``fn(call)`` over ``calls`` (cycling) for ``budget`` seconds and >= ``min_reps`` calls.

    Returns:
        (wall seconds, process CPU seconds) per call.
    """
    if warmup:
        fn(calls[0])
    wall, cpu, started, i = [], [], time.perf_counter(), 0
    while len(wall) < min_reps or time.perf_counter() - started < budget:
        t, c = time.perf_counter(), time.process_time()
        fn(calls[i % len(calls)])
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        i += 1
        if len(wall) >= 2000:
            break
    return wall, cpu


def bench_model(name: str, work: Path, args) -> dict:
    import onnxruntime as ort
    import torch
    from transformers import AutoModel, AutoTokenizer

    from lmsan.pvset import sign_agreement
    from lmsan.runtime import Guard

    model_dir = Path(getattr(args, name)) if getattr(args, name) else attacked(name)
    guard_dir, int8_dir, full_dir, backbone, signs = build(model_dir, work / name)
    threads = args.threads or None
    if threads:
        torch.set_num_threads(threads)
    guards = {s: Guard.load(guard_dir, threads=threads, search=s) for s in ("probe", "bisect", "sequential")}
    guards["no guess"] = Guard.load(guard_dir, threads=threads, saliency=False)
    guard, guard8 = guards["probe"], Guard.load(int8_dir, threads=threads)
    unpruned = Guard.load(full_dir, threads=threads)
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    plain = ort.InferenceSession(str(backbone), options, providers=["CPUExecutionProvider"])
    seq_inputs = [i.name for i in plain.get_inputs()]
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    torch_model = AutoModel.from_pretrained(str(model_dir)).eval()
    threshold = guard.threshold

    def plain_run(texts):
        batch = vars(guard.encoder.pad(guard.encoder.encodings([(t,) for t in texts])))
        return plain.run(["features"], {k: batch[k] for k in seq_inputs})

    def torch_run(texts):
        with torch.inference_mode():
            features = torch_model(**tokenizer(texts, padding=True, return_tensors="pt")).last_hidden_state[:, 0]
        return sign_agreement(features.numpy(), signs).max(axis=1) > threshold

    cells = {}
    for length in LENGTHS:
        clean, poisoned = make_inputs(guard, length, max(32, args.distinct), seed=length)
        for batch in BATCHES:
            groups = [clean[i : i + batch] for i in range(0, len(clean) - batch + 1, batch)][: args.distinct]
            pgroups = [poisoned[i : i + batch] for i in range(0, len(poisoned) - batch + 1, batch)][: args.distinct]
            heavy = batch > 1
            modes = {
                "a": (plain_run, groups), "b": (guard.scan_batch, groups),
                "bu": (unpruned.scan_batch, groups), "b8": (guard8.scan_batch, groups),
                "c": (torch_run, groups), "d": (guard.scan_batch, pgroups),
                "dn": (guards["no guess"].scan_batch, pgroups), "db": (guards["bisect"].scan_batch, pgroups),
                "d8": (guard8.scan_batch, pgroups), "e": (guards["sequential"].scan_batch, pgroups),
            }
            for mode, (fn, calls) in modes.items():
                budget = args.budget * (1.5 if mode in TRIGGERED else 1.0)
                slow = heavy and mode in TRIGGERED  # seconds per call: no warm-up call (the session is warm)
                wall, cpu = timed(fn, calls, budget=budget, min_reps=1 if slow else args.min_reps, warmup=not slow)
                cell = cells[f"{length}/{batch}/{mode}"] = {
                    "p50_ms": float(np.percentile(wall, 50) * 1e3), "p99_ms": float(np.percentile(wall, 99) * 1e3),
                    "cpu_p50_ms": float(np.percentile(cpu, 50) * 1e3), "calls": len(wall),
                }
                print(f"{name} T={length} B={batch} {mode}: p50 {cell['p50_ms']:.2f} ms, cpu {cell['cpu_p50_ms']:.2f} ms "
                      f"({len(wall)} calls)", file=sys.stderr, flush=True)
    results = guard.scan_batch(poisoned)
    removed_ok = [r.removed and r.removed[0] in TRIGGERS for r in results]
    same_without_guess = [(r.removed, r.sanitized) == (x.removed, x.sanitized)
                          for r, x in zip(results, guards["no guess"].scan_batch(poisoned))]
    fp32, int8 = guard.scan_batch(clean + poisoned), guard8.scan_batch(clean + poisoned)
    return {"model": str(model_dir), "guard": json.loads((guard_dir / "guard.json").read_text())["model"],
            "cells": cells, "removal_hit_rate_last_length": float(np.mean(removed_ok)),
            "same_removal_without_guess_last_length": float(np.mean(same_without_guess)),
            "int8_vs_fp32_last_length": {
                "same_triggered": float(np.mean([x.triggered == y.triggered for x, y in zip(fp32, int8)])),
                "same_removed": float(np.mean([x.removed == y.removed for x, y in zip(fp32, int8)])),
                "max_match_diff": max(abs(x.match - y.match) for x, y in zip(fp32, int8))},
            "cold_start_s": cold_start(guard_dir), "cold_start_no_verify_s": cold_start(guard_dir, verify=False)}


def cold_start(guard_dir: Path, *, verify: bool = True) -> float:
    code = ("import time; t=time.perf_counter(); from lmsan.runtime import Guard; "
            f"Guard.load({str(guard_dir)!r}, verify={verify}); print(time.perf_counter()-t)")
    runs = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
            for _ in range(3)]
    return float(np.median(runs))


def ratios(cells: dict, key: str = "p50_ms") -> dict:
    """Target ratios of p50 latencies (``key``: ``p50_ms`` wall or ``cpu_p50_ms``)."""
    out = {}
    for length in LENGTHS:
        for batch in BATCHES:
            p = {m: cells[f"{length}/{batch}/{m}"][key] for m in MODES}
            out[f"{length}/{batch}"] = {"b/a": p["b"] / p["a"], "bu/b": p["bu"] / p["b"],
                                        "c/b": p["c"] / p["b"], "c/b8": p["c"] / p["b8"],
                                        "e/d": p["e"] / p["d"], "d/b": p["d"] / p["b"], "dn/d": p["dn"] / p["d"],
                                        "db/d": p["db"] / p["d"]}
    return out


def markdown(report: dict) -> str:
    lines = [f"Runtime latency: {report['machine']}; {report['threads_note']}", "",
             "Each cell: wall p50 / p99 ms, [CPU p50 ms], (calls). Ratios use wall p50, then CPU p50.", "",
             "| model | tokens | batch | a plain ONNX | b guard, clean | bu unpruned guard, clean "
             "| b8 int8 guard, clean | c torch + monitor "
             "| d guard, triggered (probe) | dn triggered (probe, no guess) | db triggered (bisect) "
             "| d8 int8 guard, triggered | e triggered (sequential) "
             "| b/a | bu/b | c/b | c/b8 | e/d | d/b | dn/d | db/d |",
             "|---|---:|---:|---|---|---|---|---|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, result in report["models"].items():
        for length in LENGTHS:
            for batch in BATCHES:
                cells = [result["cells"][f"{length}/{batch}/{m}"] for m in MODES]
                r, c = result["ratios"][f"{length}/{batch}"], result["cpu_ratios"][f"{length}/{batch}"]
                lines.append(f"| {name} | {length} | {batch} | " + " | ".join(
                    f"{x['p50_ms']:.2f} / {x['p99_ms']:.2f} [{x['cpu_p50_ms']:.2f}] ({x['calls']})" for x in cells) +
                    "".join(f" | {r[k]:.2f}, {c[k]:.2f}" for k in RATIOS)
                    + " |")
    lines.append("")
    for name, result in report["models"].items():
        lines.append(f"- {name}: guard cold start (fresh interpreter: import + load, hashes checked) "
                     f"{result['cold_start_s']:.2f} s, without the hash check {result['cold_start_no_verify_s']:.2f} s")
        lines.append(f"- {name}: removal with and without the saliency guess identical on the 128-token inputs: "
                     f"{result['same_removal_without_guess_last_length']:.1%}")
        agree = result["int8_vs_fp32_last_length"]
        lines.append(f"- {name}, int8 vs fp32 guard on the 128-token inputs (clean + triggered): same verdict "
                     f"{agree['same_triggered']:.1%}, same removal {agree['same_removed']:.1%}, "
                     f"largest match difference {agree['max_match_diff']:.3f}")
    lines.append(f"- load average {report['load_average_start'][0]:.1f} at start, "
                 f"{report['load_average_end'][0]:.1f} at end; wall {report['wall_s']:.0f} s")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=2.5, help="seconds per cell (x1.5 for triggered cells)")
    parser.add_argument("--min-reps", type=int, default=5)
    parser.add_argument("--distinct", type=int, default=12, help="distinct inputs (batches) per cell")
    parser.add_argument("--models", default="tiny,minilm")
    parser.add_argument("--tiny", help="use this attacked model dir (with attack.json) instead of the cached build")
    parser.add_argument("--minilm", help="the same for MiniLM (its first build trains ~25 min on 2 cores)")
    parser.add_argument("--threads", type=int, default=1,
                        help="intra-op threads of onnxruntime and torch (0: library defaults)")
    args = parser.parse_args()
    import onnxruntime
    import torch

    started = time.perf_counter()
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, onnxruntime "
                   f"{onnxruntime.__version__}, torch {torch.__version__}",
        "load_average_start": os.getloadavg(), "args": vars(args), "models": {},
        "threads_note": (f"{args.threads} intra-op thread(s) for onnxruntime and torch" if args.threads
                         else "library-default threads"),
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            result = bench_model(name, Path(tmp), args)
            result["ratios"] = ratios(result["cells"])
            result["cpu_ratios"] = ratios(result["cells"], "cpu_p50_ms")
            report["models"][name] = result
    report["load_average_end"] = os.getloadavg()
    report["wall_s"] = time.perf_counter() - started
    save("runtime_latency", report, markdown(report))


if __name__ == "__main__":
    main()
