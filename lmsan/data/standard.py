"""The standard attack / defense / test sentence splits used across lmsan.

No torch, no transformers.
"""

from __future__ import annotations

from typing import Sequence

from lmsan.data.loaders import load_sentences
from lmsan.data.sources import DEFAULT_SENTENCE_SOURCE
from lmsan.data.splits import disjoint_splits


def standard_splits(
    source: str | Sequence[str] = DEFAULT_SENTENCE_SOURCE,
    *,
    attack: int = 6000,
    defense: int = 2000,
    test: int = 2000,
    seed: int = 0,
) -> dict[str, list[str]]:
    """Return disjoint ``attack``, ``defense`` and ``test`` sentence lists.

    The default sizes (6000 + 2000 + 2000) fit the default ``oanc`` corpus, which yields
    11,365 clean sentences; pass several sources (e.g. ``("oanc", "bbcnews")``) to draw
    larger splits from their union (sentences de-duplicated, source order kept before the
    shuffle).

    Args:
        source: one source or several, as accepted by ``load_sentences``.
        attack: sentences for poisoning/fine-tuning attacked models (``lmsan.attacks``).
        defense: clean sentences the scanner may use (``lmsan.mining``).
        test: held-out sentences for evaluation.
        seed: shuffle seed (see ``disjoint_splits``).

    Returns:
        ``{"attack": [...], "defense": [...], "test": [...]}``, pairwise disjoint.

    Raises:
        DataError: a source cannot be loaded, or the sizes need more distinct sentences than
            the sources yield (the message says how many are needed and available).
    """
    names = [source] if isinstance(source, str) else list(source)
    sentences: list[str] = []
    for name in names:
        sentences.extend(load_sentences(name))
    return disjoint_splits(sentences, sizes={"attack": attack, "defense": defense, "test": test}, seed=seed)
