"""Parsers for the registry corpora, from their fetched files to raw sentences or rows.

Each parser knows its source's format (see ``lmsan.data.sources``) and returns raw strings;
``lmsan.data.loaders`` applies ``clean_sentences``/``build_labelled``. Stdlib only.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from lmsan.data.clean import looks_like_prose, normalize_text, split_sentences, word_count
from lmsan.data.detok import detokenize, join_fragments, split_tagged
from lmsan.data.local import read_text
from lmsan.errors import DataError

POLARITY_NAMES = {"-1": "negative", "1": "positive"}
# bbcnews classification text: the title plus leading body sentences up to this many words.
BBC_TEXT_WORDS = 100


def oanc_sentences(path: Path) -> list[str]:
    """Return the OANC sentences: tags stripped, tagger fragments re-joined, detokenised.

    Only sentences that ``looks_like_prose`` are kept: the 20,000 lines give about 16.7k
    sentences, 11.4k of which survive this filter and ``clean_sentences`` (headlines, bylines,
    list items and quotes cut by the tagger go).

    Args:
        path: the fetched ``tagged-en-oanc.txt`` (one ``word/TAG ...`` sentence per line).
    """
    lines = read_text(path).splitlines()
    sentences = (detokenize(tokens) for tokens in join_fragments(split_tagged(line) for line in lines))
    return [s for s in sentences if looks_like_prose(s)]


def polarity_rows(path: Path) -> tuple[list[str], list[str]]:
    """Return ``(texts, labels)`` of the Pang & Lee sentences; labels are ``"-1"``/``"1"``.

    The file is CSV with a BOM, rows ``"label","text"`` and no header; the texts are
    lower-cased and tokenised (``the film , however , ...``), so they are detokenised here.

    Raises:
        DataError: a row without two fields (with its line number).
    """
    texts, labels = [], []
    reader = csv.reader(io.StringIO(read_text(path), newline=""), strict=True)
    try:
        for row in reader:
            if not row:
                continue
            if len(row) != 2:
                got = len(row)
                raise DataError(f"{path}, line {reader.line_num}: expected 2 fields (label, text), got {got}")
            labels.append(row[0].strip())
            texts.append(detokenize(row[1].split()))
    except csv.Error as exc:
        raise DataError(f"{path}, line {reader.line_num}: malformed CSV: {exc}") from exc
    return texts, labels


def sms_rows(path: Path) -> tuple[list[str], list[str]]:
    """Return ``(texts, labels)`` of the SMS spam collection; labels are ``ham``/``spam``.

    Despite its ``.csv`` name the file is ``label<TAB>text`` per line, without quoting.

    Raises:
        DataError: a non-blank line without a tab (with its line number).
    """
    texts, labels = [], []
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        label, tab, text = line.partition("\t")
        if not tab:
            raise DataError(f"{path}, line {number}: expected 'label<TAB>text'")
        labels.append(label.strip())
        texts.append(text)
    return texts, labels


@dataclass(frozen=True)
class Article:
    """One BBC News article: ``topic`` (folder name), ``title`` (first line) and ``body``."""

    topic: str
    title: str
    body: str


def bbc_articles(root: Path) -> list[Article]:
    """Read every ``<topic>/*.txt`` article below ``root``, sorted by topic then file name.

    Files are UTF-8 except a few in latin-1 (``£`` as byte 0xa3); latin-1 is the fallback.

    Raises:
        DataError: no articles found under ``root``.
    """
    articles = []
    for path in sorted(root.glob("*/*.txt")):
        title, _, body = read_text(path, fallback="latin-1").strip().partition("\n")
        articles.append(Article(topic=path.parent.name, title=title.strip(), body=body.strip()))
    if not articles:
        raise DataError(f"no bbcnews articles (<topic>/*.txt) under {root}")
    return articles


def bbc_sentences(root: Path) -> list[str]:
    """Return the sentences of every article body (titles excluded), prose-like ones only."""
    sentences = []
    for article in bbc_articles(root):
        sentences.extend(s for s in split_sentences(article.body) if looks_like_prose(s))
    return sentences


def bbc_text(article: Article, *, max_words: int = BBC_TEXT_WORDS) -> str:
    """Return the classification text: ``"<title>. <lead sentences>"``, at most ``max_words``.

    Whole body sentences are added while the total stays within ``max_words`` (the first one is
    always added, so a text may exceed it when the opening sentence is very long).
    """
    text = normalize_text(article.title).rstrip(".") + "."
    for i, sentence in enumerate(split_sentences(article.body)):
        if i and word_count(text) + word_count(sentence) > max_words:
            break
        text = f"{text} {sentence}"
    return text


def bbc_rows(root: Path) -> tuple[list[str], list[str]]:
    """Return ``(texts, topics)`` for the 5-class topic task (see ``bbc_text``)."""
    articles = bbc_articles(root)
    return [bbc_text(a) for a in articles], [a.topic for a in articles]
