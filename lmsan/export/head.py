"""The fused sign-match head and the exportable guard module (method.md §3).

``SignMatchHead`` turns target-position features into ``match``, ``pv_index`` and ``triggered``
with one MatMul against the ±1 PV sign matrix. ``GuardModule`` wraps a backbone so the exported
graph ends in that head. Imports torch; never mining or runtime.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from lmsan.errors import ConfigError
from lmsan.models.targets import gather_positions

GRAPH_OUTPUTS = ("match", "pv_index", "triggered")


class SignMatchHead(nn.Module):
    """``N_match / d`` against every PV, fused into one MatMul (method.md §3, ``T_match``).

    Signs use ``s(x) = +1 if x >= 0 else -1``, built from ``GreaterOrEqual`` + ``Where``: ONNX
    ``Sign(0)`` is 0, which would count a zero feature as agreeing with neither sign.

    Input shape: features float [B, d] (any float dtype; computed in float32), threshold float32
    scalar ``T_match``.
    Output shape: match float32 [B] in [0, 1] (share of the d signs agreeing with the best PV),
    pv_index int64 [B] (best PV, -1 when K = 0), triggered bool [B] (``match > threshold``).
    """

    def __init__(self, signs: np.ndarray) -> None:
        """Args: signs: int8 [K, d] in {-1, +1} (``PVSet.signs``)."""
        super().__init__()
        signs = np.asarray(signs)
        if signs.ndim != 2 or not np.isin(signs, (-1, 1)).all():
            raise ConfigError(f"sign matrix must be [K, d] in {{-1, +1}}, got shape {signs.shape}")
        self.size, self.width = int(signs.shape[0]), int(signs.shape[1])
        self.register_buffer("signs_t", torch.tensor(signs.T, dtype=torch.float32))  # [d, K]

    def forward(self, features: torch.Tensor, threshold: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = features.float()
        if self.size == 0:  # a clean PV set: nothing can match
            match = torch.zeros_like(features[:, 0])
            pv_index = torch.full_like(features[:, 0], -1).long()
        else:
            signs = torch.where(features >= 0, 1.0, -1.0)  # [B, d], zero counts as +1
            agree = (signs @ self.signs_t + self.width) / (2 * self.width)  # [B, K] in [0, 1]
            match, pv_index = agree.max(dim=1)
        return match, pv_index, match > threshold


class GuardModule(nn.Module):
    """Backbone + target gather + ``SignMatchHead``, the module that ``torch.onnx.export`` traces.

    Input shape: input_ids int64 [B, T], attention_mask int64 [B, T], token_type_ids int64 [B, T]
    (only when ``use_token_types``), threshold float32 scalar.
    Output shape: match [B], pv_index [B], triggered [B] (see ``SignMatchHead``), then features
    float32 [B, d] at the target position.
    """

    def __init__(self, encoder: Any, signs: np.ndarray, *, target: str, mask_token_id: int | None = None,
                 use_token_types: bool = False) -> None:
        super().__init__()
        if target == "mask" and mask_token_id is None:
            raise ConfigError("target 'mask' needs a tokenizer with a mask token")
        if target not in ("cls", "token", "last", "mask"):
            raise ConfigError(f"unknown target {target!r}; expected cls, token, last or mask")
        self.encoder = encoder
        self.head = SignMatchHead(signs)
        self.target = target
        self.mask_token_id = mask_token_id
        self.use_token_types = use_token_types

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 token_type_ids: torch.Tensor | None) -> torch.Tensor:
        """Return float32 [B, d]: the backbone output at the target position."""
        kwargs = {"token_type_ids": token_type_ids} if self.use_token_types else {}
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
        if self.target == "cls":
            picked = hidden[:, 0]
        elif self.target == "token":
            picked = hidden[:, 1]
        elif self.target == "last":
            picked = gather_positions(hidden, attention_mask.sum(dim=1) - 1)
        else:  # mask: the first mask token; the runtime refuses rows without one
            positions = (input_ids == self.mask_token_id).float().argmax(dim=1)  # [B], first max
            picked = gather_positions(hidden, positions)
        return picked.float()  # [B, d]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, threshold: torch.Tensor):
        features = self.features(input_ids, attention_mask, None)
        return (*self.head(features, threshold), features)


class TokenTypeGuardModule(GuardModule):
    """``GuardModule`` for backbones that read ``token_type_ids`` (BERT-style sentence pairs)."""

    def __init__(self, encoder: Any, signs: np.ndarray, *, target: str, mask_token_id: int | None = None) -> None:
        super().__init__(encoder, signs, target=target, mask_token_id=mask_token_id, use_token_types=True)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor,
                threshold: torch.Tensor):
        features = self.features(input_ids, attention_mask, token_type_ids)
        return (*self.head(features, threshold), features)
