"""Text normalisation, a small regex sentence splitter, and the clean-sentence filter.

Pure functions on ``str``; stdlib only (no torch, no transformers).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Iterable

from lmsan.errors import DataError

# Words that end in "." without ending a sentence. Compared case-insensitively, without the dot.
ABBREVIATIONS = frozenset(
    """
    mr mrs ms dr prof sr jr st mt ft vs etc al cf approx dept est fig inc ltd co corp bros gen gov
    sen rep rev lt col capt sgt cmdr adm maj pres supt hon messrs mme mlle no nos vol pp op ed eds
    jan feb mar apr jun jul aug sep sept oct nov dec mon tue wed thu fri sat sun ave blvd rd
    """.split()
)

_SURROGATES = re.compile("[\ud800-\udfff]")
_SPACES = re.compile(r"\s+")
_PARAGRAPHS = re.compile(r"\n\s*\n")
# A candidate boundary: terminal punctuation, optional closing quotes/brackets, then whitespace.
_BOUNDARY = re.compile(r"[.!?]+[\"'\u201d\u2019)\]]*\s+")
_DOTTED_ACRONYM = re.compile(r"(?:[A-Za-z]\.){2,}$")
_SENTENCE_START = re.compile(r"[\"'\u201c\u2018(\[]*[A-Z0-9]")


def normalize_text(text: str) -> str:
    """Normalise one string: drop lone surrogates, NFC, drop control/format chars, one space.

    Control (Cc) and format (Cf: zero-width spaces, BOM, soft hyphen) characters are removed;
    tabs and newlines count as whitespace, and every whitespace run becomes one space.

    Args:
        text: any string, possibly with lone surrogates (e.g. from ``surrogateescape``).

    Returns:
        The normalised string, stripped; ``""`` if nothing printable is left.
    """
    text = _SURROGATES.sub("", text)
    text = unicodedata.normalize("NFC", text)
    chars = [
        " " if ch.isspace() else ch
        for ch in text
        if ch.isspace() or unicodedata.category(ch) not in ("Cc", "Cf")
    ]
    return _SPACES.sub(" ", "".join(chars)).strip()


def word_count(text: str) -> int:
    """Return the number of whitespace-separated words."""
    return len(text.split())


def _is_abbreviation(text_before: str) -> bool:
    """Say whether the last word of ``text_before`` (which ends in ".") is an abbreviation."""
    words = text_before.split()
    if not words:
        return False
    word = words[-1].lstrip("\"'(\u201c\u2018[")
    if _DOTTED_ACRONYM.search(word):  # U.S., e.g., i.e.
        return True
    stem = word[:-1] if word.endswith(".") else word
    if len(stem) == 1 and stem.isalpha():  # an initial: J. R. R. Tolkien
        return True
    return stem.lower() in ABBREVIATIONS


def _split_block(block: str) -> list[str]:
    sentences, start = [], 0
    for match in _BOUNDARY.finditer(block):
        end = match.end()
        if not _SENTENCE_START.match(block, end):
            continue  # next word is lower case (or nothing follows): not a boundary
        terminal = match.group().rstrip()
        if terminal.rstrip("\"'\u201d\u2019)]") == "." and _is_abbreviation(block[start : match.start() + 1]):
            continue
        sentences.append(block[start:end].strip())
        start = end
    sentences.append(block[start:].strip())
    return [s for s in sentences if s]


def split_sentences(text: str) -> list[str]:
    """Split running text into sentences with a regex, keeping abbreviations intact.

    Blank lines always end a sentence. Otherwise a sentence ends at ``.``, ``!`` or ``?`` (plus
    closing quotes/brackets) followed by whitespace and a capital, digit or opening quote, unless
    the word before a single ``.`` is a known abbreviation (``Mr.``, ``Jan.``), an initial
    (``J.``) or a dotted acronym (``U.S.``). Consequently an acronym that really ends a sentence
    does not split it; that trade-off keeps "the U.S. Senate" whole.

    Args:
        text: a paragraph or document; single newlines count as spaces.

    Returns:
        Sentences in order, whitespace-collapsed, none empty.
    """
    sentences: list[str] = []
    for block in _PARAGRAPHS.split(text):
        block = _SPACES.sub(" ", block).strip()
        if block:
            sentences.extend(_split_block(block))
    return sentences


_PROSE_START = re.compile(r"[\"'(\u201c\u2018]?[A-Z0-9]")
_PROSE_END = re.compile(r"[.!?][\"'\u201d\u2019)\]]?$")


def looks_like_prose(sentence: str) -> bool:
    """Say whether a sentence looks like edited prose (used to filter web-derived corpora).

    True when it starts with a capital or digit (after an optional opening quote or
    bracket), ends with ``.``, ``!`` or ``?`` (plus an optional closing quote or bracket), and
    its straight double quotes, parentheses and square brackets are balanced. Headlines,
    list items and fragments cut at a tagger's sentence break fail.
    """
    return bool(
        _PROSE_START.match(sentence)
        and _PROSE_END.search(sentence)
        and sentence.count('"') % 2 == 0
        and sentence.count("(") == sentence.count(")")
        and sentence.count("[") == sentence.count("]")
    )


def dedup_key(text: str) -> str:
    """Return the key two strings share when they differ only in case or spacing."""
    return " ".join(text.casefold().split())


def _candidates(raw: str, max_words: int) -> list[str]:
    """Normalise ``raw`` paragraph by paragraph, splitting paragraphs over ``max_words`` words."""
    parts = []
    for paragraph in _PARAGRAPHS.split(raw):
        text = normalize_text(paragraph)
        parts.extend(split_sentences(text) if word_count(text) > max_words else [text])
    return parts


def clean_sentences(texts: Iterable[str], *, min_words: int = 5, max_words: int = 40) -> list[str]:
    """Normalise, split, length-filter and de-duplicate texts into clean sentences.

    Each text is cut at blank lines into paragraphs and normalised (``normalize_text``); a
    paragraph longer than ``max_words`` words is then split with ``split_sentences``.
    Sentences with ``min_words`` to ``max_words`` words (both
    inclusive) are kept; later case- or space-variants of a kept sentence are dropped, so the
    first-seen order is preserved.

    Args:
        texts: raw strings (sentences or paragraphs).
        min_words: fewest whitespace-separated words a sentence may have.
        max_words: most words a sentence may have.

    Returns:
        Clean sentences, possibly empty (callers decide whether that is an error).

    Raises:
        DataError: if ``min_words < 1`` or ``max_words < min_words``.
    """
    if min_words < 1 or max_words < min_words:
        raise DataError(f"need 1 <= min_words <= max_words, got min_words={min_words}, max_words={max_words}")
    kept: list[str] = []
    seen: set[str] = set()
    for raw in texts:
        for sentence in _candidates(raw, max_words):
            if not min_words <= word_count(sentence) <= max_words:
                continue
            key = dedup_key(sentence)
            if key not in seen:
                seen.add(key)
                kept.append(sentence)
    return kept
