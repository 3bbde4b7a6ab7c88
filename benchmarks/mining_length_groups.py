"""Evaluation rows in length groups: search-mode mining with one padded forward per chunk of
spans vs ``lmsan.mining.confirm.LENGTH_GROUPS`` groups of similar length (writes
benchmarks/results/mining_length_groups.{json,md}).

Trigger confirmation and the trigger sweep measure every span on the same evaluation sentences
(``TriggerSearch.eval_features``). Padding them all to the longest one wastes about half the
tokens; run in groups of similar length, each forward pads to its own group's longest row. Both
settings run side by side in one process (the module constant switched between runs), on the
models and corpus ``benchmarks/end_to_end.py`` mines (``lmsan-mine --mode search --loops 20
--patience 4``, the first 2000 defense sentences, one torch thread), and the PV sets are compared.

    .venv/bin/python benchmarks/mining_length_groups.py [--models bert-por-clean bert-por]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from typing import Any

import numpy as np
from _results import save

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def run(name: str) -> dict[str, Any]:
    import lmsan.mining.confirm as confirm
    from lmsan.attacks import standard_attack
    from lmsan.data import standard_splits
    from lmsan.mining import MiningConfig, mine
    from lmsan.models import load_model

    loaded = load_model(standard_attack(name))
    sentences = standard_splits()["defense"][:2000]
    config = MiningConfig.profile("default").replace(mode="search", max_loops=20, patience=4)
    default, results, figures = confirm.LENGTH_GROUPS, {}, {}
    try:
        for groups in (1, default):
            confirm.LENGTH_GROUPS = groups
            started = time.perf_counter()
            results[groups] = mine(loaded, sentences, config)
            report = results[groups].report
            figures[groups] = {"wall_s": round(time.perf_counter() - started, 1), "verdict": report.verdict,
                               "pvs": results[groups].pvset.size, "sweep_s": round(report.sweep["wall_s"], 1)}
            print(name, groups, figures[groups], flush=True)
    finally:
        confirm.LENGTH_GROUPS = default
    a, b = results[1].pvset.vectors, results[default].pvset.vectors
    same_shape = a.shape == b.shape
    return {"model": name, "one_group": figures[1], "groups": default, "grouped": figures[default],
            "speedup": round(figures[1]["wall_s"] / figures[default]["wall_s"], 2),
            "same_verdict": figures[1]["verdict"] == figures[default]["verdict"], "same_pv_count": same_shape,
            "pv_max_abs_diff": float(np.abs(a - b).max()) if same_shape and a.size else 0.0,
            "pv_signs_equal": bool(same_shape and (np.sign(a) == np.sign(b)).all())}


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | one padded forward: mining s (sweep s) | length groups: mining s (sweep s) | speed-up | "
             "verdict, PVs | same PVs (largest difference) |", "|---|---|---|---:|---|---|"]
    for r in rows:
        one, grouped = r["one_group"], r["grouped"]
        same = "yes" if r["same_pv_count"] and r["pv_signs_equal"] else "no"
        lines.append(f"| {r['model']} | {one['wall_s']} ({one['sweep_s']}) | {grouped['wall_s']} ({grouped['sweep_s']}) | "
                     f"{r['speedup']:.2f}x | {grouped['verdict']}, {grouped['pvs']} | {same} ({r['pv_max_abs_diff']:.1e}) |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["bert-por-clean", "bert-por"],
                        help="standard attacks (lmsan.attacks.STANDARD_ATTACKS; -clean: the clean control)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    rows = [run(name) for name in args.models]
    report = {"settings": rows, "machine": {"cpu_count": os.cpu_count(), "torch_threads": 1,
                                            "platform": platform.platform(), "load_avg": os.getloadavg()}}
    save("mining_length_groups", report, table(rows) + "\nSearch mode, 20 loops, patience 4, 2000 defense sentences, "
         "one torch thread; both settings in one process. Same PVs: same count and every sign equal.\n")


if __name__ == "__main__":
    main()
