"""How much clean text does each mined PV already match? (writes benchmarks/results/clean_overlap.{json,md}).

A PV is an attacker's signature only if clean text does not reach it by itself: the guard flags
an input whose target output agrees in sign with a PV on more than ``T_match`` (0.8) of its
dimensions, so a PV that many clean sentences already match would flag them (method.md §3). The
miner's ``max_clean_overlap`` filter (docs/mining.md, "Natural vectors") rejects such *natural*
PVs. This script measures, for every cached ``benchmarks/end_to_end.py`` scan (every
``scan-*`` directory of each backbone, clean control and backdoored), the share of its 2000
clean defense sentences above ``T_match`` with each PV (``lmsan.mining.filter.clean_overlap``),
and how concentrated the clean outputs are (share above 0.8 / 0.9 agreement with their own mean).

    .venv/bin/python benchmarks/clean_overlap.py [--backbones bert-por bert-neuba bert-btop minilm-por minilm-btop]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from typing import Any

import end_to_end as e2e
from _results import save


def scan_figures(model: Any, scan: Any, sentences: list[str]) -> dict[str, Any]:
    """One scan directory's PVs against the clean target features of ``sentences``."""
    import torch

    from lmsan.mining.config import MiningConfig
    from lmsan.mining.features import Encoder, auxiliary_features
    from lmsan.mining.filter import clean_overlap
    from lmsan.mining.prompt import encode_corpus
    from lmsan.mining.search import token_limit
    from lmsan.models.loading import load_model
    from lmsan.pvset import HIT_AGREEMENT, MATCH_THRESHOLD, PVSet

    report = json.loads((scan / "report.json").read_text())
    config = MiningConfig.from_dict(report["config"])  # the scan's own target, token limit and mask seed
    loaded = load_model(str(model), device="cpu")
    corpus = encode_corpus(loaded.tokenizer, sentences, target=config.target, max_length=token_limit(loaded, config),
                           max_insert_pos=config.max_insert_pos, mask_seed=config.mask_seed)
    clean = auxiliary_features(Encoder.from_loaded(loaded), corpus)
    mean = clean.mean(dim=0, keepdim=True)  # [1, d]: where clean text goes on average
    near = [float(clean_overlap(mean, clean, level)[0]) for level in (MATCH_THRESHOLD, HIT_AGREEMENT)]
    pvs = PVSet.load(scan / "pvs.safetensors")
    overlaps = clean_overlap(torch.from_numpy(pvs.vectors), clean).tolist() if pvs.size else []
    sources = {s["pv_index"]: s for s in report.get("pv_sources", [])}
    return {"scan": scan.name, "target": config.target, "sentences": corpus.size, "verdict": report["verdict"],
            "clean_near_own_mean_0.8": near[0], "clean_near_own_mean_0.9": near[1],
            "natural_rejected": (report.get("sweep") or {}).get("natural"),  # None: mined before the filter
            "pvs": [{"index": k, "method": sources.get(k, {}).get("method"), "trigger": sources.get(k, {}).get("trigger"),
                     "hit_rate": sources.get(k, {}).get("hit_rate"), "clean_overlap": overlap}
                    for k, overlap in enumerate(overlaps)]}


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| backbone | scan | verdict | clean near own mean (>0.8 / >0.9) | PVs | clean overlap of each PV "
             "(> T_match 0.8), highest first | natural spans rejected |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        top = sorted(r["pvs"], key=lambda p: -p["clean_overlap"])
        shown = ", ".join(f"{p['trigger'] or '#' + str(p['index'])} {p['clean_overlap']:.2%}" for p in top[:6])
        rejected = r["natural_rejected"]
        overlaps = [overlap for _, _, overlap in rejected or []]
        natural = ("n/a (mined before the filter)" if rejected is None else "none" if not rejected else
                   f"{len(rejected)} ({min(overlaps):.0%}–{max(overlaps):.0%}): "
                   + ", ".join(text for text, _, _ in rejected[:4]) + (" …" if len(rejected) > 4 else ""))
        lines.append(f"| {r['key']} | {r['scan']} | {r['verdict']} | {r['clean_near_own_mean_0.8']:.1%} / "
                     f"{r['clean_near_own_mean_0.9']:.1%} | {len(r['pvs'])} | {shown}{' …' if len(top) > 6 else ''} "
                     f"| {natural} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", nargs="+", default=["bert-por", "bert-neuba", "bert-btop", "minilm-por", "minilm-btop"])
    parser.add_argument("--name", default="clean_overlap", help="results file name")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    rows = []
    for name in args.backbones:
        bb = e2e.backbone(name)
        for role in ("clean", "backdoored"):
            key = e2e.work_dir() / f"{name}-{role}"
            sentences = (key / "defense.txt").read_text(encoding="utf-8").splitlines()
            for scan in sorted(key.glob("scan-*")):
                if (scan / "report.json").is_file() and (scan / "pvs.safetensors").is_file():
                    rows.append({"key": f"{name}-{role}", **scan_figures(bb[role], scan, sentences)})
                    print(table(rows[-1:]), flush=True)
    from lmsan.pvset import MATCH_THRESHOLD

    save(args.name, {"rows": rows, "t_match": MATCH_THRESHOLD,
                     "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()}}, table(rows))


if __name__ == "__main__":
    main()
