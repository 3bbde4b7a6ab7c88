"""Soft prompts: the tokenised defense corpus, prompt initialisation and vectorised insertion.

The prompt's ``l_sp`` vectors live in the word-embedding space (``d_emb``) and are spliced into
``inputs_embeds`` after a random word boundary of each sentence (method.md §1). Position and
token-type embeddings are added by the model as usual. torch only; never imports lmsan.attacks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from lmsan.errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Corpus:
    """The defense sentences, tokenised once.

    Attributes:
        input_ids: int64 [N, T], right-padded to the longest sentence.
        attention_mask: int64 [N, T], 1 for real tokens.
        lengths: int64 [N], real tokens per row.
        word_starts: numpy int64 [N, P + 1]; ``word_starts[n, p]`` is the token index the prompt
            goes to when inserted after ``p`` words (``P = max_insert_pos``), valid for
            ``p <= n_slots[n]``. Host-side bookkeeping, like ``n_slots``.
        n_slots: numpy int64 [N], ``min(P, n_words)``, at least 1.
        target_pos: int64 [N], target position without the prompt.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    lengths: torch.Tensor
    word_starts: np.ndarray
    n_slots: np.ndarray
    target_pos: torch.Tensor

    @property
    def size(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def device(self) -> torch.device:
        return self.input_ids.device

    def to(self, device: str | torch.device) -> "Corpus":
        """Return the corpus with its tensors on ``device``."""
        return Corpus(self.input_ids.to(device), self.attention_mask.to(device), self.lengths.to(device),
                      self.word_starts, self.n_slots, self.target_pos.to(device))

    def rows(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (input_ids, attention_mask) of ``index`` [R], trimmed to their longest row."""
        width = int(self.lengths[index].max())
        return self.input_ids[index, :width], self.attention_mask[index, :width]


def place_mask_words(sentences: Sequence[str], mask_token: str, *, max_words: int, seed: int) -> list[str]:
    """Insert ``mask_token`` at a random word boundary within the first ``max_words`` words."""
    rng = np.random.default_rng(seed)
    out = []
    for sentence in sentences:
        words = sentence.split()
        words.insert(int(rng.integers(0, min(len(words), max_words) + 1)), mask_token)
        out.append(" ".join(words))
    return out


def encode_corpus(tokenizer: Any, sentences: Sequence[str], *, target: str, max_length: int,
                  max_insert_pos: int, mask_seed: int = 0) -> Corpus:
    """Tokenise ``sentences`` once and record word boundaries and target positions.

    For ``target = mask`` a mask word is placed in every sentence first; a sentence whose mask is
    truncated away is dropped (with a warning).

    Raises:
        DataError: no sentences, or the tokenizer is not a fast one (no word ids), or ``mask``
            without a mask token.
    """
    from lmsan.models.targets import target_positions

    if not sentences:
        raise DataError("no defense sentences")
    texts = list(sentences)
    if target == "mask":
        if tokenizer.mask_token is None:
            raise DataError("target 'mask' needs a tokenizer with a mask token")
        texts = place_mask_words(texts, tokenizer.mask_token, max_words=max_insert_pos, seed=mask_seed)
    try:
        batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        word_ids = [batch.word_ids(i) for i in range(len(texts))]
    except ValueError as exc:  # slow tokenizers have no word_ids
        raise DataError(f"the miner needs a fast tokenizer with word ids: {exc}") from exc
    ids, mask = batch["input_ids"], batch["attention_mask"]
    keep = torch.ones(len(texts), dtype=torch.bool)
    if target == "mask":
        keep = (ids == tokenizer.mask_token_id).any(dim=1)
        if not bool(keep.all()):
            log.warning("dropped %d sentences whose [MASK] was truncated away", int((~keep).sum()))
    starts = np.zeros((len(texts), max_insert_pos + 1), np.int64)
    slots = np.ones(len(texts), np.int64)
    for row, words in enumerate(word_ids):
        first: dict[int, int] = {}
        last_token = 0
        for position, word in enumerate(words):
            if word is None:
                continue
            first.setdefault(word, position)
            last_token = position
        order = sorted(first.values())  # token index of each word's first token
        n_words = len(order)
        if n_words == 0:  # only special tokens left: insert right after the first token
            starts[row, :] = 1
            continue
        cap = min(max_insert_pos, n_words)
        slots[row] = cap
        for p in range(1, cap + 1):
            starts[row, p] = order[p] if p < n_words else last_token + 1
    index = torch.nonzero(keep).squeeze(1)
    ids, mask = ids[index], mask[index]
    positions = target_positions(ids, mask, target, mask_token_id=tokenizer.mask_token_id)
    kept = index.numpy()
    return Corpus(ids, mask, mask.sum(dim=1), starts[kept], slots[kept], positions)


def draw_insertions(corpus: Corpus, index: np.ndarray, generator: np.random.Generator) -> torch.Tensor:
    """Draw a prompt insertion index per row (word boundary ``p ∈ [1, n_slots]``).

    Args:
        corpus: the tokenised sentences.
        index: int [R], corpus rows (numpy).
        generator: the loop's random generator.

    Returns:
        int64 [R] token indices, on the corpus device.
    """
    index = np.asarray(index)
    p = generator.integers(1, corpus.n_slots[index] + 1)  # high is exclusive: p in [1, n_slots]
    return torch.from_numpy(corpus.word_starts[index, p]).to(corpus.device)


def init_prompt(embedding: torch.Tensor, seed: int, length: int, *, scheme: str = "reference") -> torch.Tensor:
    """Return the initial prompt of fuzz-loop ``seed``: float [l_sp, d_emb] rows of ``W_emb``.

    ``reference``: row ``i`` = ``W_emb[(70·seed + 10·i) mod V]``; ``paper``: ``W_emb[(70·seed + i) mod V]``.
    """
    vocab = embedding.shape[0]
    step = 10 if scheme == "reference" else 1
    rows = (70 * seed + step * torch.arange(length)) % vocab
    return embedding[rows].detach().clone()


def insert_prompt(token_embeds: torch.Tensor, attention_mask: torch.Tensor, prompts: torch.Tensor,
                  insert_at: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Splice one prompt into each row's embedding sequence, without a Python loop over rows.

    Output position ``j`` of row ``n`` takes token ``j`` before ``insert_at[n]``, prompt vector
    ``j − insert_at[n]`` inside ``[insert_at[n], insert_at[n] + l_sp)``, and token ``j − l_sp`` after.

    Input shape: token_embeds float [R, T, d_emb]; attention_mask int [R, T]; prompts float
    [R, l_sp, d_emb] (one per row, may require grad); insert_at int64 [R] in ``[0, T]``.

    Output shape: (embeds float [R, T + l_sp, d_emb], attention_mask int [R, T + l_sp]).
    """
    rows, length, width = token_embeds.shape
    prompt_len = prompts.shape[1]
    j = torch.arange(length + prompt_len, device=token_embeds.device).unsqueeze(0)  # [1, T + l]
    rel = j - insert_at.unsqueeze(1)  # [R, T + l]
    in_prompt = (rel >= 0) & (rel < prompt_len)
    source = torch.where(rel < 0, j, j - prompt_len).clamp_(0, length - 1)  # token index, [R, T + l]
    tokens = token_embeds.gather(1, source.unsqueeze(-1).expand(-1, -1, width))  # [R, T + l, d_emb]
    spliced = prompts.gather(1, rel.clamp(0, prompt_len - 1).unsqueeze(-1).expand(-1, -1, width))
    embeds = torch.where(in_prompt.unsqueeze(-1), spliced, tokens)
    mask = torch.where(in_prompt, torch.ones_like(source), attention_mask.gather(1, source))
    return embeds, mask


def shifted_targets(target_pos: torch.Tensor, insert_at: torch.Tensor, prompt_len: int) -> torch.Tensor:
    """Target positions after insertion: those at or after the insertion point move by ``l_sp``."""
    return target_pos + prompt_len * (target_pos >= insert_at).long()


__all__ = ["Corpus", "draw_insertions", "encode_corpus", "init_prompt", "insert_prompt", "place_mask_words",
           "shifted_targets"]
