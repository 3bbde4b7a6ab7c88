"""Safe model loading, tiny builders and the spread ratio."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from lmsan.errors import ModelLoadError, UnsafeModelError
from lmsan.models import load_model, minilm_path
from lmsan.models.loading import check_model_dir
from lmsan.models.pretrain import projection, spread_ratio
from lmsan.models.tiny import TinySpec, build_tiny


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A random-init tiny BERT saved as safetensors (no distillation: loading tests only)."""
    model, tokenizer = build_tiny(TinySpec(arch="bert", hidden=32, layers=1, heads=2, intermediate=64))
    path = tmp_path_factory.mktemp("tiny")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_loads_local_safetensors_dir(tiny_dir):
    loaded = load_model(tiny_dir)
    assert loaded.hidden_size == 32
    assert set(loaded.weight_sha256) == {"model.safetensors"}
    assert len(loaded.fingerprint) == 64
    assert not any(p.requires_grad for p in loaded.model.parameters())


def test_missing_dir_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        load_model(tmp_path / "nope")


def test_dir_without_config_is_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(tmp_path)


def test_malformed_config_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="malformed config.json"):
        load_model(tmp_path)


def test_unsupported_architecture_is_refused(tmp_path, tiny_dir):
    shutil.copytree(tiny_dir, tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["model_type"] = "no-such-architecture"
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="unsupported architecture"):
        load_model(tmp_path / "m")


def test_pickle_only_dir_is_refused_unless_opted_in(tmp_path, tiny_dir):
    import torch
    from safetensors.torch import load_file

    target = tmp_path / "pickled"
    target.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_dir / name, target / name)
    torch.save(load_file(str(tiny_dir / "model.safetensors")), target / "pytorch_model.bin")
    with pytest.raises(UnsafeModelError, match="--allow-pickle"):
        load_model(target)
    assert check_model_dir(target, allow_pickle=True)[0].name == "pytorch_model.bin"
    assert load_model(target, allow_pickle=True).hidden_size == 32


def test_real_minilm_loads_offline():
    loaded = load_model(minilm_path())
    assert loaded.hidden_size == 384
    assert loaded.model.config.num_hidden_layers == 6


def test_spread_ratio_hand_values():
    constant = np.ones((10, 4))
    assert spread_ratio(constant) == pytest.approx(0.0)
    centred = np.array([[1.0, -1.0], [-1.0, 1.0]])
    assert spread_ratio(centred) == pytest.approx(1.0)
    half = np.array([[2.0], [0.0]])  # var 1, second moment 2
    assert spread_ratio(half) == pytest.approx(0.5)


def test_projection_has_orthonormal_columns():
    q = projection(384, 128, seed=3)
    np.testing.assert_allclose(q.T @ q, np.eye(128), atol=1e-5)


def test_random_init_tiny_model_has_no_spread(tiny_dir):
    """Why the builders distil: a random-init encoder's [CLS] barely depends on the input."""
    from lmsan.models.pretrain import encode_features

    loaded = load_model(tiny_dir)
    texts = [f"sentence number {i} talks about {w} things" for i, w in enumerate(["red", "big", "odd", "new"] * 8)]
    features = encode_features(loaded.encoder, loaded.tokenizer, texts, max_length=32)
    assert spread_ratio(features[:, 0]) < 0.05


def test_roberta_bpe_tokenizer_round_trips(tmp_path):
    sentences = [f"The market for {w} rose sharply in the {m} quarter." for w in ("oil", "gold", "wheat", "steel")
                 for m in ("first", "second", "third", "fourth")] * 5
    model, tokenizer = build_tiny(TinySpec(arch="roberta", hidden=32, layers=1, heads=2, intermediate=64,
                                           bpe_vocab=400), sentences)
    ids = tokenizer("The market for oil rose <mask>.")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.mask_token_id in ids
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    assert load_model(tmp_path).tokenizer("gold rose")["input_ids"] == tokenizer("gold rose")["input_ids"]
