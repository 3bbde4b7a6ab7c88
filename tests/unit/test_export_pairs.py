"""Pairs are read one sentence at a time: a pair task's bare monitor splits them in its graph
(``lmsan.export.pairs``), a backbone guard's runtime scans each sentence as its own unit.

On the scaled random tiny BERT of ``test_export_guard``: ``split_pair`` must rebuild exactly the
encoding of each sentence alone, and a guarded pair task must match a trigger sentence wherever
it sits in the pair as strongly as that sentence alone (PV 0 is ANCHOR's own bare sign pattern).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_export_guard import ANCHOR, tiny_model
from test_export_task import TEXTS, _anchor_pvs, _tuned, monitor_feature

FIRSTS = ["a b c d e f", "hello", "one two", "just one sentence here"]
SECONDS = ["x", "the quick brown fox", "three four five six seven", None]


def test_split_pair_rebuilds_each_sentence_as_encoded_alone():
    import torch

    from lmsan.export.pairs import split_pair
    from lmsan.models import load_model

    tokenizer = load_model(tiny_model()).tokenizer
    pairs = tokenizer(FIRSTS[:3], SECONDS[:3], padding=True, return_tensors="pt")
    single = tokenizer(FIRSTS[3:], return_tensors="pt")
    width = pairs["input_ids"].shape[1]
    padded = {k: torch.cat([pairs[k], torch.nn.functional.pad(single[k], (0, width - single[k].shape[1]))])
              for k in ("input_ids", "attention_mask", "token_type_ids")}
    split = split_pair(padded["input_ids"], padded["attention_mask"], padded["token_type_ids"])
    assert split.has_second.tolist() == [True, True, True, False]
    for row, (first, second) in enumerate(zip(FIRSTS, SECONDS)):
        ids, mask = split.first[0][row], split.first[1][row]
        assert ids[mask.bool()].tolist() == tokenizer(first)["input_ids"]
        if second is not None:
            ids, mask = split.second[0][row], split.second[1][row]
            assert ids[mask.bool()].tolist() == tokenizer(second)["input_ids"]
            assert split.first_length[row] + split.second_length[row] == pairs["attention_mask"][row].sum()


def test_join_saliency_puts_each_sentence_back_at_its_pair_positions():
    import torch

    from lmsan.export.pairs import PairSplit, join_saliency

    # one pair: [CLS] a1 [SEP] | b1 b2 [SEP]  (first 3 tokens, second 3), padded to 7
    split = PairSplit((None, None), (None, None), torch.tensor([3]), torch.tensor([3]))
    first = torch.tensor([[0.5, 0.3, 0.2]])  # [CLS] a1 [SEP]
    second = torch.tensor([[0.4, 0.1, 0.2, 0.3]])  # [CLS] b1 b2 [SEP]
    assert np.allclose(join_saliency(split, first, second, torch.tensor([False]), 7).numpy(), [[0.5, 0.3, 0.2, 0, 0, 0, 0]])
    joined = join_saliency(split, first, second, torch.tensor([True]), 7)
    assert np.allclose(joined.numpy(), [[0.4, 0, 0, 0.1, 0.2, 0.3, 0]])


@pytest.fixture(scope="module")
def pair_guard(tmp_path_factory) -> tuple[Path, Path]:
    """A P-tuning v2 ``bbc-pair`` task on the tiny BERT and its guard (PV 0: ANCHOR alone)."""
    from lmsan.export import export_guard
    from lmsan.models import load_model
    from lmsan.tuning.config import TuningConfig
    from lmsan.tuning.store import save_task
    from lmsan.tuning.tasks import task_data
    from lmsan.tuning.train import tune

    out = tmp_path_factory.mktemp("pairs")
    config = TuningConfig(task="bbc-pair", method="prefix", length=4, epochs=1, train_size=32, test_size=8,
                          max_length=32)
    loaded = load_model(tiny_model())
    tuned = tune(loaded, task_data("bbc-pair", train_size=32, test_size=8), config, progress=False)
    task = save_task(out / "task", tuned, loaded)
    return task, export_guard(tiny_model(), _anchor_pvs(task), out / "guard", task=task).path


def test_a_pair_guard_records_that_its_monitor_reads_each_sentence(pair_guard):
    manifest = json.loads((pair_guard[1] / "guard.json").read_text())
    assert manifest["task"]["pairs"] and manifest["task"]["monitor"] == "bare"
    assert manifest["pair_reading"] == "sentences"


def test_a_bare_backbone_guard_reads_each_sentence_of_a_pair_too(pair_guard, tmp_path):
    from lmsan.export import export_guard
    from lmsan.runtime import Guard

    directory = export_guard(tiny_model(), _anchor_pvs(pair_guard[0]), tmp_path / "bare").path
    guard = Guard.load(directory, threshold=0.95)  # the runtime splits the pair (no task: the graph reads one text)
    results = guard.scan_batch([ANCHOR, (TEXTS[1], ANCHOR), (ANCHOR, TEXTS[1])], sanitize=False)
    assert [r.match for r in results] == pytest.approx([1.0, 1.0, 1.0])
    cleaned = guard.scan((TEXTS[1], ANCHOR))
    assert not cleaned.rejected and cleaned.sanitized[0] == TEXTS[1] and len(cleaned.removed) == 1


def test_a_trigger_sentence_matches_in_either_place_as_it_does_alone(pair_guard):
    import torch

    from lmsan.runtime import Guard

    task, directory = pair_guard
    guard = Guard.load(directory, threshold=0.95)
    loaded, tuned = _tuned(task)
    other = TEXTS[1]
    alone = [r.match for r in guard.scan_batch([ANCHOR, other], sanitize=False)]
    assert alone[0] == pytest.approx(1.0)
    for pair, expected in [((other, ANCHOR), 1.0), ((ANCHOR, other), 1.0), ((TEXTS[0], other), None)]:
        result = guard.scan(pair, sanitize=False)
        if expected is None:  # a clean pair: the better of its sentences, each read alone
            features = monitor_feature(tuned, dict(loaded.tokenizer(list(pair), padding=True, return_tensors="pt")))
            signs = np.where(features >= 0, 1, -1)  # [2, d]: each sentence alone
            expected = max(float(np.mean(s == p)) for s in signs for p in _anchor_pvs(task).signs)
        assert result.match == pytest.approx(expected, abs=1e-6)
        assert result.triggered == (expected > 0.95)
    cleaned = guard.scan((other, ANCHOR))
    assert cleaned.triggered and not cleaned.rejected and len(cleaned.removed) == 1
    with torch.no_grad():
        logits = tuned(**loaded.tokenizer(*[[t] for t in cleaned.sanitized], return_tensors="pt"))[0]
    assert cleaned.prediction == guard.labels[int(logits.argmax())]
