"""Target positions: where in the output sequence a backdoor's PV lives (method.md §1).

``cls``: position 0; ``last``: the last non-padding position (models whose summary token is
last); ``mask``: the first ``[MASK]`` token; ``token``: an ordinary token position (position 1,
the first token after the leading special token).
"""

from __future__ import annotations

import torch

from lmsan.errors import ConfigError
from lmsan.pvset import TARGETS


def target_positions(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, target: str, *, mask_token_id: int | None = None
) -> torch.Tensor:
    """Return int64 [B] sequence positions of the target feature.

    Args:
        input_ids: int64 [B, T].
        attention_mask: int64 [B, T], 1 for real tokens.
        target: one of ``TARGETS``.
        mask_token_id: required for ``mask``.

    Raises:
        ConfigError: unknown target, no mask token id, or a row without ``[MASK]``.
    """
    batch = input_ids.shape[0]
    if target == "cls":
        return torch.zeros(batch, dtype=torch.long, device=input_ids.device)
    if target == "token":
        return torch.ones(batch, dtype=torch.long, device=input_ids.device)
    if target == "last":
        return attention_mask.long().sum(dim=1) - 1
    if target == "mask":
        if mask_token_id is None:
            raise ConfigError("target 'mask' needs a tokenizer with a mask token")
        is_mask = input_ids == mask_token_id
        if not bool(is_mask.any(dim=1).all()):
            raise ConfigError("target 'mask': a sequence has no mask token")
        return is_mask.long().argmax(dim=1)
    raise ConfigError(f"unknown target {target!r}; expected one of {', '.join(TARGETS)}")


def gather_positions(hidden: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Pick one position per row: hidden float [B, T, d], positions int64 [B] -> [B, d]."""
    index = positions.view(-1, 1, 1).expand(-1, 1, hidden.shape[-1])  # [B, 1, d]
    return hidden.gather(1, index).squeeze(1)
