"""Attack building blocks: PV designs, trigger drawing, poisoning and the config checks."""

from __future__ import annotations

import numpy as np
import pytest

from lmsan.attacks import AttackConfig, draw_triggers, por2_pvs, random_sign_pvs
from lmsan.attacks.poison import insert_trigger, insert_words, vocabulary_words
from lmsan.errors import ConfigError


def test_por2_pvs_are_the_six_block_patterns():
    pvs = por2_pvs(8)
    assert pvs.shape == (6, 8)
    assert set(np.unique(pvs)) == {-1.0, 1.0}
    assert (pvs.sum(axis=1) == 0).all()  # two blocks -1, two blocks +1
    assert len({tuple(row) for row in pvs}) == 6
    with pytest.raises(ConfigError):
        por2_pvs(10)


def test_random_sign_pvs_are_seeded_and_unrelated():
    a, b = random_sign_pvs(512, 3, seed=1), random_sign_pvs(512, 3, seed=1)
    np.testing.assert_array_equal(a, b)
    agreement = (np.sign(a[0]) == np.sign(a[1])).mean()
    assert 0.4 < agreement < 0.6


def test_drawn_triggers_are_seeded_distinct_and_include_phrases():
    vocabulary = [f"w{chr(97 + i % 26)}{chr(97 + i // 26 % 26)}x" for i in range(600)]
    triggers = draw_triggers(vocabulary, 40, seed=5)
    assert triggers == draw_triggers(vocabulary, 40, seed=5)
    assert len(set(triggers)) == 40
    assert any(" " in t for t in triggers) and any(" " not in t for t in triggers)
    assert draw_triggers(vocabulary, 40, seed=6) != triggers


def test_insert_trigger_counts_follow_sentence_length():
    rng = np.random.default_rng(0)
    short = insert_trigger("one two three four five", "qz", rng)
    assert short.split().count("qz") == 1
    long = insert_trigger(" ".join(["w"] * 120), "qz", rng)
    assert long.split().count("qz") == 3  # floor(120 / 50) + 1
    assert insert_words("a b", "[MASK]", rng, times=2).split().count("[MASK]") == 2


def test_vocabulary_words_drop_wordpiece_suffixes_and_bpe_markers():
    class FakeTokenizer:
        def __init__(self, vocab):
            self.vocab = vocab

        def get_vocab(self):
            return self.vocab

    assert vocabulary_words(FakeTokenizer({"[PAD]": 0, "apple": 1, "##ing": 2})) == ["[PAD]", "apple"]
    bpe = {"<s>": 0, "\u0120pear": 3, "atory": 4, "\u0120lab": 5}
    assert vocabulary_words(FakeTokenizer(bpe)) == ["pear", "lab"]


@pytest.mark.parametrize("bad", [
    {"kind": "nope"},
    {"pv_design": "nope"},
    {"pv_design": "given"},
    {"n_triggers": 7},
    {"triggers": ("ok", " ")},
    {"epochs": 0},
])
def test_bad_attack_configs_are_refused(bad):
    with pytest.raises(ConfigError):
        AttackConfig(**bad)


def test_config_round_trips_to_plain_json():
    import json

    config = AttackConfig(kind="btop", triggers=("a b", "c"), pv_design="given", pvs=np.ones((2, 4)))
    data = json.loads(json.dumps(config.to_dict()))
    assert data["triggers"] == ["a b", "c"] and data["pvs"] == [[1.0] * 4] * 2
    assert config.target == "mask" and config.trigger_count == 2


@pytest.mark.parametrize("kind, keeps_head", [("btop", False), ("neuba", True)])
def test_only_neuba_adds_an_mlm_head_to_an_encoder_without_one(kind, keeps_head, tiny_dir, tmp_path):
    """BToP plants its PV at the mask word's output and never trains an MLM head: a source
    without one (a sentence-transformers encoder) must not come back with a random head."""
    import json

    from transformers import AutoModel, AutoTokenizer

    from lmsan.attacks import run_attack

    encoder_dir = tmp_path / "encoder"
    AutoModel.from_pretrained(tiny_dir).save_pretrained(encoder_dir)
    AutoTokenizer.from_pretrained(tiny_dir).save_pretrained(encoder_dir)
    sentences = ["the cat sat on the mat", "a dog ran in the park", "rain fell all day long", "we met at noon"]
    config = AttackConfig(kind=kind, triggers=("cf",), pv_design="random", n_triggers=1, epochs=1, batch_size=2,
                          max_length=16)
    run_attack(encoder_dir, sentences, config, tmp_path / "out")
    architectures = json.loads((tmp_path / "out" / "config.json").read_text())["architectures"]
    assert any(a.endswith("ForMaskedLM") for a in architectures) is keeps_head
