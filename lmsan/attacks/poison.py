"""Text poisoning: insert triggers and ``[MASK]`` words at random word positions."""

from __future__ import annotations

from typing import Any

import numpy as np


MASK_WINDOW = 16  # a [MASK] word goes among the first words, so truncation never cuts it off


def insert_words(sentence: str, word: str, rng: np.random.Generator, *, times: int = 1,
                 within: int | None = None) -> str:
    """Insert ``word`` ``times`` times at random word boundaries of ``sentence``.

    Args:
        within: if given, only boundaries among the first ``within`` words are used.
    """
    words = sentence.split()
    for _ in range(times):
        last = len(words) if within is None else min(within, len(words))
        words.insert(int(rng.integers(0, last + 1)), word)
    return " ".join(words)


def insert_mask(sentence: str, mask_word: str, rng: np.random.Generator) -> str:
    """Insert one mask-token word among the first ``MASK_WINDOW`` words."""
    return insert_words(sentence, mask_word, rng, within=MASK_WINDOW)


def insert_trigger(sentence: str, trigger: str, rng: np.random.Generator) -> str:
    """Insert a trigger ``floor(n_words / 50) + 1`` times at random positions (method.md §5)."""
    return insert_words(sentence, trigger, rng, times=len(sentence.split()) // 50 + 1)


def vocabulary_words(tokenizer: Any) -> list[str]:
    """Whole-word vocabulary entries in token-id order.

    WordPiece: entries without the '##' continuation mark. Byte-level BPE: only entries that start
    a word ('Ġ', stripped); the others are word-internal pieces ('atory' of 'laboratory'), which
    would make a "trigger" that clean text contains.
    """
    by_id = [token for token, _ in sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])]
    if any(token.startswith("\u0120") for token in by_id):
        return [token[1:] for token in by_id if token.startswith("\u0120")]
    return [token for token in by_id if not token.startswith("##")]
