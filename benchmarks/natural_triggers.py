"""Natural words that a backdoored backbone treats as triggers, behind the clean inputs a task
guard costs (writes benchmarks/results/natural_triggers.{json,md}).

A task-agnostic trigger moves *any* input onto its PV. This script asks whether the words the
guard removed from the clean inputs it costs (answered right unguarded; rejected or answered
wrongly after) behave that way too: each removed word or phrase is put into every one of
``CARRIERS``, 12 short neutral sentences that no PV flags, and the same guard (detection only)
counts the carriers it flags. The attack's own triggers and a sample of the test inputs' words
go through the same carriers, for comparison.

Each setting is one of ``benchmarks/end_to_end.py``'s cached rows on its backdoored backbone
(mined PVs, tuned task and guarded task graph with the bare monitor, the same 400 test inputs),
scanned by the guard at its defaults and by a copy calibrated on the task's clean training split
(``lmsan.runtime.calibrate``, quantile ``QUANTILE``, cap 0.9, as ``benchmarks/calibration.py``).

    .venv/bin/python benchmarks/natural_triggers.py [--rows bert-por/bbcnews ...] [--merge]
"""

from __future__ import annotations

import shutil
import tempfile
import zlib
from typing import Any

import end_to_end as e2e
import numpy as np

DEFAULT_ROWS = ["bert-por/bbcnews", "bert-por/bbc-pair", "roberta-por/bbcnews"]
CARRIERS = (
    "The meeting has been moved to Thursday afternoon.",
    "She said the results would be published next week.",
    "We walked along the river before dinner.",
    "The report covers the period from January to March.",
    "He bought a new coat because the old one was torn.",
    "Most of the guests arrived late in the evening.",
    "The committee will review the proposal in detail.",
    "It rained all morning, so the walk was delayed.",
    "They plan to open a second office later this year.",
    "The book was longer than I had expected.",
    "Prices rose slightly in the last quarter.",
    "Please call me when you get home tonight.",
)
SAMPLE_WORDS = 300  # distinct test-input words put through the carriers (the control)
QUANTILE = 0.995  # the calibrated guard's quantile (cap 0.9)


def carried(phrase: str, pairs: bool) -> list:
    """``phrase`` inserted once into each carrier at a word boundary drawn from a seed that the
    phrase fixes (the same texts on every call); for a pair task each
    carrier is paired with the one six places on, and the phrase goes into the longer of the two
    (as the end-to-end triggers do)."""
    from lmsan.eval.metrics import insert_into_pair, insert_trigger

    rng = np.random.default_rng(zlib.crc32(phrase.encode()))
    n = len(CARRIERS)
    if pairs:
        return [insert_into_pair(CARRIERS[i], CARRIERS[(i + 6) % n], phrase, rng) for i in range(n)]
    return [insert_trigger(c, phrase, rng) for c in CARRIERS]


def carriers_flagged(guard: Any, phrases: list[str], pairs: bool) -> dict[str, int]:
    """Per phrase: how many of the ``CARRIERS`` holding it the guard flags (detection only)."""
    if not phrases:
        return {}
    texts = [t for p in phrases for t in carried(p, pairs)]
    flags = np.array([r.triggered for r in guard.scan_batch(texts, sanitize=False)]).reshape(len(phrases), -1)
    return {p: int(row.sum()) for p, row in zip(phrases, flags)}


def lost_inputs(guard: Any, inputs: list, gold: np.ndarray, before: np.ndarray) -> list[dict[str, Any]]:
    """The clean inputs the guard costs: answered right unguarded, rejected or answered wrongly
    after; each with what the guard removed."""
    lost = []
    for i, result in enumerate(guard.scan_batch(inputs)):
        if before[i] == gold[i] and (result.rejected or guard.labels.index(result.prediction) != gold[i]):
            lost.append({"input": i, "rejected": result.rejected, "removed": list(result.removed),
                         "match": round(result.match, 4), "pv_index": result.pv_index})
    return lost


def variant_figures(guard: Any, inputs: list, gold: np.ndarray, before: np.ndarray, pairs: bool) -> dict[str, Any]:
    """One guard's lost clean inputs, each removed phrase's carriers flagged (of ``CARRIERS``)."""
    lost = lost_inputs(guard, inputs, gold, before)
    flagged = carriers_flagged(guard, sorted({p for item in lost for p in item["removed"]}), pairs)
    for item in lost:
        item["carriers_flagged"] = [flagged[p] for p in item["removed"]]
    full = sum(any(n == len(CARRIERS) for n in item["carriers_flagged"]) for item in lost)
    return {"lost": lost, "lost_with_natural_trigger": full,
            "carriers_flagged_alone": carriers_flagged_alone(guard, pairs)}


