"""``PromptTuned``: a frozen backbone, a trainable prompt and a task head (method.md §6).

Two methods, both leaving every backbone weight untouched:

- ``prefix`` (P-tuning v2): trainable key/value prefixes ``[L, 2, P, d]`` in every layer. The
  backbone's attention runs through ``prefix_attention``, an attention function registered with
  ``transformers.AttentionInterface`` as ``lmsan_prefix``; it prepends layer ``l``'s prefix to the
  keys and values. (``BertModel`` ignores ``past_key_values`` on transformers 5, and peft's
  ``PrefixTuningConfig`` refuses BERT.) The prefix travels as the ``lmsan_prefix`` keyword, which
  transformers passes down to every attention call, and the mask is a prepared 4-D additive mask
  over prefix + tokens. A linear head reads the last layer at [CLS] (not the pooler), or, for
  token classification (target ``tokens``), at every position.
- ``prompt`` (P-tuning): ``P`` trainable prompt vectors and a [MASK] are inserted right after
  [CLS] (``[CLS] <p_1..p_P> [MASK] text [SEP]``), so any tokenized input works unchanged. The
  head reads [MASK]: the backbone's MLM head scored on one verbaliser token per label where the
  backbone has an MLM head, otherwise a linear head.

Both build the backbone's inputs in ``backbone_inputs`` so that the exporter can run them through
a pruned trunk too (``lmsan.export``), and, with ``bare=True``, the same template with a prompt of
length 0: the bare backbone's pass that the guard's default monitor reads. Imports torch and
transformers; never runtime.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from lmsan.errors import ConfigError, DataError

METHODS = ("prefix", "prompt")
TARGETS = ("cls", "mask", "tokens")
TOKEN_FEATURE_ROW = 1  # target tokens: the monitor reads the first text token (the PV target ``token``)
ATTENTION = "lmsan_prefix"  # the attention function's registered name
INIT_STD = 0.02  # prompt and head initialisation (BERT's initializer_range)


def prefix_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                     **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager attention with layer ``module.layer_idx``'s prefix prepended to keys and values.

    Input shape: query/key/value float [B, H, T, dh]; attention_mask additive float
    [B, 1, T or 1, P + T] when a prefix is given (``lmsan_prefix`` float [L, 2, P, d]), else
    transformers' eager mask over T. Output shape: (float [B, T, H, dh], weights [B, H, T, P + T]).
    """
    from transformers.models.bert.modeling_bert import eager_attention_forward

    prefix = kwargs.pop("lmsan_prefix", None)
    if prefix is not None:
        batch, heads, _, head_size = key.shape
        keys, values = prefix[module.layer_idx].view(2, -1, heads, head_size).transpose(1, 2)  # [H, P, dh] each
        key = torch.cat([keys.unsqueeze(0).expand(batch, -1, -1, -1), key], dim=2)
        value = torch.cat([values.unsqueeze(0).expand(batch, -1, -1, -1), value], dim=2)
    return eager_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout)


