"""lmsan.eval: the paper's ACC / ASR / weighted ASR on hand-derived cases, trigger insertion, ONION."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from lmsan.eval import (
    MetricsError,
    NgramScorer,
    Onion,
    accuracy,
    asr,
    attack_scores,
    insert_into_pair,
    insert_trigger,
    trigger_detection,
)
from lmsan.eval.ngram import EOS, UNK, KneserNey

# --- metrics ------------------------------------------------------------------------------------


def test_accuracy_by_hand():
    assert accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == 0.5
    assert accuracy(["pos", "neg"], ["pos", "neg"]) == 1.0
    assert accuracy([], []) is None
    with pytest.raises(MetricsError, match="3 labels, expected 2"):
        accuracy([1, 0, 1], [1, 0])


def test_asr_counts_only_inputs_correct_when_clean():
    gold = [0, 0, 1, 1, 2]
    clean = [0, 0, 1, 0, 2]  # example 3 is wrong when clean: never counts
    triggered = [1, 0, 0, 1, 1]  # flips 0, 2, 4; example 3 is "right" with the trigger, still ignored
    assert asr(gold, clean, triggered) == 3 / 4
    assert asr(gold, clean, clean) == 0.0
    assert asr([0, 1], [1, 0], [0, 1]) is None  # nothing correct when clean: undefined, not 0


# gold class 0: examples 0-3 (3 is wrong when clean); class 1: examples 4-5
GOLD = [0, 0, 0, 0, 1, 1]
CLEAN = [0, 0, 0, 1, 1, 1]
TRIGGERED = {"cf": [1, 0, 0, 0, 1, 1],  # flips example 0          -> 1/5
             "mn": [0, 1, 0, 0, 0, 1]}  # flips examples 1 and 4   -> 2/5


def test_attack_scores_by_hand():
    s = attack_scores(GOLD, CLEAN, TRIGGERED)
    assert (s.n, s.n_correct) == (6, 5)
    assert s.accuracy == pytest.approx(5 / 6)
    assert s.per_trigger == {"cf": pytest.approx(1 / 5), "mn": pytest.approx(2 / 5)}
    assert s.asr == pytest.approx(3 / 5)  # any trigger: examples 0, 1, 4
    assert s.asr_max == pytest.approx(2 / 5)
    assert s.asr_mean == pytest.approx(3 / 10)
    assert s.per_class == {"0": pytest.approx(2 / 3), "1": pytest.approx(1 / 2)}
    assert s.weighted_asr == pytest.approx((2 / 3 + 1 / 2) / 2)


def test_attack_scores_class_without_examples_or_without_correct_ones():
    s = attack_scores(GOLD, CLEAN, TRIGGERED, labels=[0, 1, 2])
    assert s.per_class["2"] is None  # no examples
    assert s.weighted_asr == pytest.approx(7 / 12)  # averaged over the defined classes only
    # class 1 present but never correct when clean: left out of the average
    s = attack_scores([0, 0, 1], [0, 0, 0], {"cf": [1, 0, 1]})
    assert s.per_class == {"0": 0.5, "1": None}
    assert s.weighted_asr == 0.5 and s.asr == 0.5


def test_attack_scores_nothing_correct_and_no_triggers():
    s = attack_scores([0, 1], [1, 0], {"cf": [0, 1]})
    assert s.accuracy == 0.0 and s.n_correct == 0
    assert s.asr is s.weighted_asr is s.asr_max is s.asr_mean is None
    assert s.per_trigger == {"cf": None}
    s = attack_scores([0, 1], [0, 1], {})
    assert s.accuracy == 1.0 and s.asr is None and s.per_class == {"0": None, "1": None}
    with pytest.raises(MetricsError, match=r"triggered\['cf'\] has 1 labels, expected 2"):
        attack_scores([0, 1], [0, 1], {"cf": [0]})


def test_attack_scores_to_dict_is_json_fractions():
    d = attack_scores(["ham", "spam", "spam"], ["ham", "spam", "ham"], {"tq": ["spam", "spam", "spam"]}).to_dict()
    json.dumps(d, allow_nan=False)
    assert d["asr"] == 0.5 and d["per_class"] == {"ham": 1.0, "spam": 0.0}
    fractions = [d[k] for k in ("accuracy", "asr", "weighted_asr", "asr_max", "asr_mean")]
    assert all(0.0 <= v <= 1.0 for v in fractions)


# --- trigger insertion --------------------------------------------------------------------------


@pytest.mark.parametrize("make_rng", [random.Random, np.random.default_rng], ids=["random", "numpy"])
def test_insert_trigger_properties(make_rng):
    text = "the  quick brown fox\tjumps"
    words = text.split()
    positions = Counter()
    for seed in range(200):
        out = insert_trigger(text, "cf", make_rng(seed)).split()
        assert len(out) == len(words) + 1 and out.count("cf") == 1
        i = out.index("cf")
        assert out[:i] + out[i + 1:] == words
        positions[i] += 1
    assert set(positions) == set(range(len(words) + 1))  # every boundary, both ends included
    assert insert_trigger(text, "cf", make_rng(7)) == insert_trigger(text, "cf", make_rng(7))


def test_insert_trigger_positions_phrases_and_errors():
    rng = random.Random(0)
    assert insert_trigger("a b c", "cf", rng, position=0) == "cf a b c"
    assert insert_trigger("a b c", "james bond", rng, position=3) == "a b c james bond"
    assert insert_trigger("", "cf", rng) == "cf"
    with pytest.raises(ValueError, match="position 4 outside"):
        insert_trigger("a b c", "cf", rng, position=4)
    with pytest.raises(ValueError, match="non-empty"):
        insert_trigger("a b c", "  ", rng)


def test_insert_into_pair_goes_to_longer_sentence():
    rng = random.Random(0)
    first, second = insert_into_pair("short one", "a much longer second sentence", "cf", rng)
    assert first == "short one" and "cf" in second.split()
    first, second = insert_into_pair("three words here", "and three here", "cf", rng)  # tie: first
    assert "cf" in first.split() and second == "and three here"


# --- the n-gram language model -------------------------------------------------------------------


def test_kneser_ney_is_a_distribution():
    corpus = [s.split() for s in ["the cat sat", "the dog sat", "a cat ran", "the cat ran fast"]]
    lm = KneserNey(corpus, order=3)
    outcomes = sorted(lm.vocab | {EOS})
    for history in (["<s>", "<s>"], ["<s>", "the"], ["the", "cat"], ["dog", "zebra"]):
        assert sum(lm.prob(w, history) for w in outcomes) == pytest.approx(1.0)
    assert lm.prob("cat", ["<s>", "the"]) > lm.prob("dog", ["<s>", "the"]) > lm.prob(UNK, ["<s>", "the"])


def test_ngram_scorer_prefers_fluent_text():
    sentences = ["the market rose sharply on monday", "the market fell on friday", "shares rose on monday"] * 5
    scorer = NgramScorer(sentences)
    fluent, shuffled, salad = scorer.perplexities(
        ["the market rose on monday", "monday on rose market the", "the qxzv rose on monday"])
    assert fluent < shuffled and fluent < salad
    assert np.all(np.isfinite(scorer.perplexities(["", "!!!"])))


# --- ONION ----------------------------------------------------------------------------------------


class LengthScorer:
    """Toy LM: every word lowers perplexity by 1, every "zz" raises it by 50 (exact in float)."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def perplexities(self, texts):
        self.calls.append(len(texts))
        return np.array([100.0 + 50 * t.split().count("zz") - len(t.split()) for t in texts])


