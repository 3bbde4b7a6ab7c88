"""The fused sign-match head and the exportable guard module (method.md §3).

``SignMatchHead`` turns target-position features into ``match``, ``pv_index``, ``triggered`` and
``pv_match`` (every PV's share) with one MatMul against the ±1 PV sign matrix. ``GuardModule``
wraps a backbone so the exported graph ends in that head, and optionally outputs the last
layer's attention from the target position (``saliency``: where the runtime's trigger removal
looks first). Where the backbone's layers allow it, the last layer runs for the target row only
(``lmsan.export.prune``). Imports torch; never mining or runtime.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from lmsan.errors import ConfigError
from lmsan.export.prune import last_layer_rows, split_last_layer
from lmsan.models.targets import gather_positions

GRAPH_OUTPUTS = ("match", "pv_index", "triggered", "pv_match")


class SignMatchHead(nn.Module):
    """``N_match / d`` against every PV, fused into one MatMul (method.md §3, ``T_match``).

    Signs use ``s(x) = +1 if x >= 0 else -1``, built from ``GreaterOrEqual`` + ``Where``: ONNX
    ``Sign(0)`` is 0, which would count a zero feature as agreeing with neither sign.

    Input shape: features float [B, d] (any float dtype; computed in float32), threshold float32
    scalar ``T_match``.
    Output shape: match float32 [B] in [0, 1] (share of the d signs agreeing with the best PV),
    pv_index int64 [B] (best PV, -1 when K = 0), triggered bool [B] (``match > threshold``),
    pv_match float32 [B, K] (each PV's share; the runtime's removal follows the flagging PV's).
    """

    def __init__(self, signs: np.ndarray) -> None:
        """Args: signs: int8 [K, d] in {-1, +1} (``PVSet.signs``)."""
        super().__init__()
        signs = np.asarray(signs)
        if signs.ndim != 2 or not np.isin(signs, (-1, 1)).all():
            raise ConfigError(f"sign matrix must be [K, d] in {{-1, +1}}, got shape {signs.shape}")
        self.size, self.width = int(signs.shape[0]), int(signs.shape[1])
        self.register_buffer("signs_t", torch.tensor(signs.T, dtype=torch.float32))  # [d, K]

    def agreement(self, features: torch.Tensor) -> torch.Tensor:
        """features float [B, d] -> float32 [B, K] in [0, 1]: each PV's share of agreeing signs."""
        features = _float32(features)
        if self.size == 0:  # a clean PV set: nothing to agree with
            return features[:, :0]
        signs = torch.where(features >= 0, 1.0, -1.0)  # [B, d], zero counts as +1
        return (signs @ self.signs_t + self.width) / (2 * self.width)

    def best(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features float [B, d] -> (match float32 [B], pv_index int64 [B]): the best PV's share
        of agreeing signs, and its index (0 and -1 for an empty PV set)."""
        return self._best(self.agreement(features))

    def _best(self, agree: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``agreement`` float32 [B, K] -> ``best``'s pair."""
        if self.size == 0:  # [B, 0]: its row sums are the zeros, and no PV is -1
            zeros = agree.sum(dim=1)
            return zeros, zeros.long() - 1
        match, pv_index = agree.max(dim=1)
        return match, pv_index

    def forward(self, features: torch.Tensor, threshold: torch.Tensor) -> tuple[torch.Tensor, ...]:
        agree = self.agreement(features)
        match, pv_index = self._best(agree)
        return match, pv_index, match > threshold, agree


class GuardModule(nn.Module):
    """Backbone + target gather + ``SignMatchHead``, the module that ``torch.onnx.export`` traces.

    Input shape: input_ids int64 [B, T], attention_mask int64 [B, T], token_type_ids int64 [B, T]
    (only when ``use_token_types``), threshold float32 scalar.
    Output shape: match [B], pv_index [B], triggered [B], pv_match [B, K] (see ``SignMatchHead``),
    then features float32 [B, d] at the target position, then (with ``saliency``) float32
    [B, T]: the last layer's attention from the target position to every token, averaged over
    heads (each row sums to 1 over the unpadded tokens).

    With ``prune`` (and a BERT-style backbone, ``split_last_layer``) the last layer runs for the
    target row only; ``pruned`` says whether it does. Otherwise saliency needs eager attention
    (the full forward must return the weights).
    """

    def __init__(self, encoder: Any, signs: np.ndarray, *, target: str, mask_token_id: int | None = None,
                 use_token_types: bool = False, saliency: bool = False, prune: bool = True) -> None:
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
        self.saliency = saliency
        split = split_last_layer(encoder) if prune else None
        self.trunk, self.last_layer = split if split else (None, None)  # share the encoder's weights

    @property
    def pruned(self) -> bool:
        """Whether the last layer runs for the target row only."""
        return self.last_layer is not None

    @property
    def mask_in_input(self) -> bool:
        """Whether every input holds the mask token (target ``mask``)."""
        return self.target == "mask"

    @property
    def output_names(self) -> tuple[str, ...]:
        """Names of ``forward``'s outputs, in order."""
        return GRAPH_OUTPUTS + ("features",) + (("saliency",) if self.saliency else ())

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None,
               *, saliency: bool, full: bool = False) -> tuple[torch.Tensor, ...]:
        """Return (features float32 [B, d],) plus, with ``saliency``, float32 [B, T] (see the class).

        ``full`` runs the backbone's own forward even when pruned (the parity reference; its
        saliency needs eager attention).
        """
        kwargs = {"token_type_ids": token_type_ids} if self.use_token_types else {}
        if self.pruned and not full:
            hidden = self.trunk(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
            rows = self._at_target(hidden, input_ids, attention_mask).unsqueeze(1)  # [B, 1, d]
            features, weights = last_layer_rows(self.last_layer, hidden, rows, attention_mask)
            return (_float32(features), _float32(weights.mean(dim=2))) if saliency else (_float32(features),)
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, output_attentions=saliency, **kwargs)
        features = _float32(self._at_target(out.last_hidden_state, input_ids, attention_mask))
        if not saliency:
            return (features,)
        return features, _float32(self._target_attention(out.attentions[-1], input_ids, attention_mask))

    def reference(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  token_type_ids: torch.Tensor | None, *, saliency: bool) -> dict[str, torch.Tensor]:
        """The full (unpruned) forward's outputs by name: the parity reference."""
        features, *rest = self.encode(input_ids, attention_mask, token_type_ids, saliency=saliency, full=True)
        return {"features": features, **({"saliency": rest[0]} if rest else {})}

    def _at_target(self, hidden: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Each sequence's target position of ``hidden`` [B, T, d]: [B, d]."""
        if self.target in ("cls", "token"):
            return hidden[:, 0 if self.target == "cls" else 1]
        return gather_positions(hidden, self._positions(input_ids, attention_mask))

    def _target_attention(self, attention: torch.Tensor, input_ids: torch.Tensor,
                          attention_mask: torch.Tensor) -> torch.Tensor:
        """Attention weights [B, H, T (from), T (to)] -> [B, T]: the target position's row, heads averaged."""
        if self.target in ("cls", "token"):
            rows = attention[:, :, 0 if self.target == "cls" else 1]
        else:
            heads, width = attention.shape[1], attention.shape[3]
            index = self._positions(input_ids, attention_mask).view(-1, 1, 1, 1).expand(-1, heads, 1, width)
            rows = attention.gather(2, index).squeeze(2)  # [B, H, T]
        return rows.mean(dim=1)

    def _positions(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """int64 [B]: the target position of targets ``last`` and ``mask`` (the first mask token;
        the runtime refuses rows without one)."""
        if self.target == "last":
            return attention_mask.sum(dim=1) - 1
        return (input_ids == self.mask_token_id).float().argmax(dim=1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, threshold: torch.Tensor):
        features, *saliency = self.encode(input_ids, attention_mask, None, saliency=self.saliency)
        return (*self.head(features, threshold), features, *saliency)


class TokenTypeGuardModule(GuardModule):
    """``GuardModule`` for backbones that read ``token_type_ids`` (BERT-style sentence pairs)."""

    def __init__(self, encoder: Any, signs: np.ndarray, *, target: str, mask_token_id: int | None = None,
                 saliency: bool = False, prune: bool = True) -> None:
        super().__init__(encoder, signs, target=target, mask_token_id=mask_token_id, use_token_types=True,
                         saliency=saliency, prune=prune)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor,
                threshold: torch.Tensor):
        features, *saliency = self.encode(input_ids, attention_mask, token_type_ids, saliency=self.saliency)
        return (*self.head(features, threshold), features, *saliency)


def _float32(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` as float32, without a (traced, no-op) Cast node when it already is."""
    return tensor if tensor.dtype == torch.float32 else tensor.float()
