"""Seeded, disjoint, named splits of a sentence list. Stdlib only (no torch, no transformers)."""

from __future__ import annotations

import random
from typing import Mapping, Sequence

from lmsan.errors import DataError


def check_sizes(sizes: Mapping[str, int], available: int, *, what: str) -> int:
    """Validate split sizes against what is available and return their total.

    Args:
        sizes: ``{split name: count}``; counts are non-negative ints.
        available: how many items can be handed out.
        what: noun phrase for the message, e.g. ``"distinct sentences in oanc"``.

    Raises:
        DataError: a negative or non-int size, no splits, or a total above ``available``
            (the message gives the total needed, each size, and how many are available).
    """
    if not sizes:
        raise DataError("no splits requested: sizes is empty")
    for name, size in sizes.items():
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise DataError(f"split {name!r} size must be a non-negative int, got {size!r}")
    needed = sum(sizes.values())
    if needed > available:
        detail = ", ".join(f"{name}={size}" for name, size in sizes.items())
        raise DataError(f"need {needed} {what} ({detail}) but only {available} are available")
    return needed


def disjoint_splits(sentences: Sequence[str], *, sizes: Mapping[str, int], seed: int) -> dict[str, list[str]]:
    """Shuffle with ``seed`` and cut disjoint named splits, in the order of ``sizes``.

    Exact duplicates are removed first (first occurrence kept), so no sentence can land in two
    splits. The same input, sizes and seed always give the same splits (``random.Random(seed)``),
    and growing the last split never changes the earlier ones.

    Args:
        sentences: candidate sentences, e.g. from ``load_sentences``.
        sizes: ``{name: count}``, e.g. ``{"attack": 4000, "defense": 2000, "test": 1000}``.
        seed: shuffle seed.

    Returns:
        ``{name: list of count sentences}`` with the keys of ``sizes`` in order.

    Raises:
        DataError: if fewer distinct sentences are available than the sizes add up to.
    """
    pool = list(dict.fromkeys(sentences))
    check_sizes(sizes, len(pool), what="distinct sentences")
    random.Random(seed).shuffle(pool)
    out, start = {}, 0
    for name, size in sizes.items():
        out[name] = pool[start : start + size]
        start += size
    return out
