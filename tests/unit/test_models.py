"""Safe model loading, tiny builders and the spread ratio."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest

from lmsan.errors import ModelLoadError, UnsafeModelError
from lmsan.models import load_model, minilm_path
from lmsan.models.loading import check_model_dir
from lmsan.models.pretrain import projection, spread_ratio
from lmsan.models.tiny import TinySpec, build_tiny


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


class NotATensor:
    """Pickled into a checkpoint: torch's weights-only unpickler refuses it."""


def _copy_without_tokenizer(tiny_dir, dest):
    dest.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_dir / name, dest / name)
    return dest


def test_dir_without_tokenizer_files_is_refused(tmp_path, tiny_dir):
    """transformers would build a 5-token tokenizer that maps every word to [UNK]."""
    bare = _copy_without_tokenizer(tiny_dir, tmp_path / "no-tokenizer")
    with pytest.raises(ModelLoadError, match=r"tokenizer of .*no-tokenizer has 5 tokens but .* 30522 rows"):
        load_model(bare)


def test_tokenizer_with_ids_past_the_embedding_is_refused(tmp_path, tiny_dir):
    from transformers import BertConfig, BertModel

    small = tmp_path / "small-vocab"
    BertModel(BertConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(small)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_dir / name, small / name)
    with pytest.raises(ModelLoadError, match=r"small-vocab has ids up to 30521 but .* 1000 rows"):
        load_model(small)


def test_tokenizer_that_maps_common_words_to_unk_is_refused(tmp_path, tiny_dir):
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, **{f"zq{i}": i + 2 for i in range(30520)}}  # right size, no words
    backend = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = Whitespace()
    junk = _copy_without_tokenizer(tiny_dir, tmp_path / "junk-vocab")
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]").save_pretrained(junk)
    with pytest.raises(ModelLoadError, match=r"junk-vocab maps common words .* to its unknown token '\[UNK\]'"):
        load_model(junk)


def test_uncached_hub_id_offline_says_the_hub_is_unreachable():
    with pytest.raises(ModelLoadError, match=r"lmsan-test/no-such-model is not a local directory nor in the Hugging "
                                             r"Face cache, and the hub is unreachable: offline mode") as info:
        load_model("lmsan-test/no-such-model")
    assert "\n" not in str(info.value)


def test_uncached_hub_id_without_network_fails_fast_saying_the_hub_is_unreachable(monkeypatch):
    import socket

    from huggingface_hub import constants

    def no_network(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(socket, "create_connection", no_network)
    started = time.perf_counter()
    with pytest.raises(ModelLoadError, match=r"lmsan-test/no-such-model is not a local directory nor in the Hugging "
                                             r"Face cache, and the hub is unreachable \(gaierror: .*Name or service "
                                             r"not known\); check the network"):
        load_model("lmsan-test/no-such-model")
    assert time.perf_counter() - started < 10  # no minutes of retries


def test_hub_failures_that_mean_no_network_say_the_hub_is_unreachable(monkeypatch):
    """Reachable at first, then the download fails: the chain transformers raises when DNS fails."""
    import socket

    import transformers
    from huggingface_hub import constants
    from huggingface_hub.errors import LocalEntryNotFoundError

    def no_network(*args, **kwargs):
        cause = LocalEntryNotFoundError("An error happened while trying to locate the file on the Hub")
        cause.__cause__ = ConnectionError("[Errno -2] Name or service not known")
        raise OSError("We couldn't connect to 'https://huggingface.co'") from cause

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: socket.socket())
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", no_network)
    with pytest.raises(ModelLoadError, match=r"the hub is unreachable \(ConnectionError: \[Errno -2\] Name or "
                                             r"service not known\); check the network"):
        load_model("lmsan-test/no-such-model")


def test_invalid_hub_id_is_a_clear_error():
    with pytest.raises(ModelLoadError, match="not a local directory, nor a valid hub id"):
        load_model("no such dir!")


def test_device_is_resolved_and_checked(monkeypatch):
    import torch

    from lmsan.errors import ConfigError
    from lmsan.models.checks import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu" and resolve_device("cpu") == "cpu"
    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_device("cuda:0")
    for bad in ("gpu", "cuda:x", "CPU", "cuda:"):
        with pytest.raises(ConfigError, match="expected auto, cpu, cuda or cuda:N"):
            resolve_device(bad)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == "cuda" and resolve_device("cuda:1") == "cuda:1"
    with pytest.raises(ConfigError, match="2 CUDA device"):
        resolve_device("cuda:2")


def _pickle_dir(tiny_dir, dest, payload):
    """``dest``: tiny_dir's config and tokenizer with ``payload`` (bytes or a torch.save-able) as pytorch_model.bin."""
    import torch

    dest.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_dir / name, dest / name)
    if isinstance(payload, bytes):
        (dest / "pytorch_model.bin").write_bytes(payload)
    else:
        torch.save(payload, dest / "pytorch_model.bin")
    return dest


@pytest.mark.parametrize("case, message", [
    ("object", r"pickle weights in .*object hold more than tensors \(Unsupported global: GLOBAL .*NotATensor\)"),
    ("damaged", r"pickle weights in .*damaged cannot be read as plain tensors \(a damaged file.*: Unsupported operand"),
])
def test_pickle_failures_never_repeat_torchs_weights_only_advice(case, message, tmp_path, tiny_dir):
    from safetensors.torch import load_file

    weights = load_file(str(tiny_dir / "model.safetensors"))
    payload = {**weights, "extra": NotATensor()} if case == "object" else b"\x80\x02not a pickle at all"
    target = _pickle_dir(tiny_dir, tmp_path / case, payload)
    with pytest.raises(ModelLoadError, match=message) as info:
        load_model(target, allow_pickle=True)
    assert "weights_only" not in str(info.value) and "\n" not in str(info.value)
