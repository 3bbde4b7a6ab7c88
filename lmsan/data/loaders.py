"""One loader interface over registry corpora, local files and Hugging Face datasets.

A ``source`` is resolved in this order:

1. ``hf:NAME[:CONFIG][@SPLIT]``: a Hugging Face dataset (needs ``pip install datasets``);
2. a registry name (``oanc``, ``bbcnews``, ``polarity``, ``sms-spam``), fetched on first use;
3. a local ``.txt``/``.csv``/``.tsv``/``.jsonl`` file (write ``./oanc`` for a file called oanc).

No torch, no transformers.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from lmsan.data import corpora, hf
from lmsan.data.clean import clean_sentences
from lmsan.data.fetcher import fetch
from lmsan.data.labelled import LabelledSet, build_labelled
from lmsan.data.local import (
    LABEL_COLUMNS,
    SUFFIXES,
    TEXT_COLUMNS,
    check_suffix,
    column_values,
    pick_column,
    read_table,
    read_text,
)
from lmsan.data.sources import SOURCES, get_source
from lmsan.errors import DataError

logger = logging.getLogger(__name__)

# A pair task's second text, by the first one's column (``text_a`` / ``text_b``: what lmsan-guard reads).
PAIR_COLUMNS = {"sentence1": "sentence2", "text_a": "text_b"}


def _local_path(source: str | os.PathLike) -> Path:
    """Return ``source`` as a path, or raise the unknown-source error for a bare name."""
    path = Path(source)
    text = os.fspath(source)
    if not isinstance(source, str) or path.exists() or path.suffix or os.sep in text or "/" in text:
        return path
    raise DataError(
        f"unknown data source {text!r}: not a registry name ({', '.join(sorted(SOURCES))}), "
        f"not hf:NAME[:CONFIG][@SPLIT], and no such file ({', '.join(SUFFIXES)})"
    )


def _registry_sentences(name: str) -> list[str]:
    path = fetch(name)
    if name == "oanc":
        return corpora.oanc_sentences(path)
    if name == "bbcnews":
        return corpora.bbc_sentences(path)
    if name == "polarity":
        return corpora.polarity_rows(path)[0]
    return corpora.sms_rows(path)[0]


def _local_sentences(path: Path, column: str | None) -> list[str]:
    if not path.exists():
        raise DataError(f"file not found: {path}")
    if not path.is_file():
        raise DataError(f"not a file: {path}")
    if check_suffix(path) == ".txt":
        if column is not None:
            logger.warning("column=%r ignored for plain-text file %s", column, path)
        lines = [line for line in read_text(path).splitlines() if line.strip()]
        if not lines:
            raise DataError(f"{path} is empty (no non-blank lines)")
        return lines
    table = read_table(path)
    name = pick_column(table.columns, column, TEXT_COLUMNS, origin=str(path), role="text", fallback_last=True)
    return column_values(table, name, as_text=True)


def _hf_sentences(spec: hf.HFSpec, column: str | None) -> list[str]:
    dataset = hf.load_hf(spec)
    columns = list(dataset.column_names)
    name = pick_column(columns, column, TEXT_COLUMNS, origin=str(spec), role="text", fallback_last=True)
    values = list(dataset[name])
    if not all(isinstance(v, str) for v in values):
        raise DataError(f"{spec}: column {name!r} does not hold strings; choose another with column=")
    return values


def load_sentences(
    source: str | os.PathLike,
    *,
    limit: int | None = None,
    column: str | None = None,
    min_words: int = 5,
    max_words: int = 40,
) -> list[str]:
    """Load clean sentences from a registry corpus, a local file or a Hugging Face dataset.

    File formats: ``.txt`` one sentence (or paragraph) per line, blank lines skipped;
    ``.csv``/``.tsv`` with a header row and ``.jsonl`` objects, text taken from ``column``, else
    ``text``, else ``sentence``, else the only (or last) column. Registry corpora ignore
    ``column``. Everything passes through ``clean_sentences``.

    Args:
        source: registry name, path, or ``hf:NAME[:CONFIG][@SPLIT]`` (see module docstring).
        limit: keep only the first ``limit`` clean sentences (file order), ``None`` for all.
        column: text column of a table file or dataset.
        min_words: shortest sentence kept, in whitespace-separated words.
        max_words: longest sentence kept.

    Returns:
        Clean, de-duplicated sentences in source order.

    Raises:
        DataError: unknown source, missing/empty/malformed file, missing column, fetch failure,
            or nothing left after cleaning.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise DataError(f"limit must be a non-negative int or None, got {limit!r}")
    origin = os.fspath(source)
    if isinstance(source, str) and hf.is_hf(source):
        raw = _hf_sentences(hf.parse_hf(source), column)
    elif isinstance(source, str) and source in SOURCES:
        if column is not None:
            logger.warning("column=%r ignored for registry source %r", column, source)
        raw = _registry_sentences(source)
    else:
        raw = _local_sentences(_local_path(source), column)
    sentences = clean_sentences(raw, min_words=min_words, max_words=max_words)
    if not sentences:
        raise DataError(
            f"{origin}: no sentences of {min_words}-{max_words} words left after cleaning {len(raw)} text(s)"
        )
    logger.debug("%s: %d raw text(s) -> %d clean sentence(s)", origin, len(raw), len(sentences))
    return sentences if limit is None else sentences[:limit]


