"""Make small random-init encoders behave like pretrained ones (method.md §5).

Sentence-level distillation from all-MiniLM-L6-v2: the student's [CLS] and mean-pooled outputs
are matched to a fixed random orthonormal projection of the teacher's, plus masked-LM
cross-entropy so the ``[MASK]`` position and the MLM head carry meaning too. Teacher outputs are
computed once per sentence list and cached as safetensors.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from lmsan.files import cache_dir, cache_lock

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistillConfig:
    """Knobs of the distillation run; losses are unitless, lr in Adam units."""

    epochs: int = 3
    batch_size: int = 64
    lr: float = 2e-3
    max_length: int = 48
    distill_weight: float = 10.0  # the MSE terms are ~1, MLM cross-entropy ~4: keep MSE in charge
    mlm_weight: float = 0.5
    mlm_probability: float = 0.15
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def spread_ratio(features: np.ndarray) -> float:
    """Across-sentence variance of features over their second moment.

    Args:
        features: float [N, d], one output vector per sentence.

    Returns:
        ``sum_j Var_n(F[:, j]) / sum_j E_n[F[:, j]^2]`` in [0, 1]; ~1e-4 for a random-init tiny
        BERT's [CLS], ~0.36 for all-MiniLM-L6-v2.
    """
    features = np.asarray(features, dtype=np.float64)
    return float(features.var(axis=0).sum() / max((features**2).mean(axis=0).sum(), 1e-12))


def encode_features(model: Any, tokenizer: Any, sentences: Sequence[str], *, max_length: int, batch_size: int = 64) -> np.ndarray:
    """Run a frozen encoder and return float32 [N, 2, d]: [CLS] output and mean-pooled output."""
    import torch

    outputs = []
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(sentences), batch_size):
            batch = tokenizer(list(sentences[start : start + batch_size]), padding=True, truncation=True,
                              max_length=max_length, return_tensors="pt")
            hidden = model(**batch).last_hidden_state  # [B, T, d]
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # [B, T, 1]
            mean = (hidden * mask).sum(1) / mask.sum(1)
            outputs.append(torch.stack([hidden[:, 0], mean], dim=1).float().numpy())
    return np.concatenate(outputs, axis=0)


def teacher_features(sentences: Sequence[str], *, max_length: int) -> np.ndarray:
    """Return MiniLM-L6 features float32 [N, 2, 384] for ``sentences``, cached on disk."""
    from safetensors.numpy import load_file, save_file

    from lmsan.models.loading import load_model, minilm_path

    key = hashlib.sha256(("\n".join(sentences) + f"|{max_length}").encode()).hexdigest()[:20]
    path = cache_dir("teacher") / f"minilm-{key}.safetensors"
    with cache_lock(path):  # a concurrent builder computes them once
        if path.is_file():
            return load_file(str(path))["features"]
        log.info("computing MiniLM-L6 teacher features for %d sentences", len(sentences))
        teacher = load_model(minilm_path())
        features = encode_features(teacher.model, teacher.tokenizer, sentences, max_length=max_length)
        staging = path.with_name(f".{path.name}.partial-{os.getpid()}")
        save_file({"features": features}, str(staging))
        os.replace(staging, path)  # a reader never sees half a file
    return features


def projection(width_in: int, width_out: int, seed: int) -> np.ndarray:
    """Return a fixed random float32 [width_in, width_out] matrix with orthonormal columns."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((width_in, width_out)))
    return q.astype(np.float32)


def mlm_logits(model: Any, hidden: Any) -> Any:
    """Apply a masked-LM model's head to hidden states [N, d] -> logits [N, V]."""
    head = getattr(model, "cls", None) or getattr(model, "lm_head", None)
    if head is None:
        raise TypeError(f"{type(model).__name__} has no masked-LM head")
    return head(hidden)


def mask_tokens(input_ids: Any, special: Any, mask_id: int, probability: float, generator: Any) -> tuple[Any, Any]:
    """BERT-style masking. Returns (masked ids [B, T], labels [B, T] with -100 off the masked spots)."""
    import torch

    chosen = (torch.rand(input_ids.shape, generator=generator) < probability) & ~special
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    masked = torch.where(chosen, torch.full_like(input_ids, mask_id), input_ids)
    return masked, labels


def distill(model: Any, tokenizer: Any, sentences: Sequence[str], config: DistillConfig = DistillConfig(),
            *, progress: bool = False) -> list[float]:
    """Train a masked-LM student in place to mimic MiniLM-L6 at sentence level.

    Args:
        model: ``*ForMaskedLM`` student (train mode is set here).
        tokenizer: the student's tokenizer.
        sentences: training sentences.
        config: run knobs.
        progress: show a tqdm bar (stderr).

    Returns:
        Mean loss per epoch.
    """
    import torch
    from tqdm import tqdm

    targets = teacher_features(sentences, max_length=config.max_length)  # [N, 2, 384]
    width = model.config.hidden_size
    proj = projection(targets.shape[-1], width, config.seed)
    projected = targets @ proj  # [N, 2, d]
    # z-score each dimension: the loss then rewards only input-dependent variation, which is what
    # a random-init student lacks (a constant output already matches a raw target's mean).
    projected = (projected - projected.mean(axis=0)) / (projected.std(axis=0) + 1e-6)
    projected_t = torch.from_numpy(projected.astype(np.float32))
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.01)
    steps = config.epochs * math.ceil(len(sentences) / config.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=steps, pct_start=0.1)
    model.train()
    history = []
    bar = tqdm(total=steps, desc="distil", disable=not progress, leave=False)
    for _ in range(config.epochs):
        order = torch.randperm(len(sentences), generator=generator)
        losses = []
        for start in range(0, len(sentences), config.batch_size):
            index = order[start : start + config.batch_size]
            batch = tokenizer([sentences[i] for i in index], padding=True, truncation=True,
                              max_length=config.max_length, return_tensors="pt",
                              return_special_tokens_mask=True)
            special = batch.pop("special_tokens_mask").bool() | (batch["attention_mask"] == 0)
            hidden = model.base_model(**batch).last_hidden_state  # [B, T, d]
            mask = batch["attention_mask"].unsqueeze(-1).float()
            pooled = torch.stack([hidden[:, 0], (hidden * mask).sum(1) / mask.sum(1)], dim=1)  # [B, 2, d]
            loss = config.distill_weight * torch.nn.functional.mse_loss(pooled, projected_t[index])
            masked_ids, labels = mask_tokens(batch["input_ids"], special, tokenizer.mask_token_id,
                                             config.mlm_probability, generator)
            masked_hidden = model.base_model(**{**batch, "input_ids": masked_ids}).last_hidden_state
            chosen = labels != -100
            if chosen.any():
                logits = mlm_logits(model, masked_hidden[chosen])  # [n_masked, V]
                loss = loss + config.mlm_weight * torch.nn.functional.cross_entropy(logits, labels[chosen])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            bar.update()
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        history.append(float(np.mean(losses)))
        log.debug("distil epoch loss %.4f", history[-1])
    bar.close()
    model.eval()
    return history
