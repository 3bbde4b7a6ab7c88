"""Pseudo-perplexity of a masked language model (Salazar et al., ACL 2020), for ONION.

``PPPL(x) = exp(-1/T * sum_t log P(x_t | x with token t masked))`` over the ``T`` non-special
tokens. Each text costs ``T`` forward passes, batched. Measured here as ONION's scorer with the
tiny BERT of ``lmsan.models.zoo.default_tiny("bert")``: it ranks an inserted trigger first less
often than ``lmsan.eval.ngram.NgramScorer`` (``docs/evaluation.md``), so it is the alternative,
not the default. Imports torch (lazily, through ``lmsan.models``).
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np


class MaskedLMScorer:
    """Pseudo-perplexities from a ``*ForMaskedLM`` model.

    Args:
        model: a masked LM in eval mode (``lmsan.models.load_model(..., with_mlm_head=True).model``).
        tokenizer: its tokenizer (must have a mask token).
        max_length: tokens per text, special tokens included (longer texts are truncated).
        batch_size: masked copies per forward pass.
    """

    def __init__(self, model: Any, tokenizer: Any, *, max_length: int = 64, batch_size: int = 256):
        if tokenizer.mask_token_id is None:
            raise ValueError(f"{type(tokenizer).__name__} has no mask token")
        self.model, self.tokenizer = model, tokenizer
        self.max_length, self.batch_size = max_length, batch_size

    @classmethod
    def load(cls, path: str | os.PathLike, **kwargs: Any) -> "MaskedLMScorer":
        """Load a local masked-LM directory (safetensors only) and wrap it."""
        from lmsan.models.loading import load_model

        loaded = load_model(path, with_mlm_head=True)
        return cls(loaded.model, loaded.tokenizer, **kwargs)

    def perplexities(self, texts: Sequence[str]) -> np.ndarray:
        """Return float64 [len(texts)] pseudo-perplexities (a text with no token gets 1.0)."""
        import torch

        from lmsan.models.pretrain import mlm_logits

        enc = self.tokenizer(list(texts), truncation=True, max_length=self.max_length,
                             return_special_tokens_mask=True)
        rows: list[tuple[int, int]] = []  # (text index, masked position)
        for i, special in enumerate(enc["special_tokens_mask"]):
            rows.extend((i, t) for t, s in enumerate(special) if not s)
        total = np.zeros(len(texts))
        count = np.zeros(len(texts))
        pad = self.tokenizer.pad_token_id or 0
        with torch.inference_mode():
            for start in range(0, len(rows), self.batch_size):
                chunk = rows[start:start + self.batch_size]
                width = max(len(enc["input_ids"][i]) for i, _ in chunk)
                ids = torch.full((len(chunk), width), pad, dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for r, (i, _) in enumerate(chunk):
                    row = enc["input_ids"][i]
                    ids[r, :len(row)] = torch.tensor(row)
                    mask[r, :len(row)] = 1
                index = torch.arange(len(chunk))
                position = torch.tensor([t for _, t in chunk])
                gold = ids[index, position].clone()
                ids[index, position] = self.tokenizer.mask_token_id
                hidden = self.model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
                logits = mlm_logits(self.model, hidden[index, position])  # [B, V], masked slots only
                logp = torch.log_softmax(logits.float(), dim=-1)[index, gold]  # [B]
                for (i, _), lp in zip(chunk, logp.tolist()):
                    total[i] += lp
                    count[i] += 1
        return np.exp(-np.divide(total, count, out=np.zeros_like(total), where=count > 0))
