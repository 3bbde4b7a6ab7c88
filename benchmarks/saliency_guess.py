"""How often the guard's saliency guess names the trigger, and what it saves (writes
benchmarks/results/saliency_guess.*).

For every standard attack (``lmsan.attacks.STANDARD_ATTACKS``: tiny BERT / RoBERTa with POR,
NeuBA, BToP, POR-NER, random and single PVs; optionally the POR-attacked MiniLM of
``runtime_latency.py``), the guard is exported with its attack's own PVs and scans test sentences
with one of the attack's triggers inserted (target ``mask``: a ``[MASK]`` appended). For the
inputs it flags, with ``probe`` removal:

- guess right: the word the ``saliency`` output points at (``Encoder.top_word``) is the word
  removed;
- same removal: ``Guard.load(saliency=True)`` and ``saliency=False`` return identical results;
- session calls and process CPU time per input (one input per ``scan``, 1 thread), with and
  without the guess, interleaved over ``--reps`` passes (median).

    python benchmarks/saliency_guess.py [--sentences 150] [--reps 3] [--minilm]
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
from _results import save

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def models(with_minilm: bool) -> dict[str, Path]:
    """Attack name -> attacked model dir (cached builds)."""
    from lmsan.attacks import STANDARD_ATTACKS, standard_attack

    found = {name: standard_attack(name) for name in STANDARD_ATTACKS}
    if with_minilm:
        from runtime_latency import attacked

        found["minilm-por"] = attacked("minilm")
    return found


def triggered_inputs(guard, attack: dict, count: int) -> list[str]:
    """Test sentences with one of the attack's triggers inserted that fit the model and are flagged."""
    from lmsan.attacks.poison import insert_trigger
    from lmsan.data import standard_splits

    rng = np.random.default_rng(0)
    triggers = attack["triggers"]
    test = standard_splits()["test"][:count]
    texts = [insert_trigger(s, triggers[i % len(triggers)], rng) for i, s in enumerate(test)]
    if attack["target"] == "mask":
        texts = [f"{t} {guard.manifest.mask_token}" for t in texts]
    fits = guard.encoder.lengths([(t,) for t in texts])
    texts = [t for t, n in zip(texts, fits) if n <= guard.manifest.max_length]
    return [t for t, r in zip(texts, guard.scan_batch(texts, sanitize=False)) if r.triggered]


def measure(guard_dir: Path, texts: list[str], reps: int) -> dict:
    from lmsan.runtime import Guard

    guards = {use: Guard.load(guard_dir, threads=1, saliency=use) for use in (True, False)}
    calls, results = {}, {}
    for use, guard in guards.items():
        sessions, run = [], guard._run
        guard._run = lambda arrays, names, run=run, sessions=sessions: sessions.append(names) or run(arrays, names)
        results[use] = [(r.removed, r.sanitized, r.rejected) for r in (guard.scan(t) for t in texts)]
        calls[use] = len(sessions) / len(texts)
        guard._run = run
    units = [(t,) for t in texts]
    guide = guards[True]
    saliency = guide._detect(units, saliency=True)[3]
    guesses = [guide.encoder.top_word(u, row, protect=guide._protect) for u, row in zip(units, saliency)]
    right = [g == removed[0] for g, (removed, _, _) in zip(guesses, results[True]) if removed]
    cpu: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(reps):
        for use, guard in guards.items():
            started = time.process_time()
            for text in texts:
                guard.scan(text)
            cpu[use].append((time.process_time() - started) / len(texts) * 1e3)
    with_ms, without_ms = float(np.median(cpu[True])), float(np.median(cpu[False]))
    return {
        "inputs": len(texts), "guess_right": float(np.mean(right)) if right else None,
        "same_removal": float(np.mean([a == b for a, b in zip(results[True], results[False])])),
        "calls_per_input_with_guess": calls[True], "calls_per_input_without": calls[False],
        "cpu_ms_with_guess": with_ms, "cpu_ms_without": without_ms, "speedup": without_ms / with_ms,
    }


def markdown(report: dict) -> str:
    lines = ["Saliency guess (probe removal, 1 thread, process CPU ms per triggered input, median of "
             f"{report['reps']} interleaved passes; {report['sentences']} test sentences per attack)", "",
             "| attack | target | triggers | inputs | guess right | same removal | calls with / without "
             "| ms with / without | speedup |", "|---|---|---|---:|---:|---:|---|---|---:|"]
    for name, r in report["attacks"].items():
        right = "—" if r["guess_right"] is None else f"{r['guess_right']:.0%}"
        lines.append(f"| {name} | {r['target']} | {r['triggers']} | {r['inputs']} | {right} | {r['same_removal']:.0%} | "
                     f"{r['calls_per_input_with_guess']:.2f} / {r['calls_per_input_without']:.2f} | "
                     f"{r['cpu_ms_with_guess']:.2f} / {r['cpu_ms_without']:.2f} | {r['speedup']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=150, help="test sentences per attack")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--minilm", action="store_true", help="also the POR-attacked MiniLM (first build ~25 min)")
    args = parser.parse_args()
    from lmsan.export import export_guard
    from lmsan.pvset import PVSet
    from lmsan.runtime import Guard

    report = {"sentences": args.sentences, "reps": args.reps, "attacks": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in models(args.minilm).items():
            attack = json.loads((model / "attack.json").read_text())
            pvs = PVSet(np.asarray(attack["pvs"], np.float32), target=attack["target"])
            guard_dir = export_guard(model, pvs, Path(tmp) / name).path
            texts = triggered_inputs(Guard.load(guard_dir, threads=1), attack, args.sentences)
            result = measure(guard_dir, texts, args.reps)
            result.update(target=attack["target"], triggers=" / ".join(attack["triggers"]))
            report["attacks"][name] = result
            print(name, json.dumps(result), file=sys.stderr, flush=True)
    save("saliency_guess", report, markdown(report))


if __name__ == "__main__":
    main()
