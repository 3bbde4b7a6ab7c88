"""What the bare-backbone monitor costs a task guard on clean input (writes
benchmarks/results/task_monitor.{json,md}).

For each prompt-tuned task cached by ``end_to_end.py`` / ``end_to_end_ner.py`` (the backdoored
backbones' tasks; run those first), export the task guard twice with the same random PVs (they
never fire, so the clean path is timed): ``--monitor bare`` (the default: a second backbone pass
without the task's prompt, its last layer for one row) and ``--monitor task`` (one pass, the
monitor reads the task's own pass). Then time ``Guard.scan_batch`` of clean sentences on both,
interleaved, in one process (median of ``--repeats`` rounds, one intra-op thread), at batch 1
and 32, and check that the answers agree. A pair task (``bbc-pair``) is timed on 32 test pairs:
its bare monitor reads each sentence of a pair on its own (``lmsan.export.pairs``).

    .venv/bin/python benchmarks/task_monitor.py [--minilm] [--repeats 30]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

from _results import save
from multitask import size_mb, time_pair

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SETTINGS = (  # backbone (end_to_end name), task, method, PV target
    ("bert-por", "sms-spam", "prefix", "cls"),
    ("bert-por", "bbc-pair", "prefix", "cls"),  # pairs: the bare pass reads each sentence alone
    ("bert-btop", "sms-spam", "prompt", "mask"),
    ("bert-por-ner", "oanc-pos", "prefix", "token"),
)
MINILM = ("minilm-por", "sms-spam", "prefix", "cls")


def random_pvs(width: int, target: str):
    """Three random PVs at ``target`` (at threshold 0.99 they never fire on clean input)."""
    import numpy as np

    from lmsan.pvset import PVSet

    return PVSet(np.random.default_rng(0).standard_normal((3, width)).astype(np.float32), target=target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minilm", action="store_true", help="also the MiniLM POR backbone's sms-spam task")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()

    import torch
    from end_to_end import backbones, work_dir

    from lmsan.data import standard_splits
    from lmsan.export import export_guard
    from lmsan.runtime import Guard
    from lmsan.tuning.tasks import task_data

    torch.set_num_threads(1)
    settings = list(SETTINGS) + ([MINILM] if args.minilm else [])
    models = {bb["name"]: bb for bb in backbones(sorted({s[0] for s in SETTINGS}), ["por"] if args.minilm else [])}
    sentences = standard_splits()["test"][:32]
    rows = []
    for name, task, method, target in settings:
        bb = models[name]
        found = sorted((work_dir() / f"{name}-backdoored").glob(f"task-{task}-{method}-*"))
        if not found:
            print(f"skip {name}/{task}: no cached task (run benchmarks/end_to_end.py first)", flush=True)
            continue
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            width = int(json.loads((found[0] / "task.json").read_text())["backbone"]["hidden_size"])
            pvs = random_pvs(width, target)
            paths = {m: export_guard(bb["backdoored"], pvs, out / m, task=found[0], monitor=m).path
                     for m in ("bare", "task")}
            guards = {m: Guard.load(p, threshold=0.99, threads=1) for m, p in paths.items()}
            test = task_data(task, test_size=32, seed=0).test if task == "bbc-pair" else None
            inputs = list(zip(test.texts, test.text_pairs)) if test else sentences
            a, b = guards["bare"].scan_batch(inputs), guards["task"].scan_batch(inputs)
            row = {"model": bb["model"], "backbone": name, "task": task, "method": method,
                   "answers_agree": sum(x.prediction == y.prediction for x, y in zip(a, b)) / len(a),
                   "flagged": sum(x.triggered or y.triggered for x, y in zip(a, b)),
                   # guard.json's "pruned": the prompted pass (a token task's runs in full; its bare pass never)
                   "task_pass_pruned": {m: bool(g.manifest.raw.get("pruned")) for m, g in guards.items()},
                   "graph_mb": {m: round(size_mb(p, "model.onnx*"), 2) for m, p in paths.items()}}
            for batch in (1, 32):
                texts = inputs[:batch]
                guards["bare"].scan_batch(texts), guards["task"].scan_batch(texts)  # warm up
                bare_s, task_s = time_pair(guards["bare"], guards["task"], texts, args.repeats)
                row[f"batch{batch}_bare_ms"] = round(1000 * bare_s, 3)
                row[f"batch{batch}_task_ms"] = round(1000 * task_s, 3)
                row[f"batch{batch}_ratio"] = round(bare_s / task_s, 3)
            rows.append(row)
            print(row, flush=True)
    lines = ["| model | task (tuning) | batch 1: bare / task monitor ms (ratio) | batch 32: bare / task monitor ms "
             "(ratio) | answers agree |", "|---|---|---|---|---|"]
    for r in rows:
        tuning = "P-tuning v2" if r["method"] == "prefix" else "P-tuning"
        lines.append(f"| {r['model']} | {r['task']} ({tuning}) | {r['batch1_bare_ms']} / {r['batch1_task_ms']} "
                     f"({r['batch1_ratio']}x) | {r['batch32_bare_ms']} / {r['batch32_task_ms']} "
                     f"({r['batch32_ratio']}x) | {r['answers_agree']:.0%} |")
    note = ("\nClean-input `Guard.scan_batch` of 1 or 32 test sentences (bbc-pair: test pairs, whose bare "
            "monitor reads each sentence alone), median of "
            f"{args.repeats} interleaved rounds, one intra-op thread, one process; the same task and random PVs "
            "exported with `--monitor bare` (the backbone a second time without the prompt, its last layer for "
            "one row) and `--monitor task` (one pass). Ratio: bare / task. Machine: shared 2-core CPU.\n")
    report = {"rows": rows, "repeats": args.repeats,
              "machine": {"cpu_count": os.cpu_count(), "torch_threads": 1, "ort_threads": 1,
                          "platform": platform.platform()}}
    save("task_monitor", report, "\n".join(lines) + "\n" + note)


if __name__ == "__main__":
    main()
