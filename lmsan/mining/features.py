"""Target features: the encoder forward the miner uses, the cached auxiliary features ``A`` and
the clean feature scale the relative thresholds are expressed in (method.md §1).

``feature_scale`` = mean over the ``d`` dimensions of the variance, over the defense sentences,
of the clean output at the target position. Two independent clean features differ by an MSE of
about ``2 · feature_scale``. torch only; never imports lmsan.attacks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from lmsan.mining.prompt import Corpus, insert_prompt, shifted_targets


@dataclass(frozen=True, eq=False)
class Encoder:
    """The frozen encoder and its word-embedding matrix, as the miner calls them.

    Attributes:
        module: the bare encoder (``LoadedModel.encoder``), eval mode, no parameter grads.
        embedding: float [V, d_emb], the word-embedding matrix ``W_emb`` (a view, not a copy).
    """

    module: Any
    embedding: torch.Tensor

    @classmethod
    def from_loaded(cls, loaded: Any) -> "Encoder":
        embedding = loaded.model.get_input_embeddings().weight.detach()
        return cls(loaded.encoder, embedding)

    def target_features(self, embeds: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Run the encoder on ``embeds`` float [R, T, d_emb] and return float [R, d] at ``positions`` [R]."""
        hidden = self.module(inputs_embeds=embeds, attention_mask=mask).last_hidden_state  # [R, T, d]
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), positions]

    def clean_features(self, corpus: Corpus, index: torch.Tensor) -> torch.Tensor:
        """Outputs at the target position without any prompt: float [R, d] (no grad)."""
        ids, mask = corpus.rows(index)
        with torch.no_grad():
            return self.target_features(self.embedding[ids], mask, corpus.target_pos[index])

    def prompted_features(self, corpus: Corpus, index: torch.Tensor, prompts: torch.Tensor,
                          insert_at: torch.Tensor) -> torch.Tensor:
        """Outputs at the target position with one prompt per row.

        Args:
            corpus: the tokenised sentences.
            index: int64 [R], corpus rows.
            prompts: float [R, l_sp, d_emb] (may require grad).
            insert_at: int64 [R], token index of the insertion.

        Returns:
            float [R, d].
        """
        ids, mask = corpus.rows(index)
        embeds, full_mask = insert_prompt(self.embedding[ids], mask, prompts, insert_at)
        positions = shifted_targets(corpus.target_pos[index], insert_at, prompts.shape[1])
        return self.target_features(embeds, full_mask, positions)


def auxiliary_features(encoder: Encoder, corpus: Corpus, *, batch_size: int = 128) -> torch.Tensor:
    """Compute ``A`` for the whole corpus once, batched: float32 [N, d] (no grad).

    Rows are processed in length order (little padding) and returned in corpus order.
    """
    order = torch.argsort(corpus.lengths, stable=True)
    parts = []
    with torch.inference_mode():
        for start in range(0, corpus.size, batch_size):
            parts.append(encoder.clean_features(corpus, order[start : start + batch_size]).float())
        features = torch.cat(parts)
        out = torch.empty_like(features)
        out[order] = features
    return out.clone()  # a normal tensor, usable outside inference mode


def feature_scale(aux: torch.Tensor) -> float:
    """Mean per-dimension variance of ``aux`` float [N, d] (the unit of the ``*_rel`` thresholds)."""
    return float(aux.double().var(dim=0, unbiased=True).mean())


def embedding_bounds(embedding: torch.Tensor, *, factor: float, per_dim: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (low, high) allowed prompt values: ``factor ·`` min / max of ``W_emb``.

    Returns:
        Two float tensors, scalars (global) or [d_emb] (``per_dim``).
    """
    if per_dim:
        low, high = embedding.min(dim=0).values, embedding.max(dim=0).values
    else:
        low, high = embedding.min(), embedding.max()
    # factor widens the range on both sides (min is normally negative, max positive)
    return torch.where(low < 0, low * factor, low / factor), torch.where(high > 0, high * factor, high / factor)


__all__ = ["Encoder", "auxiliary_features", "embedding_bounds", "feature_scale"]
