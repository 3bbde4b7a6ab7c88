"""Build pretrained-like tiny models once and cache them under ``$LMSAN_CACHE/models``.

The cache key hashes the model spec, the distillation config, the training sentences and the
lmsan version, so a changed builder never serves a stale model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from lmsan import __version__
from lmsan.files import cache_dir, cache_lock, publish_cache_dir, read_json, write_json
from lmsan.models.pretrain import DistillConfig, distill, encode_features, spread_ratio
from lmsan.models.tiny import TinySpec, build_tiny

log = logging.getLogger(__name__)

BUILD_FILE = "lmsan_build.json"


@dataclass(frozen=True)
class BuiltModel:
    """A cached pretrained-like tiny model.

    Attributes:
        path: model directory (safetensors weights, config, tokenizer, ``lmsan_build.json``).
        cls_spread: ``spread_ratio`` of the [CLS] output on held-out sentences (aim > 0.1).
        mean_spread: the same for the mean-pooled output.
    """

    path: Path
    cls_spread: float
    mean_spread: float


def pretrained_tiny(spec: TinySpec, sentences: Sequence[str], held_out: Sequence[str], *,
                    config: DistillConfig = DistillConfig(), progress: bool = False) -> BuiltModel:
    """Return a cached tiny model distilled from MiniLM-L6, building it on first use.

    Args:
        spec: architecture and shape.
        sentences: distillation (and BPE) training sentences.
        held_out: sentences, disjoint from ``sentences``, on which the spread ratio is measured.
        config: distillation knobs.
        progress: show tqdm bars.
    """
    key_text = json.dumps([spec.to_dict(), config.to_dict(), list(sentences), list(held_out), __version__])
    key = hashlib.sha256(key_text.encode()).hexdigest()[:16]
    path = cache_dir("models") / f"tiny-{spec.arch}-h{spec.hidden}-l{spec.layers}-s{spec.seed}-{key}"
    with cache_lock(path):  # a concurrent builder of the same model finishes first; then it is found
        if (path / BUILD_FILE).is_file():
            build = read_json(path / BUILD_FILE)
            return BuiltModel(path, build["cls_spread"], build["mean_spread"])
        return _build_tiny(path, spec, sentences, held_out, config, progress=progress)


def _build_tiny(path: Path, spec: TinySpec, sentences: Sequence[str], held_out: Sequence[str],
                config: DistillConfig, *, progress: bool) -> BuiltModel:
    """Distill the tiny model ``spec`` and publish it at ``path`` (``pretrained_tiny``)."""
    started = time.perf_counter()
    model, tokenizer = build_tiny(spec, sentences)
    history = distill(model, tokenizer, sentences, config, progress=progress)
    features = encode_features(model.base_model, tokenizer, held_out, max_length=config.max_length)
    built = BuiltModel(path, spread_ratio(features[:, 0]), spread_ratio(features[:, 1]))

    def write(staging: Path) -> None:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        write_json(staging / BUILD_FILE, {
            "spec": spec.to_dict(), "distill": config.to_dict(), "loss_per_epoch": history,
            "cls_spread": built.cls_spread, "mean_spread": built.mean_spread,
            "sentences": len(sentences), "held_out": len(held_out), "lmsan_version": __version__,
            "wall_s": round(time.perf_counter() - started, 2),
        })

    publish_cache_dir(path, write)  # another process that finished the same build first: theirs is kept
    log.info("built %s: cls spread %.3f, mean spread %.3f", path.name, built.cls_spread, built.mean_spread)
    return built


def default_tiny(arch: str = "bert", *, seed: int = 0, hidden: int = 128, layers: int = 2,
                 sentences: int = 6000, progress: bool = False) -> BuiltModel:
    """Return the standard cached tiny model, distilled on BBC News sentences.

    BBC text keeps the pretraining data disjoint from the ``oanc`` attack / defense / test
    splits (``lmsan.data.standard_splits``), as a public model's pretraining corpus would be.

    Args:
        arch: ``bert`` (MiniLM WordPiece) or ``roberta`` (byte-level BPE trained here).
        seed: model init, projection and data-order seed.
        hidden: width ``d``; layers: encoder depth.
        sentences: distillation sentences (500 more are held out for the spread ratio).
    """
    from lmsan.data import disjoint_splits, load_sentences

    parts = disjoint_splits(load_sentences("bbcnews"), sizes={"train": sentences, "held_out": 500}, seed=seed)
    spec = TinySpec(arch=arch, hidden=hidden, layers=layers, heads=max(2, hidden // 64), intermediate=4 * hidden, seed=seed)
    return pretrained_tiny(spec, parts["train"], parts["held_out"], config=DistillConfig(seed=seed),
                           progress=progress)
