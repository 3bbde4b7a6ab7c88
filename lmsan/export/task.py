"""The guarded task module: a prompt-tuned task and the fused sign-match head in one graph.

``TaskGuardModule`` runs a ``PromptTuned`` task (``lmsan.tuning.model``) and returns its
``logits`` together with the monitor's ``match`` / ``pv_index`` / ``triggered``. Where the monitor
reads is its ``monitor`` mode (``MONITORS``):

- ``bare`` (the default): the same graph also runs the backbone **without** the task's prompt
  (``PromptTuned.backbone_inputs(..., bare=True)``: a prompt of length 0) and the monitor reads
  that pass, where a guard of the bare backbone reads (P-tuning: ``[CLS] [MASK] text``, the
  [MASK] at row 1; P-tuning v2: [CLS], or position 1 for a token task). The PVs were mined on the
  bare backbone, so this is what they describe; a prompt can move a clean input's features onto
  a PV or a triggered one's off it. About two backbone passes per call; the bare pass runs the
  last layer for its one row wherever the layers allow it (also for a token task, whose
  prompted pass runs in full). A pair task (``segments``, BERT-style token types) reads each
  sentence of the pair on its own (``lmsan.export.pairs``), as the PVs were mined on single
  sentences; the sentence that matches best speaks for the pair.
- ``task``: one pass; the monitor reads the task's own (prompted) forward pass at the position
  the task's head reads (its [CLS] or its [MASK]). Cheaper, but only sound for a task whose
  monitor has been measured to flag as the bare one does.

The template's extra positions (P-tuning's prompt and [MASK]) are built inside the graph, so the
runtime feeds the tokenizer's ordinary encoding. A token task (head position ``tokens``) answers
at every position (``logits`` [B, T, C]) and its monitor reads position 1, the first text token
(a ``token`` PV set); its prompted pass runs the last layer in full. Imports torch; never mining
or runtime.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from lmsan.errors import ConfigError
from lmsan.export.head import GRAPH_OUTPUTS, SignMatchHead, _float32
from lmsan.export.pairs import read_each_sentence
from lmsan.export.prune import last_layer_rows, split_last_layer
from lmsan.export.tasks import DEFAULT_MONITOR, MONITORS


class TaskGuardModule(nn.Module):
    """``PromptTuned`` task + ``SignMatchHead`` on the monitor's features (``monitor``).

    Input shape: input_ids int64 [B, T], attention_mask int64 [B, T], token_type_ids int64 [B, T]
    (only when ``use_token_types``), threshold float32 scalar.
    Output shape (``output_names``): match [B], pv_index [B], triggered [B], pv_match [B, K]
    (``SignMatchHead``), features float32 [B, d] (what the monitor reads: the bare pass's, or the
    task's own at its head position), then with ``saliency`` float32 [B, T] (the last layer's attention from the
    monitor's row to each input token, heads averaged, in the pass the monitor reads; template
    keys left out, so rows sum to at most 1), then logits float32 [B, C] (always from the
    prompted pass; a token task: [B, T, C], one row per position).

    With ``prune`` and a BERT-style backbone the last layer runs for the read row only
    (``lmsan.export.prune``; a prefix joins that row's keys and values); a token task's prompted
    pass runs it in full, its bare pass still for one row.

    With ``segments`` (a pair task, monitor ``bare``, token types) the bare pass reads each
    sentence of a pair alone; the outputs keep their shapes (the better-matching sentence's
    features, its saliency mapped back onto the pair's tokens).
    """

    def __init__(self, tuned: Any, signs: np.ndarray, *, use_token_types: bool = False, saliency: bool = False,
                 prune: bool = True, monitor: str = DEFAULT_MONITOR, segments: bool = False) -> None:
        super().__init__()
        if monitor not in MONITORS:
            raise ConfigError(f"unknown monitor {monitor!r}; expected one of {', '.join(MONITORS)}")
        self.tuned = tuned
        self.encoder = tuned.backbone  # parity and the exporter read its config
        self.head = SignMatchHead(signs)
        self.target = tuned.target
        self.tokens = tuned.target == "tokens"
        self.use_token_types = use_token_types
        self.saliency = saliency
        self.monitor = monitor
        if segments and (monitor != "bare" or not use_token_types or tuned.target == "tokens"):
            raise ConfigError("reading each sentence of a pair alone needs monitor 'bare', a backbone with token "
                              "types and a sequence task")
        self.segments = segments
        split = split_last_layer(tuned.backbone) if prune else None
        self.trunk, self.last_layer = split if split and not self.tokens else (None, None)
        # the bare pass reads one row even for a token task (its prompted pass needs every row)
        self.bare_trunk, self.bare_last_layer = split if split and monitor == "bare" else (None, None)

    @property
    def pruned(self) -> bool:
        """Whether the prompted (task) pass runs the last layer for the head's row only."""
        return self.last_layer is not None

    @property
    def monitor_pruned(self) -> bool:
        """Whether the pass the monitor reads runs the last layer for one row only."""
        return self.bare_last_layer is not None if self.monitor == "bare" else self.pruned

    mask_in_input = False  # the template inserts P-tuning's [MASK]; inputs are plain text

    @property
    def output_names(self) -> tuple[str, ...]:
        """Names of ``forward``'s outputs, in order."""
        return GRAPH_OUTPUTS + ("features",) + (("saliency",) if self.saliency else ()) + ("logits",)

    extra_inputs: tuple[str, ...] = ()  # graph inputs after ``threshold`` (the shared variant's task tensors)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None,
               *, saliency: bool, full: bool = False, prompt: torch.Tensor | None = None,
               bare: bool = False) -> tuple[Any, Any, Any]:
        """Return (features float32 [B, d], saliency float32 [B, T] or None, the last layer
        [B, T, d] or None when pruned).

        ``full`` runs the backbone's own forward even when pruned (the parity reference);
        ``prompt`` replaces the task's own prompt tensor (the shared variant); ``bare`` runs the
        backbone without the prompt (the ``bare`` monitor's pass).
        """
        prompt = self.tuned.prompt if prompt is None else prompt
        inputs = self.tuned.backbone_inputs(input_ids, attention_mask,
                                            token_type_ids if self.use_token_types else None, prompt=prompt,
                                            bare=bare)
        trunk, last_layer = (self.bare_trunk, self.bare_last_layer) if bare else (self.trunk, self.last_layer)
        if last_layer is not None and not full:
            hidden = trunk(**inputs.kwargs).last_hidden_state
            rows = hidden[:, inputs.target : inputs.target + 1]  # [B, 1, d]
            prefix = prompt[-1] if self.tuned.method == "prefix" and not bare else None  # [2, P, d]
            features, weights = last_layer_rows(last_layer, hidden, rows, inputs.key_mask, prefix=prefix)
            return _float32(features), self._to_tokens(weights.mean(dim=2), inputs) if saliency else None, None
        out = self.tuned.backbone(**inputs.kwargs, output_attentions=saliency)
        features = _float32(out.last_hidden_state[:, inputs.target])
        if not saliency:
            return features, None, out.last_hidden_state
        rows = out.attentions[-1][:, :, inputs.target].mean(dim=1)  # [B, S]
        return features, self._to_tokens(rows, inputs), out.last_hidden_state

    def monitored(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None,
                  *, saliency: bool, full: bool = False,
                  prompt: torch.Tensor | None = None) -> tuple[Any, Any, Any, Any]:
        """Return (monitor features float32 [B, d], monitor saliency [B, T] or None, the task's
        head-position features float32 [B, d], the task's last layer [B, T, d] or None): one
        pass with monitor ``task``, the bare pass and the prompted one with ``bare``."""
        if self.monitor == "task":
            features, weights, hidden = self.encode(input_ids, attention_mask, token_type_ids, saliency=saliency,
                                                    full=full, prompt=prompt)
            return features, weights, features, hidden
        if self.segments:
            features, weights = self._by_sentence(input_ids, attention_mask, token_type_ids, saliency=saliency,
                                                  full=full)
        else:
            features, weights, _ = self.encode(input_ids, attention_mask, token_type_ids, saliency=saliency,
                                               full=full, bare=True)
        task_features, _, hidden = self.encode(input_ids, attention_mask, token_type_ids, saliency=False, full=full,
                                               prompt=prompt)
        return features, weights, task_features, hidden

    def _by_sentence(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor, *,
                     saliency: bool, full: bool) -> tuple[torch.Tensor, Any]:
        """The bare pass on each sentence of a pair alone (``read_each_sentence``)."""

        def encode(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, Any]:
            features, weights, _ = self.encode(ids, mask, torch.zeros_like(ids), saliency=saliency, full=full,
                                               bare=True)
            return features, weights

        return read_each_sentence(encode, lambda f: self.head.best(f)[0], input_ids, attention_mask, token_type_ids,
                                  saliency=saliency)

    def _logits(self, features: torch.Tensor, hidden: torch.Tensor | None) -> torch.Tensor:
        """The task's logits: float32 [B, C] from the head position, or [B, T, C] for a token task."""
        return _float32(self.tuned.logits(hidden if self.tokens else features))

    def _to_tokens(self, weights: torch.Tensor, inputs: Any) -> torch.Tensor:
        """Attention over keys [B, S] -> over the input's tokens [B, T] (template keys dropped)."""
        if inputs.prefix:
            return _float32(weights[:, inputs.prefix :])
        if inputs.offset:
            return _float32(torch.cat([weights[:, :1], weights[:, 1 + inputs.offset :]], dim=1))
        return _float32(weights)

    def reference(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  token_type_ids: torch.Tensor | None, *, saliency: bool) -> dict[str, torch.Tensor]:
        """The full (unpruned) forward's outputs by name: the parity reference (``features`` and
        ``saliency`` of the pass the monitor reads, ``logits`` of the prompted pass)."""
        features, weights, task_features, hidden = self.monitored(input_ids, attention_mask, token_type_ids,
                                                                  saliency=saliency, full=True)
        return {"features": features, **({"saliency": weights} if weights is not None else {}),
                "logits": self._logits(task_features, hidden)}

    def _outputs(self, input_ids, attention_mask, token_type_ids, threshold):
        features, weights, task_features, hidden = self.monitored(input_ids, attention_mask, token_type_ids,
                                                                  saliency=self.saliency)
        saliency = (weights,) if self.saliency else ()
        return (*self.head(features, threshold), features, *saliency, self._logits(task_features, hidden))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, threshold: torch.Tensor):
        return self._outputs(input_ids, attention_mask, None, threshold)


