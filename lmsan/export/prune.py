"""Run the backbone's last layer for the target row only: the guard reads one position.

Every layer but the last must run on the whole sequence (the next layer attends to all of it).
The last layer's output, though, is read at one position per sequence (the target, method.md §1),
so its query, attention output and feed-forward need only that row; its keys and values still
cover every token. That skips most of the last layer: about 1/7 of a 6-layer model's forward
pass, half of a 2-layer one's. The result is the same function (float rounding aside; export
parity compares it with the full forward).

The split is duck-typed on BERT-style layers (BERT, RoBERTa, XLM-R, ELECTRA, MiniLM, ...):
``attention.self.{query,key,value}`` linear maps with ``scaling`` and ``attention_head_size``,
``attention.output(hidden, input)`` and ``feed_forward_chunk``, absolute positions, no decoder.
``split_last_layer`` returns None for anything else (also for encoders with modules besides their
layers, such as a final LayerNorm), and the guard exports the full forward.
Imports torch; never mining or runtime.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


def split_last_layer(backbone: Any) -> tuple[nn.Module, nn.Module] | None:
    """Return (trunk, last layer) of a BERT-style backbone, or None when its layers differ.

    The trunk is a shallow copy of ``backbone`` whose encoder stops before the last layer: its
    ``last_hidden_state`` is the last layer's input. Both share every parameter with
    ``backbone``, which is left unchanged.
    """
    layers = getattr(getattr(backbone, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0 or not _is_bert_layer(layers[-1]):
        return None
    if set(backbone.encoder._modules) != {"layer"}:  # e.g. a final LayerNorm after the layers
        return None
    encoder = copy.copy(backbone.encoder)
    encoder._modules = dict(encoder._modules)  # a copy.copy of a module shares its child dict
    encoder.layer = nn.ModuleList(list(layers)[:-1])
    trunk = copy.copy(backbone)
    trunk._modules = dict(trunk._modules)
    trunk.encoder = encoder
    return trunk, layers[-1]


def _is_bert_layer(layer: nn.Module) -> bool:
    attention = getattr(layer, "attention", None)
    heads = getattr(attention, "self", None)
    return (
        all(isinstance(getattr(heads, name, None), nn.Linear) for name in ("query", "key", "value"))
        and isinstance(getattr(heads, "scaling", None), float)
        and isinstance(getattr(heads, "attention_head_size", None), int)
        and getattr(heads, "position_embedding_type", "absolute") == "absolute"
        and not getattr(heads, "is_decoder", False)
        and not getattr(layer, "is_decoder", False)
        and callable(getattr(getattr(attention, "output", None), "forward", None))
        and callable(getattr(layer, "feed_forward_chunk", None))
    )


def last_layer_rows(layer: nn.Module, hidden: torch.Tensor, rows: torch.Tensor, attention_mask: torch.Tensor,
                    prefix: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The last layer's output at the target rows, and those rows' attention weights (eval mode).

    With one query row per sequence the heads need no reshapes: a constant 0/1 matrix ``heads``
    [d, H] sums each head's slice of ``key * query`` into that head's score, and its transpose
    spreads each head's weights back over the head's slice of ``value`` (fewer graph nodes).

    Input shape: hidden float [B, T, d] (the layer's input), rows float [B, 1, d] (hidden at
    each sequence's target position), attention_mask int64 [B, S] (1 = key, 0 = padding; S = T,
    or P + T with a prefix), prefix float [2, P, d] or None (the layer's P-tuning v2 key and
    value prefix, ``lmsan.tuning.model``: keys and values already projected).
    Output shape: features float [B, d], attention float [B, S, H] (softmax weights from the
    target row to every key, prefix first, per head; zero on padding).
    """
    attention = layer.attention.self
    width = attention.query.out_features
    heads = torch.eye(width // attention.attention_head_size, dtype=hidden.dtype)
    heads = heads.repeat_interleave(attention.attention_head_size, dim=0)  # (d, H): column h marks head h
    query = attention.query(rows)  # (B, 1, d)
    keys, values = attention.key(hidden), attention.value(hidden)  # (B, T, d)
    if prefix is not None:
        batch = hidden.shape[0]
        keys = torch.cat([prefix[0].to(hidden.dtype).expand(batch, -1, -1), keys], dim=1)  # (B, P + T, d)
        values = torch.cat([prefix[1].to(hidden.dtype).expand(batch, -1, -1), values], dim=1)
    scores = (keys * query) @ heads * attention.scaling  # (B, S, H)
    scores = scores.masked_fill(attention_mask[:, :, None] == 0, torch.finfo(hidden.dtype).min)
    weights = torch.softmax(scores, dim=1)  # (B, S, H): over keys
    context = ((weights @ heads.T) * values).sum(dim=1, keepdim=True)  # (B, 1, d)
    out = layer.feed_forward_chunk(layer.attention.output(context, rows))  # (B, 1, d)
    return out[:, 0], weights
