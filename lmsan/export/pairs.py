"""Split a batch of BERT-style sentence-pair encodings into each sentence on its own, in-graph.

A pair task's ``bare`` monitor reads each sentence of a pair alone: the PVs were mined on single
sentences and a task-agnostic trigger fires in any sentence by itself, while the joined pair
(``[CLS] A [SEP] B [SEP]``) moves the [CLS] features off the PV (measured: a POR trigger in the
second sentence matched its PV on 7-98 % of joined pairs, on 97-100 % of the sentences alone).
``split_pair`` builds ``[CLS] A [SEP]`` and ``[CLS] B [SEP]`` from the pair's own tensors, so the
graph keeps its inputs and the runtime stays unchanged; every op traces to ONNX with dynamic
shapes (``Range``, ``Gather``). Imports torch; never mining or runtime.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch


@dataclass
class PairSplit:
    """Each pair's two sentences as separate rows of the same batch size.

    Attributes:
        first: (input_ids, attention_mask) int64 [B, Wa]: ``[CLS] A [SEP]`` at the pair's own
            positions, ``Wa`` the longest first segment.
        second: (input_ids, attention_mask) int64 [B, Wb]: ``[CLS] B [SEP]``, B moved to
            position 1 (token type 0, as a single sentence is encoded).
        first_length: int64 [B], tokens of ``[CLS] A [SEP]``.
        second_length: int64 [B], tokens of ``B [SEP]`` (0: the row is a single sentence).
    """

    first: tuple[torch.Tensor, torch.Tensor]
    second: tuple[torch.Tensor, torch.Tensor]
    first_length: torch.Tensor
    second_length: torch.Tensor

    @property
    def has_second(self) -> torch.Tensor:
        """bool [B]: the row is a pair (its second sentence holds tokens)."""
        return self.second_length > 0


def split_pair(input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor) -> PairSplit:
    """Split right-padded pair encodings (token type 1 marks ``B [SEP]``) into their sentences.

    Input shape: int64 [B, T] each. A row without type-1 tokens is a single sentence: its
    ``first`` is the row itself and its ``second`` holds only [CLS] (``has_second`` False).
    """
    valid = attention_mask > 0
    second_length = ((token_type_ids == 1) & valid).sum(dim=1)  # [B]
    first_length = valid.sum(dim=1) - second_length  # [B]
    first_cols = torch.arange(first_length.max(), device=input_ids.device)  # [Wa]
    first_ids = input_ids.index_select(1, first_cols)
    first_mask = (first_cols[None, :] < first_length[:, None]).to(attention_mask.dtype)
    second_cols = torch.arange(second_length.max() + 1, device=input_ids.device)  # [Wb]: [CLS] + B [SEP]
    last = input_ids.shape[1] - 1
    source = (second_cols[None, :] - 1 + first_length[:, None]).clamp(max=last)  # [B, Wb]
    source = torch.where(second_cols[None, :] == 0, torch.zeros_like(source), source)
    second_ids = input_ids.gather(1, source)
    second_mask = (second_cols[None, :] < (second_length + 1)[:, None]).to(attention_mask.dtype)
    return PairSplit((first_ids, first_mask), (second_ids, second_mask), first_length, second_length)


def join_saliency(split: PairSplit, first: torch.Tensor, second: torch.Tensor, use_second: torch.Tensor,
                  width: int | torch.Tensor) -> torch.Tensor:
    """Map one sentence's saliency row back onto the pair's tokens.

    Input shape: first float [B, Wa], second float [B, Wb] (over each row's tokens), use_second
    bool [B] (take the second sentence's row), width: T, the pair's token count.
    Output shape: float [B, T]: the chosen row at the pair positions of its tokens ([CLS] at 0),
    zero elsewhere.
    """
    cols = torch.arange(width, device=first.device)[None, :]  # [1, T]
    in_first = cols < split.first_length[:, None]
    from_first = first.gather(1, cols.clamp(max=first.shape[1] - 1).expand(first.shape[0], -1)) * in_first.to(first.dtype)
    start = split.first_length[:, None]
    in_second = (cols == 0) | ((cols >= start) & (cols < start + split.second_length[:, None]))
    index = torch.where(cols == 0, torch.zeros_like(cols - start), (cols - start + 1).clamp(min=0))
    from_second = second.gather(1, index.clamp(max=second.shape[1] - 1)) * in_second.to(second.dtype)
    return torch.where(use_second[:, None], from_second, from_first)


def read_each_sentence(encode: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, Any]],
                       best: Callable[[torch.Tensor], torch.Tensor], input_ids: torch.Tensor,
                       attention_mask: torch.Tensor, token_type_ids: torch.Tensor, *,
                       saliency: bool) -> tuple[torch.Tensor, Any]:
    """Read each sentence of a pair alone and keep the better-matching one.

    Args:
        encode: (input_ids, attention_mask) int64 [B, W] of single sentences -> (features float
            [B, d], saliency float [B, W] or None).
        best: features [B, d] -> the best PV match float [B] (``SignMatchHead.best``).
        input_ids, attention_mask, token_type_ids: int64 [B, T], pairs or single sentences.
        saliency: map the chosen sentence's saliency back onto the pair's tokens.
    Returns:
        (features float [B, d], saliency float [B, T] or None).
    """
    split = split_pair(input_ids, attention_mask, token_type_ids)
    (first, first_weights), (second, second_weights) = (encode(ids, mask) for ids, mask in (split.first, split.second))
    use_second = split.has_second & (best(second) > best(first))
    features = torch.where(use_second[:, None], second, first)
    if not saliency:
        return features, None
    return features, join_saliency(split, first_weights, second_weights, use_second, input_ids.shape[1])