def register_prefix_attention() -> None:
    """Register ``prefix_attention`` (and the eager mask builder) under ``ATTENTION`` (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(ATTENTION, prefix_attention)
    AttentionMaskInterface.register(ATTENTION, eager_mask)


def additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """int [B, S] (1 = attend) -> additive float [B, 1, 1, S]: 0 where attended, dtype min elsewhere."""
    return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


@dataclass
class BackboneInputs:
    """What ``PromptTuned.backbone_inputs`` hands the backbone, and how to read its output.

    Attributes:
        kwargs: keyword arguments for the backbone (or a trunk of it).
        key_mask: int64 [B, S]: the keys every query may attend to, in key order (prefix first).
        target: the row of ``last_hidden_state`` the head reads (same for every sequence).
        offset: template rows inserted after row 0 ([CLS]): hidden row ``i + offset`` holds input
            token ``i >= 1`` (0 for ``prefix``).
        prefix: keys before the first token's key (the prefix length; 0 for ``prompt``).
    """

    kwargs: dict[str, Any]
    key_mask: torch.Tensor
    target: int
    offset: int
    prefix: int


class PromptTuned(nn.Module):
    """Frozen backbone + trainable prompt + head.

    Trainable parameters: ``prompt`` (``prefix``: float [L, 2, P, d], layer l's key prefix is
    ``prompt[l, 0]``, its value prefix ``prompt[l, 1]``, heads side by side as in the backbone's
    projections; ``prompt``: float [P, d] input embeddings) and, without a verbaliser, ``head``
    (``nn.Linear(d, C)``).

    Input shape: input_ids int64 [B, T], attention_mask int64 [B, T], token_type_ids int64 [B, T]
    or None: the tokenizer's ordinary encoding (``reserved_tokens`` fewer than the model maximum).
    Output shape: (logits float [B, C], features float [B, d]: the last layer at the head's
    position, what a guard exported with ``--monitor task`` checks; the default ``bare`` monitor
    reads ``backbone_inputs(..., bare=True)`` instead). Target ``tokens`` (token classification, method
    ``prefix``, linear head): logits float [B, T, C], one row per position, and features the last
    layer at position 1 (the first text token, where a ``token`` PV set's monitor reads).
    """

    def __init__(self, loaded: Any, *, method: str, length: int, num_labels: int, target: str | None = None,
                 verbalizer: Sequence[int] | None = None) -> None:
        super().__init__()
        if method not in METHODS:
            raise ConfigError(f"unknown tuning method {method!r}; expected one of {', '.join(METHODS)}")
        target = target or ("cls" if method == "prefix" else "mask")
        if target not in TARGETS:
            raise ConfigError(f"unknown head position {target!r}; expected cls, mask or tokens")
        if target == "tokens" and (method != "prefix" or verbalizer is not None):
            raise ConfigError("token classification (target tokens) needs method prefix (P-tuning v2) and a linear "
                              "head, not " + ("a verbalizer" if method == "prefix" else f"method {method}"))
        if method == "prefix" and target == "mask":
            raise ConfigError("method prefix reads [CLS]; use method prompt for a [MASK] head")
        if length < 1:
            raise ConfigError(f"prompt length must be >= 1, got {length}")
        if num_labels < 2:
            raise ConfigError(f"a task needs at least 2 labels, got {num_labels}")
        config = loaded.model.config
        self.method, self.length, self.target, self.num_labels = method, int(length), target, int(num_labels)
        self.backbone = loaded.encoder
        self.mask_token_id = loaded.tokenizer.mask_token_id
        self.cls_token_id = loaded.tokenizer.cls_token_id
        if self.cls_token_id is None:
            self.cls_token_id = loaded.tokenizer.bos_token_id
        if method == "prompt" and target == "mask" and self.mask_token_id is None:
            raise ConfigError(f"method prompt needs a mask token; the tokenizer of {loaded.source} has none")
        width, layers = int(config.hidden_size), int(config.num_hidden_layers)
        if method == "prefix":
            register_prefix_attention()
            self.backbone.config._attn_implementation = ATTENTION
            self.prompt = nn.Parameter(torch.randn(layers, 2, length, width) * INIT_STD)
        else:
            self.prompt = nn.Parameter(torch.randn(length, width) * INIT_STD)
        self.verbalizer: tuple[int, ...] | None = None
        self.mlm_head: nn.Module | None = None
        if verbalizer is not None:
            self._set_verbalizer(loaded, verbalizer)
        else:
            self.head = nn.Linear(width, num_labels)
            nn.init.normal_(self.head.weight, std=INIT_STD)
            nn.init.zeros_(self.head.bias)
        for parameter in self.backbone.parameters():
            parameter.requires_grad_(False)

    def _set_verbalizer(self, loaded: Any, verbalizer: Sequence[int]) -> None:
        ids = tuple(int(i) for i in verbalizer)
        if self.target != "mask":
            raise ConfigError("a verbaliser scores the MLM head at [MASK]: use method prompt")
        if len(ids) != self.num_labels:
            raise ConfigError(f"verbaliser has {len(ids)} tokens for {self.num_labels} labels")
        vocab = int(loaded.model.config.vocab_size)
        if any(not 0 <= i < vocab for i in ids) or len(set(ids)) != len(ids):
            raise ConfigError(f"verbaliser token ids must be distinct and in [0, {vocab}), got {list(ids)}")
        self.mlm_head = mlm_head_of(loaded.model)
        if self.mlm_head is None:
            raise ConfigError(f"{loaded.source} was loaded without an MLM head (load_model(..., with_mlm_head=True)), "
                              "or has none: use a linear head (no verbaliser)")
        for parameter in self.mlm_head.parameters():
            parameter.requires_grad_(False)
        self.verbalizer = ids
        self.register_buffer("verbalizer_ids", torch.tensor(ids, dtype=torch.long), persistent=False)

    @property
    def reserved_tokens(self) -> int:
        """Input positions the template adds (tokenize with this many fewer than the model maximum)."""
        return self.length + 1 if self.method == "prompt" else 0

    def backbone_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        token_type_ids: torch.Tensor | None = None, *,
                        prompt: torch.Tensor | None = None, bare: bool = False) -> BackboneInputs:
        """The backbone's keyword arguments for this method, and where its output is read.

        ``prompt`` replaces ``self.prompt`` (same shape): a shared multi-task graph feeds each
        task's prompt as a graph input (``lmsan.export.task``). ``bare`` builds the template with
        a prompt of length 0 (what the PVs were mined on; the guard's ``bare`` monitor): no prefix
        (``prefix``: the plain input, read at [CLS] or, target ``tokens``, position 1) or no prompt
        vectors (``prompt``: ``[CLS] [MASK] text [SEP]``, read at row 1; target ``cls``: the plain
        input). No zero-size tensor is built.
        """
        prompt = self.prompt if prompt is None else prompt
        batch = input_ids.shape[0]
        types = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        if self.method == "prefix":
            row = TOKEN_FEATURE_ROW if self.target == "tokens" else 0
            if bare:  # the plain input; the mask as a bare backbone gets it
                kwargs = {"input_ids": input_ids, "attention_mask": attention_mask, **types}
                return BackboneInputs(kwargs, attention_mask, target=row, offset=0, prefix=0)
            ones = torch.ones(batch, self.length, dtype=attention_mask.dtype, device=attention_mask.device)
            key_mask = torch.cat([ones, attention_mask], dim=1)  # [B, P + T]
            kwargs = {"input_ids": input_ids, "attention_mask": additive_mask(key_mask, prompt.dtype),
                      "lmsan_prefix": prompt, **types}
            return BackboneInputs(kwargs, key_mask, target=row, offset=0, prefix=self.length)
        embeddings = self.backbone.get_input_embeddings()(input_ids)  # [B, T, d]
        extra = [] if bare else [prompt.unsqueeze(0).expand(batch, -1, -1).to(embeddings.dtype)]
        if self.target == "mask":
            mask_row = self.backbone.get_input_embeddings().weight[self.mask_token_id]
            extra.append(mask_row.view(1, 1, -1).expand(batch, 1, -1))
        added = sum(part.shape[1] for part in extra)
        if not added:  # bare, head at [CLS]: the plain input
            kwargs = {"input_ids": input_ids, "attention_mask": attention_mask, **types}
            return BackboneInputs(kwargs, attention_mask, target=0, offset=0, prefix=0)
        embeds = torch.cat([embeddings[:, :1], *extra, embeddings[:, 1:]], dim=1)  # [B, 1 + added + T - 1, d]
        ones = torch.ones(batch, added, dtype=attention_mask.dtype, device=attention_mask.device)
        key_mask = torch.cat([attention_mask[:, :1], ones, attention_mask[:, 1:]], dim=1)
        if token_type_ids is not None:
            zeros = torch.zeros(batch, added, dtype=token_type_ids.dtype, device=token_type_ids.device)
            types = {"token_type_ids": torch.cat([token_type_ids[:, :1], zeros, token_type_ids[:, 1:]], dim=1)}
        kwargs = {"inputs_embeds": embeds, "attention_mask": key_mask, **types}
        return BackboneInputs(kwargs, key_mask, target=added if self.target == "mask" else 0, offset=added, prefix=0)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """features float [B, d] at the head position -> logits float [B, C]; with a linear head
        any float [..., d] -> [..., C] (target ``tokens``: the whole last layer [B, T, d])."""
        if self.mlm_head is not None:
            return self.mlm_head(features).index_select(-1, self.verbalizer_ids)
        return self.head(features)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = self.backbone_inputs(input_ids, attention_mask, token_type_ids)
        hidden = self.backbone(**inputs.kwargs).last_hidden_state
        features = hidden[:, inputs.target]
        return self.logits(hidden if self.target == "tokens" else features), features

    def trainable(self) -> list[nn.Parameter]:
        """The parameters training may change (the prompt, and the head without a verbaliser)."""
        return [self.prompt] + (list(self.head.parameters()) if self.mlm_head is None else [])

    def task_tensors(self) -> dict[str, torch.Tensor]:
        """The task's own tensors, detached on the CPU: what a task directory stores."""
        tensors = {"prompt": self.prompt}
        if self.mlm_head is None:
            tensors.update({"head.weight": self.head.weight, "head.bias": self.head.bias})
        return {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}

    def load_task_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Copy stored task tensors in.

        Raises:
            DataError: a tensor is missing, unexpected, or has another shape.
        """
        expected = {name: tuple(t.shape) for name, t in self.task_tensors().items()}
        missing = sorted(set(expected) - set(tensors))
        if missing:
            head = " (no head: was the task tuned with a verbaliser?)" if "head.weight" in missing else ""
            raise DataError(f"task tensors missing: {', '.join(missing)}{head}")
        extra = sorted(set(tensors) - set(expected))
        if extra:
            raise DataError(f"unexpected task tensors: {', '.join(extra)}")
        for name, shape in expected.items():
            if tuple(tensors[name].shape) != shape:
                raise DataError(f"task tensor {name!r} has shape {tuple(tensors[name].shape)}, expected {shape}")
        with torch.no_grad():
            self.prompt.copy_(tensors["prompt"])
            if self.mlm_head is None:
                self.head.weight.copy_(tensors["head.weight"])
                self.head.bias.copy_(tensors["head.bias"])


def mlm_head_of(model: nn.Module) -> nn.Module | None:
    """The MLM head of a ``*ForMaskedLM`` model (``cls`` for BERT, ``lm_head`` for RoBERTa), else None.

    Input shape of the head: float [..., d]; output: float [..., V] vocabulary scores.
    """
    if model.get_output_embeddings() is None:
        return None
    children = [module for name, module in model.named_children() if name != model.base_model_prefix]
    return children[0] if len(children) == 1 else None
