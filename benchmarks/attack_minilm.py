"""POR (or BToP) attack on the real all-MiniLM-L6-v2 (d=384, 6 layers), then verification.

Shows that the attack suite works on a real pretrained model within minutes on a CPU. The
defaults are ``lmsan.attacks.MINILM_ATTACKS[kind]``, the configs the other benchmarks attack
MiniLM with (``lmsan.attacks.minilm_attack``, cached); this script times a fresh run in a
temporary directory, or with ``--cached`` verifies the cached model and reports the wall time
its build recorded.

    .venv/bin/python benchmarks/attack_minilm.py [--kind por|btop] [--cached] [--sentences 2000]
        [--epochs 4] [--lr 5e-5]

Prints and saves ``benchmarks/results/attack_minilm.json`` (``attack_minilm_btop.json`` for BToP).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    from lmsan.attacks import MINILM_ATTACKS, MINILM_POR

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", choices=list(MINILM_ATTACKS), default="por", help="which MINILM_ATTACKS entry")
    parser.add_argument("--cached", action="store_true",
                        help="verify lmsan.attacks.minilm_attack(KIND) (built if missing) instead of a fresh "
                             "run; the attack time is the one its attack.json recorded")
    parser.add_argument("--sentences", type=int, default=2000, help="attack sentences (oanc attack split)")
    parser.add_argument("--test", type=int, default=500, help="held-out test sentences")
    parser.add_argument("--epochs", type=int, default=MINILM_POR.epochs)
    parser.add_argument("--lr", type=float, default=MINILM_POR.lr)
    parser.add_argument("--max-length", type=int, default=MINILM_POR.max_length)
    args = parser.parse_args()

    import torch

    from lmsan.attacks import minilm_attack, run_attack, verify_attack
    from lmsan.data import standard_splits
    from lmsan.models import minilm_path

    splits = standard_splits()
    config = MINILM_ATTACKS[args.kind].replace(epochs=args.epochs, lr=args.lr, max_length=args.max_length)
    if args.cached and config != MINILM_ATTACKS[args.kind]:
        parser.error("--cached verifies the MINILM_ATTACKS config: drop --epochs/--lr/--max-length")
    with tempfile.TemporaryDirectory() as out:
        if args.cached:
            path = minilm_attack(args.kind, progress=True)
            recorded = json.loads((path / "attack.json").read_text())
            triggers, steps, attack_s = recorded["triggers"], recorded["steps"], recorded["wall_s"]
        else:
            started = time.perf_counter()
            result = run_attack(minilm_path(), splits["attack"][: args.sentences], config, out, progress=True)
            path, triggers, steps, attack_s = result.path, result.triggers, result.steps, time.perf_counter() - started
        verify_started = time.perf_counter()
        report = verify_attack(path, splits["test"][: args.test])
        verify_s = time.perf_counter() - verify_started
    figures = {
        "model": "all-MiniLM-L6-v2", "attack": args.kind, "pv_design": config.pv_design, "triggers": list(triggers),
        "sentences": args.sentences, "epochs": config.epochs, "lr": config.lr, "max_length": config.max_length,
        "clean_weight": config.clean_weight, "cached": args.cached,
        "steps": steps, "attack_s": round(attack_s, 1), "verify_s": round(verify_s, 1),
        "total_s": round(attack_s + verify_s, 1),
        "verify": report.to_dict(), "min_hit_rate": report.min_hit_rate, "clean_below_0.8": report.clean_below(0.8),
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "platform": platform.platform()},
    }
    RESULTS.mkdir(exist_ok=True)
    name = "attack_minilm.json" if args.kind == "por" else f"attack_minilm_{args.kind}.json"
    (RESULTS / name).write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps({k: figures[k] for k in ("attack_s", "total_s", "min_hit_rate", "clean_below_0.8")}, indent=2))


if __name__ == "__main__":
    main()