class SharedTaskGuardModule(TaskGuardModule):
    """``TaskGuardModule`` whose task tensors are graph inputs: one backbone graph, many tasks.

    Extra inputs after ``threshold``: prompt float32 (the task's prompt tensor, ``PromptTuned``
    shape: [L, 2, P, d] or [P, d]), head_weight float32 [C, d] and head_bias float32 [C] (a
    linear head; C may differ between tasks). Every task fed to the graph must share the method,
    prompt length and head position of the task it was traced with; token tasks are refused
    (``lmsan.export.tasks.read_fields``).
    """

    extra_inputs = ("prompt", "head_weight", "head_bias")

    def example_extra(self) -> tuple[torch.Tensor, ...]:
        """The traced task's own tensors, in ``extra_inputs`` order."""
        head = self.tuned.head
        return (self.tuned.prompt.detach().float(), head.weight.detach().float(), head.bias.detach().float())

    def _shared(self, input_ids, attention_mask, token_type_ids, threshold, prompt, head_weight, head_bias):
        # the bare pass needs no task tensor: one trunk for every task's monitor
        features, weights, task_features, _ = self.monitored(input_ids, attention_mask, token_type_ids,
                                                             saliency=self.saliency, prompt=prompt)
        logits = _float32(task_features) @ head_weight.t() + head_bias
        return (*self.head(features, threshold), features, *((weights,) if self.saliency else ()), logits)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, threshold: torch.Tensor,
                prompt: torch.Tensor, head_weight: torch.Tensor, head_bias: torch.Tensor):
        return self._shared(input_ids, attention_mask, None, threshold, prompt, head_weight, head_bias)


