"""Which mined PVs flag clean task inputs, and are the words behind them triggers of the task?
(writes benchmarks/results/collateral_pvs.{json,md}).

The trigger sweep names a text for each PV it adds (``report.json`` ``pv_sources``). On a
backdoored backbone some of those texts are not the attack's triggers but natural words the
backdoored model pushes towards a PV ("collateral" PVs). For one ``benchmarks/end_to_end.py``
setting on its backdoored backbone (cached PVs, task and guard with the bare monitor), this
script counts the clean test inputs each PV flags and rejects, then inserts each PV's sweep text
once into every clean test input and measures the unguarded task's ASR on the clean control
backbone and on the backdoored one: a word the backdoor made into a trigger flips more answers on
the backdoored backbone than on the clean one.

    .venv/bin/python benchmarks/collateral_pvs.py [--rows bert-por/bbcnews bert-por/sms-spam]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from collections import Counter
from typing import Any

import end_to_end as e2e
import numpy as np
from _results import save


def evaluate(row: str, args: argparse.Namespace) -> dict[str, Any]:
    from lmsan.eval.metrics import attack_scores

    name, task = row.split("/")
    bb = e2e.backbone(name)
    method = e2e.ATTACK_TUNING[bb["attack"]]
    target = "cls" if method == "prefix" else "mask"
    guard = e2e.task_guard(bb, "backdoored", task, method, args, "bare")
    report = json.loads((e2e.work_dir() / f"{name}-backdoored" / f"scan-{target}" / "report.json").read_text())
    texts = {s["pv_index"]: s["trigger"] for s in report["pv_sources"] if s.get("trigger")}
    inputs, gold, _ = e2e.setting_data(task, bb["triggers"], args)
    results = guard.scan_batch(inputs)
    flagged = Counter(r.pv_index for r in results if r.triggered)
    rejected = Counter(r.pv_index for r in results if r.triggered and r.rejected)
    inserted = e2e.triggered_inputs(inputs, list(texts.values()), seed=args.seed)
    asr: dict[str, dict[str, float]] = {}
    for role in ("clean", "backdoored"):
        task_dir = e2e.tuned_task(bb[role], task, method, f"{name}-{role}", args)
        model = e2e.Unguarded(bb[role], task_dir, guard.manifest.max_length)
        before = model.predict(inputs)
        asr[role] = {text: attack_scores(gold, before, {text: model.predict(x)}).asr for text, x in inserted.items()}
    pvs = []
    for index, text in sorted(texts.items()):
        attack = any(t.startswith(text) or text.startswith(t) for t in bb["triggers"])  # `q` names the PV of `qt`
        pvs.append({"pv_index": index, "text": text, "attack_trigger": attack,
                    "flagged_clean": flagged.get(index, 0) / len(inputs), "rejected_clean": rejected.get(index, 0) / len(inputs),
                    "asr_clean_backbone": asr["clean"][text], "asr_backdoored_backbone": asr["backdoored"][text]})
    return {"backbone": name, "task": task, "attack": bb["attack"], "n": len(inputs),
            "flagged_clean": sum(flagged.values()) / len(inputs), "rejected_clean": sum(rejected.values()) / len(inputs),
            "pvs": pvs}


def table(rows: list[dict]) -> str:
    lines = ["| backbone | task | PV | sweep text | an attack trigger (or a piece of one) | clean inputs flagged / rejected | "
             "ASR of the text: clean / backdoored backbone |", "|---|---|---:|---|:---:|---|---|"]
    for row in rows:
        for pv in row["pvs"]:
            lines.append(f"| {row['backbone']} | {row['task']} | {pv['pv_index']} | `{pv['text']}` | "
                         f"{'yes' if pv['attack_trigger'] else 'no'} | {100 * pv['flagged_clean']:.1f} / "
                         f"{100 * pv['rejected_clean']:.1f} | {100 * pv['asr_clean_backbone']:.1f} / "
                         f"{100 * pv['asr_backdoored_backbone']:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    args = e2e.rows_parser(__doc__, ["bert-por/bbcnews", "bert-por/sms-spam"], "collateral_pvs").parse_args()
    rows = e2e.each_row(args, lambda row: evaluate(row, args), table)
    report = {"settings": rows, "test_per_task": args.test,
              "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()}}
    save(args.name, report, table(rows) + "\nFlagged / rejected: share of the clean test inputs whose best PV is "
         "this one (percent). ASR: the sweep text inserted once at a random word boundary of every clean test input, "
         "the unguarded prompt-tuned task (the paper's ASR, percent).\n")


if __name__ == "__main__":
    main()
