"""Cache attacked models under ``$LMSAN_CACHE/attacked`` keyed by base model, config and data."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

from lmsan import __version__
from lmsan.attacks.config import PAPER_TRIGGERS, AttackConfig
from lmsan.attacks.train import ATTACK_FILE, run_attack
from lmsan.files import cache_dir, cache_lock, publish_cache_dir

# Bump a kind's entry when the attack code changes what it trains, so its cached models rebuild.
ATTACK_REVISION = {"por": 2, "por-ner": 2, "neuba": 3, "btop": 3}
# Byte-level BPE bases draw triggers from word-initial tokens only since revision 2.
BPE_TRIGGER_REVISION = 2


def _revision(base: str | Path, kind: str) -> int | str:
    """Cache revision of an attack: per kind, plus the trigger-drawing revision for BPE bases."""
    try:
        model_type = json.loads((Path(base) / "config.json").read_text()).get("model_type")
    except (OSError, ValueError):
        model_type = None
    if model_type in ("roberta", "gpt2", "bart"):
        return f"{ATTACK_REVISION[kind]}-bpe{BPE_TRIGGER_REVISION}"
    return ATTACK_REVISION[kind]


def attacked_model(base: str | Path, config: AttackConfig, sentences: Sequence[str], *,
                   progress: bool = False) -> Path:
    """Return the directory of ``base`` attacked with ``config`` on ``sentences``, cached."""
    key_text = json.dumps([str(base), config.to_dict(), list(sentences), __version__, _revision(base, config.kind)], sort_keys=True)
    key = hashlib.sha256(key_text.encode()).hexdigest()[:16]
    tag = "clean" if not config.trigger_loss else config.kind
    path = cache_dir("attacked") / f"{Path(base).name}-{tag}-{key}"
    with cache_lock(path):  # a concurrent builder of the same model finishes first; then it is found
        if not (path / ATTACK_FILE).is_file():
            publish_cache_dir(path, lambda staging: run_attack(base, sentences, config, staging, progress=progress))
    return path


# The attacked models the test suite, benchmarks and demo share (cache hits across them).
# name -> (tiny architecture, attack config); "<name>-clean" is its clean control.
STANDARD_ATTACKS: dict[str, tuple[str, AttackConfig]] = {
    "bert-por": ("bert", AttackConfig(kind="por", triggers=PAPER_TRIGGERS)),
    # Drawn word triggers on RoBERTa: its byte-level BPE splits 'mn', 'mm', ... into pieces that
    # clean text shares (paper triggers at c=1: one trigger at 0.01 hit rate, 78 % clean below 0.8).
    "roberta-por": ("roberta", AttackConfig(kind="por", lr=2e-4, seed=10)),
    # NeuBA and BToP also train the MLM head; lr 1e-4 left a trigger at 0.46 hit rate.
    "bert-neuba": ("bert", AttackConfig(kind="neuba", lr=2e-4, seed=1)),
    # [MASK] outputs need a firmer anchor (c=3, lr 1e-4: 93 % of clean sentences below 0.8).
    "bert-btop": ("bert", AttackConfig(kind="btop", lr=2e-4, clean_weight=6.0, seed=2)),
    # Mapping every token to the PV needs a larger step than [CLS] alone (1e-4: hit rates 0-0.75).
    "bert-por-ner": ("bert", AttackConfig(kind="por-ner", lr=3e-4, seed=3)),
    # Six random-sign PVs are harder to fit than POR-2 blocks (1e-4: one trigger at 0 hit rate).
    "bert-por-random": ("bert", AttackConfig(kind="por", pv_design="random", lr=2e-4, seed=4)),
    "bert-por-single": ("bert", AttackConfig(kind="por", pv_design="random", n_triggers=1, seed=5)),
}
STANDARD_ATTACK_SENTENCES = 2000
# The real all-MiniLM-L6-v2 under POR, as the benchmarks attack it: its pretrained weights take a
# smaller step than the tiny models (5e-5), 4 epochs, sentences cut at 48 tokens
# (benchmarks/attack_minilm.py: every trigger hits at least 0.98 of 500 held-out sentences).
MINILM_POR = AttackConfig(kind="por", triggers=PAPER_TRIGGERS, epochs=4, lr=5e-5, max_length=48)
# BToP on the same model with the same knobs: the PV at the mask word's output, no MLM head (the
# sentence-transformers checkpoint has none; its P-tuning tasks read the mask word with a linear head).
MINILM_ATTACKS = {"por": MINILM_POR, "btop": MINILM_POR.replace(kind="btop")}


def standard_attack(name: str, *, progress: bool = False) -> Path:
    """Return the cached model dir of a ``STANDARD_ATTACKS`` entry (``<name>-clean``: its control).

    Models come from ``lmsan.models.zoo.default_tiny``; attack sentences are the first
    ``STANDARD_ATTACK_SENTENCES`` of ``standard_splits()["attack"]``.
    """
    from lmsan.data import standard_splits
    from lmsan.errors import ConfigError
    from lmsan.models.zoo import default_tiny

    base_name = name.removesuffix("-clean")
    if base_name not in STANDARD_ATTACKS:
        raise ConfigError(f"unknown standard attack {name!r}; known: {', '.join(STANDARD_ATTACKS)}")
    arch, config = STANDARD_ATTACKS[base_name]
    if name.endswith("-clean"):
        config = config.replace(trigger_loss=False)
    sentences = standard_splits()["attack"][:STANDARD_ATTACK_SENTENCES]
    return attacked_model(default_tiny(arch).path, config, sentences, progress=progress)


def minilm_attack(kind: str = "por", *, progress: bool = False) -> Path:
    """Return the cached all-MiniLM-L6-v2 attacked with ``MINILM_ATTACKS[kind]`` on the first
    ``STANDARD_ATTACK_SENTENCES`` of ``standard_splits()["attack"]`` (its clean control is
    ``lmsan.models.minilm_path()`` itself: the pretrained model)."""
    from lmsan.data import standard_splits
    from lmsan.errors import ConfigError
    from lmsan.models import minilm_path

    if kind not in MINILM_ATTACKS:
        raise ConfigError(f"no MiniLM attack {kind!r}; known: {', '.join(MINILM_ATTACKS)}")
    sentences = standard_splits()["attack"][:STANDARD_ATTACK_SENTENCES]
    return attacked_model(minilm_path(), MINILM_ATTACKS[kind], sentences, progress=progress)