def test_onion_removes_by_suspicion_and_bar():
    text = "a b zz c"
    [(words, scores)] = Onion(LengthScorer()).suspicion_batch([text])
    assert words == ["a", "b", "zz", "c"]
    np.testing.assert_allclose(scores, [-1, -1, 49, -1])
    assert Onion(LengthScorer()).clean(text) == "a b c"
    assert Onion(LengthScorer(), bar=50).clean(text) == "a b zz c"  # f = 49 < 50
    assert Onion(LengthScorer(), bar=-1).clean(text) == ""
    assert Onion(LengthScorer(), bar=49).clean(text) == "a b c"  # f >= bar: OpenBackdoor removes ties too


def test_onion_bounds_and_edge_cases():
    scorer = LengthScorer()
    onion = Onion(scorer, max_words=3, batch_size=2)
    texts = ["zz a b zz c", "one", "", "x  zz"]
    assert onion.clean_batch(texts) == ["a b zz c", "one", "", "x"]  # the 2nd zz is past max_words
    assert max(scorer.calls) <= 2 and sum(scorer.calls) == (1 + 3) + (1 + 2)
    assert onion.clean_batch(texts) == Onion(LengthScorer(), max_words=3, batch_size=64).clean_batch(texts)

    class Broken:
        def perplexities(self, texts):
            return np.ones(len(texts) + 1)

    with pytest.raises(ValueError, match="scorer returned shape"):
        Onion(Broken()).clean("a b c")


@pytest.fixture(scope="module")
def oanc_scorer_and_test():
    from lmsan.data import standard_splits

    splits = standard_splits("oanc")
    return NgramScorer(splits["attack"] + splits["defense"]), splits["test"][:40]


def test_trigger_detection_by_hand():
    rates = trigger_detection(Onion(LengthScorer()), ["a b c", "d e", ""], ["zz"])
    assert rates == {"top1": 1.0, "trigger_removed": 1.0, "other_removed": 0.0, "clean_removed": 0.0, "n": 2}


def test_onion_flags_an_inserted_rare_trigger_more_than_a_random_word(oanc_scorer_and_test):
    scorer, sentences = oanc_scorer_and_test
    onion = Onion(scorer)
    rates = trigger_detection(onion, sentences, ["cf", "tq"])
    assert rates["n"] == 2 * len(sentences)
    assert rates["top1"] > 0.6  # measured 0.98 over 7 triggers x 100 sentences (docs/evaluation.md)
    # the trigger goes far more often than a clean word (measured 1.00 vs 0.24)
    assert rates["trigger_removed"] > rates["other_removed"] + 0.3
    rng = random.Random(0)
    texts = [insert_trigger(s, "cf", rng) for s in sentences[:10]]
    cleaned = onion.clean_batch(texts)
    assert cleaned == onion.clean_batch(texts) == Onion(scorer, batch_size=7).clean_batch(texts)
    assert sum("cf" in t.split() for t in cleaned) <= 2


def test_masked_lm_scorer_batches_consistently(tiny_dir):
    from lmsan.eval.mlm import MaskedLMScorer

    scorer = MaskedLMScorer.load(tiny_dir, batch_size=256)
    texts = ["the cat sat on the mat", "hello", "a b c d e f g"]
    ppl = scorer.perplexities(texts)
    assert ppl.shape == (3,) and np.all(np.isfinite(ppl)) and np.all(ppl > 1.0)
    np.testing.assert_allclose(MaskedLMScorer.load(tiny_dir, batch_size=3).perplexities(texts), ppl, rtol=1e-4)
    assert not math.isnan(scorer.perplexities([""])[0])


def test_eval_metrics_and_onion_import_no_torch():
    code = ("import sys, lmsan.eval, lmsan.eval.onion, lmsan.eval.ngram, lmsan.eval.metrics; "
            "sys.exit(int(any(m in sys.modules for m in ('torch', 'transformers'))))")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