def _registry_labelled(name: str, *, dedup: bool) -> LabelledSet:
    source = get_source(name)
    if not source.labelled:
        labelled = ", ".join(sorted(n for n, s in SOURCES.items() if s.labelled))
        raise DataError(f"registry source {name!r} has no labels; labelled sources: {labelled}")
    path = fetch(name)
    if name == "bbcnews":
        texts, labels = corpora.bbc_rows(path)
        return build_labelled(texts, labels, source=name, dedup=dedup)
    if name == "polarity":
        texts, labels = corpora.polarity_rows(path)
        return build_labelled(texts, labels, source=name, rename=corpora.POLARITY_NAMES, dedup=dedup)
    texts, labels = corpora.sms_rows(path)
    return build_labelled(texts, labels, source=name, dedup=dedup)


@dataclass(frozen=True)
class _Columns:
    """The text, label and optional pair column chosen for a labelled table."""

    text: str
    label: str
    pair: str | None


def _label_columns(columns: Sequence[str], origin: str, options: dict[str, str | None]) -> _Columns:
    def pick(wanted: str | None, defaults: Sequence[str], role: str) -> str:
        return pick_column(columns, wanted, defaults, origin=origin, role=role, fallback_last=False)

    text = pick(options["text_column"], TEXT_COLUMNS, "text")
    label = pick(options["label_column"], LABEL_COLUMNS, "label")
    if options["pair_column"] is not None:
        pair: str | None = pick(options["pair_column"], (), "text pair")
    else:
        second = PAIR_COLUMNS.get(text)
        pair = second if second in columns else None
    return _Columns(text=text, label=label, pair=pair)


def _hf_labelled(spec: hf.HFSpec, options: dict[str, str | None], *, dedup: bool) -> LabelledSet:
    dataset = hf.load_hf(spec)
    cols = _label_columns(list(dataset.column_names), str(spec), options)
    names = hf.class_names(dataset, cols.label)
    labels = list(dataset[cols.label])
    if names is not None:  # ClassLabel ints -> names; anything else (e.g. -1) is reported as unknown
        labels = [names[y] if isinstance(y, int) and 0 <= y < len(names) else y for y in labels]
    pairs = None if cols.pair is None else list(dataset[cols.pair])
    return build_labelled(
        list(dataset[cols.text]), labels, source=str(spec), text_pairs=pairs, label_names=names, dedup=dedup
    )


def _file_labelled(path: Path, options: dict[str, str | None], *, dedup: bool) -> LabelledSet:
    if not path.exists():
        raise DataError(f"file not found: {path}")
    if not path.is_file():
        raise DataError(f"not a file: {path}")
    if check_suffix(path) == ".txt":
        raise DataError(f"{path}: a .txt file has no labels; use .csv, .tsv or .jsonl with a label column")
    table = read_table(path)
    cols = _label_columns(table.columns, str(path), options)
    pairs = None if cols.pair is None else column_values(table, cols.pair, as_text=True)
    return build_labelled(
        column_values(table, cols.text, as_text=True),
        column_values(table, cols.label, as_text=False),
        source=str(path),
        text_pairs=pairs,
        dedup=dedup,
    )


def load_labelled(
    source: str | os.PathLike,
    *,
    text_column: str | None = None,
    label_column: str | None = None,
    pair_column: str | None = None,
    dedup: bool = True,
) -> LabelledSet:
    """Load a classification set from a registry corpus, a table file or a HF dataset.

    Registry sets: ``bbcnews`` (5 topics; text = title + lead sentences, <= 100 words, see
    ``corpora.bbc_text``), ``polarity`` (negative/positive), ``sms-spam`` (ham/spam). Table
    files (``.csv``/``.tsv`` with header, ``.jsonl``) need a text column (``text_column``, else
    ``text``, ``sentence``, ``sentence1`` or ``text_a``) and a label column (``label_column``,
    else ``label``, ``labels``, ``class`` or ``category``); ``sentence2`` is the pair column when
    the text column is ``sentence1``, ``text_b`` when it is ``text_a``. Labels become ``0..C-1``
    in numeric or alphabetical order of the raw values, or in ClassLabel order for HF datasets.

    Args:
        source: registry name, path, or ``hf:NAME[:CONFIG][@SPLIT]``.
        text_column: column holding the text.
        label_column: column holding the label.
        pair_column: column holding the second text of a pair task.
        dedup: drop repeated (text, pair) rows, keeping the first.

    Raises:
        DataError: unknown or unlabelled source, missing file/column, malformed rows, fewer
            than 2 classes, or nothing left.
    """
    options = {"text_column": text_column, "label_column": label_column, "pair_column": pair_column}
    if isinstance(source, str) and hf.is_hf(source):
        return _hf_labelled(hf.parse_hf(source), options, dedup=dedup)
    if isinstance(source, str) and source in SOURCES:
        if any(v is not None for v in options.values()):
            logger.warning("column options ignored for registry source %r", source)
        return _registry_labelled(source, dedup=dedup)
    return _file_labelled(_local_path(source), options, dedup=dedup)