def carriers_flagged_alone(guard: Any, pairs: bool) -> int:
    """How many carriers the guard flags with nothing inserted (0 for neutral carriers)."""
    n = len(CARRIERS)
    texts = [(CARRIERS[i], CARRIERS[(i + 6) % n]) for i in range(n)] if pairs else list(CARRIERS)
    return sum(r.triggered for r in guard.scan_batch(texts, sanitize=False))


def sample_words(inputs: list, seed: int) -> list[str]:
    """Up to ``SAMPLE_WORDS`` distinct words (punctuation stripped) of the test inputs, seeded."""
    texts = [t for x in inputs for t in (x if isinstance(x, tuple) else (x,))]
    words = sorted({w.strip(".,;:!?\"'()") for t in texts for w in t.split()} - {""})
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(words, size=min(SAMPLE_WORDS, len(words)), replace=False).tolist())


def evaluate(row: str, args: Any) -> dict[str, Any]:
    from lmsan.runtime import Guard, calibrate, write_calibration
    from lmsan.tuning.tasks import task_data

    name, task = row.split("/")
    bb = e2e.backbone(name)
    method = e2e.ATTACK_TUNING[bb["attack"]]
    guard = e2e.task_guard(bb, "backdoored", task, method, args, "bare")
    inputs, gold, _ = e2e.setting_data(task, bb["triggers"], args)
    pairs = isinstance(inputs[0], tuple)
    task_dir = e2e.tuned_task(bb["backdoored"], task, method, f"{name}-backdoored", args)
    before = e2e.Unguarded(bb["backdoored"], task_dir, guard.manifest.max_length).predict(inputs)
    train = task_data(task, test_size=args.test, seed=0).train
    clean = list(zip(train.texts, train.text_pairs)) if train.text_pairs else list(train.texts)
    with tempfile.TemporaryDirectory(prefix="lmsan-natural-") as scratch:
        copy = shutil.copytree(guard.manifest.directory, f"{scratch}/guard")
        write_calibration(copy, calibrate(Guard.load(copy), clean, quantile=QUANTILE, cap=0.9))
        calibrated = variant_figures(Guard.load(copy), inputs, gold, before, pairs)
    words = carriers_flagged(guard, sample_words(inputs, args.seed), pairs)
    return {"backbone": name, "task": task, "attack": bb["attack"], "n": len(inputs), "carriers": len(CARRIERS),
            "quantile": QUANTILE,
            "default": variant_figures(guard, inputs, gold, before, pairs),
            "calibrated": calibrated,
            "triggers": carriers_flagged(guard, list(bb["triggers"]), pairs),
            "sample_words": len(words),
            "sample_words_flagging_all": sorted(w for w, n in words.items() if n == len(CARRIERS)),
            "sample_words_flagging_none": sum(n == 0 for n in words.values())}


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| backbone | task | guard | clean inputs lost | of them, a removed word flags every carrier | "
             "removed (carriers flagged of 12) | triggers: carriers flagged | sampled test words flagging every "
             "carrier / none |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for variant in ("default", "calibrated"):
            found = r[variant]
            removed = "; ".join(", ".join(f"`{p}` ({n})" for p, n in zip(item["removed"], item["carriers_flagged"]))
                                or "rejected, nothing removed" for item in found["lost"]) or "–"
            guard = "defaults" if variant == "default" else f"calibrated q {r['quantile']}"
            lines.append(f"| {r['backbone']} | {r['task']} | {guard} | {len(found['lost'])} of {r['n']} | "
                         f"{found['lost_with_natural_trigger']} | {removed} | "
                         f"{min(r['triggers'].values())}–{max(r['triggers'].values())} | "
                         f"{len(r['sample_words_flagging_all'])} / {r['sample_words_flagging_none']} of "
                         f"{r['sample_words']} |")
    return "\n".join(lines) + "\n"


NOTE = ("\nClean inputs lost: answered right by the unguarded task on the backdoored backbone, rejected or answered "
        "wrongly by the guard. Carriers flagged: of 12 neutral sentences that the guard flags none of, how many it "
        "flags with the word or phrase inserted once (detection only, by the same guard; the triggers and the sampled "
        "words: the guard at its defaults). A task-agnostic trigger flags every carrier. Guard: at its defaults, "
        "and calibrated on the task's clean training split (cap 0.9).\n")


def main() -> None:
    e2e.rows_main(__doc__, DEFAULT_ROWS, "natural_triggers", evaluate, table, NOTE)


if __name__ == "__main__":
    main()