class TokenTypeSharedTaskGuardModule(SharedTaskGuardModule):
    """``SharedTaskGuardModule`` for backbones that read ``token_type_ids``."""

    def __init__(self, tuned: Any, signs: np.ndarray, *, saliency: bool = False, prune: bool = True,
                 monitor: str = DEFAULT_MONITOR, segments: bool = False) -> None:
        super().__init__(tuned, signs, use_token_types=True, saliency=saliency, prune=prune, monitor=monitor,
                         segments=segments)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor,
                threshold: torch.Tensor, prompt: torch.Tensor, head_weight: torch.Tensor, head_bias: torch.Tensor):
        return self._shared(input_ids, attention_mask, token_type_ids, threshold, prompt, head_weight, head_bias)


class TokenTypeTaskGuardModule(TaskGuardModule):
    """``TaskGuardModule`` for backbones that read ``token_type_ids`` (BERT-style sentence pairs)."""

    def __init__(self, tuned: Any, signs: np.ndarray, *, saliency: bool = False, prune: bool = True,
                 monitor: str = DEFAULT_MONITOR, segments: bool = False) -> None:
        super().__init__(tuned, signs, use_token_types=True, saliency=saliency, prune=prune, monitor=monitor,
                         segments=segments)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor,
                threshold: torch.Tensor):
        return self._outputs(input_ids, attention_mask, token_type_ids, threshold)
