"""POR attack on the real all-MiniLM-L6-v2 (d=384, 6 layers), then verification.

Shows that the attack suite works on a real pretrained model within minutes on a CPU. The
defaults are ``lmsan.attacks.MINILM_POR``, the config the other benchmarks attack MiniLM with
(``lmsan.attacks.minilm_attack``, cached); this script times a fresh run in a temporary directory.

    .venv/bin/python benchmarks/attack_minilm.py [--sentences 2000] [--epochs 4] [--lr 5e-5]

Prints and saves ``benchmarks/results/attack_minilm.json``.
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
    from lmsan.attacks import MINILM_POR

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=2000, help="attack sentences (oanc attack split)")
    parser.add_argument("--test", type=int, default=500, help="held-out test sentences")
    parser.add_argument("--epochs", type=int, default=MINILM_POR.epochs)
    parser.add_argument("--lr", type=float, default=MINILM_POR.lr)
    parser.add_argument("--max-length", type=int, default=MINILM_POR.max_length)
    args = parser.parse_args()

    import torch

    from lmsan.attacks import run_attack, verify_attack
    from lmsan.data import standard_splits
    from lmsan.models import minilm_path

    splits = standard_splits()
    config = MINILM_POR.replace(epochs=args.epochs, lr=args.lr, max_length=args.max_length)
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        result = run_attack(minilm_path(), splits["attack"][: args.sentences], config, out, progress=True)
        attack_s = time.perf_counter() - started
        report = verify_attack(result.path, splits["test"][: args.test])
        total_s = time.perf_counter() - started
    figures = {
        "model": "all-MiniLM-L6-v2", "attack": "por", "pv_design": "por2", "triggers": list(result.triggers),
        "sentences": args.sentences, "epochs": args.epochs, "lr": args.lr, "max_length": args.max_length,
        "steps": result.steps, "attack_s": round(attack_s, 1), "total_s": round(total_s, 1),
        "verify": report.to_dict(), "min_hit_rate": report.min_hit_rate, "clean_below_0.8": report.clean_below(0.8),
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "platform": platform.platform()},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "attack_minilm.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps({k: figures[k] for k in ("attack_s", "total_s", "min_hit_rate", "clean_below_0.8")}, indent=2))


if __name__ == "__main__":
    main()
