"""``LabelledSet``: texts with integer class labels, and how raw rows become one.

Stdlib only (no torch, no transformers).
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from lmsan.data.clean import dedup_key, normalize_text
from lmsan.data.splits import check_sizes
from lmsan.errors import DataError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelledSet:
    """A classification set: ``N`` texts (optionally text pairs) with labels in ``[0, C)``.

    Attributes:
        texts: ``N`` normalised texts (first segment of a pair).
        labels: ``N`` ints in ``[0, C)``, index into ``label_names``.
        label_names: ``C`` class names, e.g. ``("ham", "spam")``.
        source: where the set came from (registry name, path or ``hf:`` spec).
        text_pairs: ``N`` second segments for pair tasks (NLI, paraphrase), else ``None``.
    """

    texts: tuple[str, ...]
    labels: tuple[int, ...]
    label_names: tuple[str, ...]
    source: str
    text_pairs: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        n = len(self.texts)
        if len(self.labels) != n:
            raise DataError(f"{self.source}: {n} texts but {len(self.labels)} labels")
        if self.text_pairs is not None and len(self.text_pairs) != n:
            raise DataError(f"{self.source}: {n} texts but {len(self.text_pairs)} text pairs")
        bad = [y for y in self.labels if not 0 <= y < len(self.label_names)]
        if bad:
            raise DataError(f"{self.source}: label {bad[0]} outside [0, {len(self.label_names)})")

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def num_labels(self) -> int:
        """Number of classes ``C``."""
        return len(self.label_names)

    def counts(self) -> dict[str, int]:
        """Return ``{label name: number of examples}``, in label order."""
        totals = {name: 0 for name in self.label_names}
        for y in self.labels:
            totals[self.label_names[y]] += 1
        return totals

    def select(self, indices: Sequence[int]) -> LabelledSet:
        """Return the examples at ``indices`` (in that order), keeping all label names."""
        pairs = None if self.text_pairs is None else tuple(self.text_pairs[i] for i in indices)
        return LabelledSet(
            texts=tuple(self.texts[i] for i in indices),
            labels=tuple(self.labels[i] for i in indices),
            label_names=self.label_names,
            source=self.source,
            text_pairs=pairs,
        )

    def split(self, *, sizes: Mapping[str, int], seed: int) -> dict[str, LabelledSet]:
        """Shuffle with ``seed`` and cut disjoint named subsets (e.g. ``train``/``test``).

        Same seeded shuffle as ``disjoint_splits``; subsets are not stratified.

        Raises:
            DataError: if the sizes add up to more than ``len(self)``.
        """
        check_sizes(sizes, len(self), what=f"examples in {self.source}")
        order = list(range(len(self)))
        random.Random(seed).shuffle(order)
        out, start = {}, 0
        for name, size in sizes.items():
            out[name] = self.select(order[start : start + size])
            start += size
        return out


def _sort_key(value: str) -> tuple[int, float | str]:
    try:
        return (0, float(value))
    except ValueError:
        return (1, value)


def build_labelled(
    texts: Sequence[Any],
    labels: Sequence[Any],
    *,
    source: str,
    text_pairs: Sequence[Any] | None = None,
    label_names: Sequence[str] | None = None,
    rename: Mapping[str, str] | None = None,
    dedup: bool = True,
) -> LabelledSet:
    """Build a ``LabelledSet`` from raw parallel columns.

    Texts are normalised (``normalize_text``); rows whose text becomes empty are dropped. Raw
    labels are compared as strings; a missing or blank one is an error, not a class. Without ``label_names`` the classes are the distinct values,
    sorted numerically when all are numbers (``-1 < 1``), else alphabetically.

    Args:
        texts: ``N`` raw texts.
        labels: ``N`` raw labels (str, int or bool).
        source: name used in messages and stored on the set.
        text_pairs: ``N`` raw second segments, or ``None``.
        label_names: raw label values in class order (e.g. ClassLabel names), or ``None``.
        rename: display names for raw values, e.g. ``{"-1": "negative"}``.
        dedup: drop later rows whose (text, pair) repeats an earlier one up to case/spacing.

    Returns:
        The set, with labels in ``[0, C)``.

    Raises:
        DataError: nothing left, a missing or blank label (its example named, from 1), a label
            outside ``label_names``, or fewer than 2 classes.
    """
    rows: list[tuple[str, str | None, str]] = []
    seen: set[tuple[str, str]] = set()
    for i, (raw_text, raw_label) in enumerate(zip(texts, labels, strict=True)):
        text = normalize_text(str(raw_text)) if raw_text is not None else ""
        pair = None if text_pairs is None else normalize_text(str(text_pairs[i] or ""))
        if not text or pair == "":
            continue
        if raw_label is None or not str(raw_label).strip():
            raise DataError(f"{source}: example {i + 1} has no label")
        key = (dedup_key(text), dedup_key(pair or ""))
        if dedup and key in seen:
            continue
        seen.add(key)
        rows.append((text, pair, str(raw_label)))
    if not rows:
        raise DataError(f"{source}: no labelled examples left after dropping empty texts")
    dropped = len(texts) - len(rows)
    if dropped:
        logger.info("%s: dropped %d empty or duplicate example(s) of %d", source, dropped, len(texts))
    if label_names is not None:
        classes = [str(v) for v in label_names]
    else:
        classes = sorted({r[2] for r in rows}, key=_sort_key)
    index = {value: i for i, value in enumerate(classes)}
    unknown = sorted({r[2] for r in rows} - index.keys())
    if unknown:
        raise DataError(f"{source}: label(s) {unknown[:5]} not among the class names {classes}")
    if len(classes) < 2:
        raise DataError(f"{source}: need at least 2 classes, found {classes}")
    names = tuple((rename or {}).get(value, value) for value in classes)
    return LabelledSet(
        texts=tuple(r[0] for r in rows),
        labels=tuple(index[r[2]] for r in rows),
        label_names=names,
        source=source,
        text_pairs=None if text_pairs is None else tuple(r[1] or "" for r in rows),
    )
