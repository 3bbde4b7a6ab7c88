"""Known triggers: the token spans the miner confirmed for the guard's PVs. Stdlib only.

The miner records, for each PV it could reproduce with real text, the trigger it inserted
(``lmsan.pvset.KnownTrigger``: token ids that, inserted once, move at least the confirmation
share of sentences onto that PV). ``lmsan-export`` writes them into ``guard.json``
(``known_triggers``). The feature monitor can miss such a trigger where the input dilutes its
effect (a long news text on a small backbone: the match lands just under ``T_match``) or remove
the wrong word; the trigger's token span itself is unambiguous. So the guard also looks for
every known span in the token ids it already computed and, where one occurs, removes the words
under it (``lmsan.runtime.removal.drop_spans``) and scans what is left (``Guard.scan_batch``).

Matching is on token ids, exactly as the model reads them: ``q`` (a word-start piece) occurs in
``qt`` and ``Qantas`` but not in ``Iraq`` (whose ``##q`` is another id). Special tokens never
match (a span holds none).

The miner inserts a trigger after a space. A byte-level BPE tokenizer spells the same word
otherwise at the start of a text, after punctuation or after a newline (``cf`` against ``Ġcf``,
or several pieces), and a backdoor trained with triggers at random positions may fire there too.
``with_spellings`` adds each trigger's other spelling as a span of its own that counts only where
it covers whole words: the same ids inside a longer word (``pdcf``) are no trigger.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence

from lmsan.runtime.removal import drop_spans


@dataclass(frozen=True)
class KnownSpan:
    """One known trigger of a guard (``guard.json`` ``known_triggers``).

    Attributes:
        pv: index of the PV the trigger produces, in [0, K).
        text: the trigger decoded (for reports).
        token_ids: its token ids in the guard's tokenizer, at least one.
        whole_word: an added spelling (``with_spellings``): it counts only where its characters
            have no letter or digit right before or after them.
    """

    pv: int
    text: str
    token_ids: tuple[int, ...]
    whole_word: bool = False


@dataclass(frozen=True)
class Stripped:
    """One input's texts (a text, or the two of a pair) after removing their known triggers.

    Attributes:
        texts: the texts without the words under each occurrence, until none is left.
        removed: the removed runs of words, each joined by one space, in order.
        found: the known spans that occurred, distinct, in order of first occurrence.
        stuck: an occurrence lies inside a word that must stay (it holds the mask token), so it
            could not be removed.
    """

    texts: tuple[str, ...]
    removed: tuple[str, ...]
    found: tuple[KnownSpan, ...]
    stuck: bool = False


class KnownTriggers:
    """Finds a guard's known trigger spans in token ids."""

    def __init__(self, spans: Iterable[KnownSpan]) -> None:
        self.spans = tuple(spans)
        self._by_first: dict[int, list[KnownSpan]] = {}
        for span in self.spans:
            self._by_first.setdefault(span.token_ids[0], []).append(span)

    def __bool__(self) -> bool:
        return bool(self.spans)

    def _matches(self, ids: Sequence[int]) -> Iterator[tuple[KnownSpan, int, int]]:
        for start, token in enumerate(ids):
            for span in self._by_first.get(token, ()):
                end = start + len(span.token_ids)
                if tuple(ids[start:end]) == span.token_ids:
                    yield span, start, end

    def occurrences(self, ids: Sequence[int], text: str | None = None,
                    offsets: Sequence[tuple[int, int]] | None = None) -> list[tuple[KnownSpan, int, int]]:
        """Every occurrence of a known span in ``ids``: (span, first token, end token), left to
        right; occurrences may overlap. Given the ``text`` the ids were made from and their
        character ``offsets``, a ``whole_word`` span counts only where it covers whole words;
        without them every span counts (a superset)."""
        found = self._matches(ids)
        if text is None or offsets is None:
            return list(found)
        return [(span, a, b) for span, a, b in found
                if not span.whole_word or _whole_words(text, offsets[a][0], offsets[b - 1][1])]

    def first(self, ids: Sequence[int]) -> KnownSpan | None:
        """The first known span occurring in ``ids``, or None (the detection pass's check: it
        stops at the first, and it sees no characters, so an added spelling inside a longer word
        passes it too; ``found_in`` and ``strip`` decide)."""
        return next((span for span, _, _ in self._matches(ids)), None)

    def found_in(self, texts: tuple[str, ...], encode: Callable[[list[str]], list]) -> tuple[KnownSpan, ...]:
        """The known spans that ``texts`` hold (each text tokenized on its own by ``encode``,
        ``Encoder.alone``), distinct, in order of first occurrence; nothing is removed."""
        found = (span for text, encoding in zip(texts, encode(list(texts)))
                 for span, _, _ in self.occurrences(encoding.ids, text, encoding.offsets))
        return tuple(dict.fromkeys(found))

    def strip(self, texts: tuple[str, ...], encode: Callable[[list[str]], list],
              protect: str | None = None) -> Stripped:
        """``texts`` without the words under every known span, round after round until none is
        left (removing a word can join two pieces of a span: ``cf cf mn mn`` for ``cf mn``).

        Args:
            texts: one text, or the two of a pair (each matched on its own).
            encode: tokenizes texts on their own, without special tokens, with character offsets
                (``Encoder.alone``).
            protect: a word holding it (the mask token) stays; an occurrence inside such a word
                makes the result ``stuck``.
        """
        removed: list[str] = []
        found: dict[KnownSpan, None] = {}
        while True:
            spans_per_text = []
            for text, encoding in zip(texts, encode(list(texts))):
                occurrences = self.occurrences(encoding.ids, text, encoding.offsets)
                found.update((span, None) for span, _, _ in occurrences)
                spans_per_text.append([(encoding.offsets[a][0], encoding.offsets[b - 1][1]) for _, a, b in occurrences])
            if not any(spans_per_text):
                return Stripped(texts, tuple(removed), tuple(found))
            cut = [drop_spans(text, spans, protect) for text, spans in zip(texts, spans_per_text)]
            if all(not words for _, words in cut):  # every occurrence lies inside a protected word
                return Stripped(texts, tuple(removed), tuple(found), stuck=True)
            texts = tuple(text for text, _ in cut)
            removed += [word for _, words in cut for word in words]


SPELLING_CONTEXTS = ("", " ", "\n", "(")  # a text's start, mid-sentence, after a newline or punctuation


def with_spellings(spans: Iterable[KnownSpan], encode: Callable[[list[str]], list],
                   special_ids: frozenset[int] = frozenset()) -> tuple[KnownSpan, ...]:
    """``spans``, then their other spellings as ``whole_word`` spans: the ids ``encode``
    (``Encoder.alone``: no special tokens added) gives each text after every one of
    ``SPELLING_CONTEXTS``, where they differ from every span kept so far and hold none of
    ``special_ids`` (an unknown-token id). A WordPiece tokenizer spells a word alike everywhere
    (nothing is added); a byte-level BPE one spells it without the leading-space mark at a text's
    start (unless it adds a prefix space), after a newline and after punctuation."""
    kept = list(spans)
    seen = {(span.pv, span.token_ids) for span in kept}
    for span in list(kept):
        encodings = encode([context + span.text for context in SPELLING_CONTEXTS])
        for context, encoding in zip(SPELLING_CONTEXTS, encodings):
            ids = _spelled_after(context, encoding)
            if ids and (span.pv, ids) not in seen and not special_ids.intersection(ids):
                seen.add((span.pv, ids))
                kept.append(KnownSpan(span.pv, span.text, ids, whole_word=True))
    return tuple(kept)


def _spelled_after(context: str, encoding: Any) -> tuple[int, ...] | None:
    """The ids of the text that follows ``context`` in ``encoding`` (of ``context + text``), or
    None where one token joins a visible character of the context to the text."""
    ids = []
    for token, (start, end) in zip(encoding.ids, encoding.offsets):
        if end <= len(context):
            continue  # the context's own tokens
        if start < len(context) and context[start:].strip():
            return None
        ids.append(token)
    return tuple(ids)


def names(spans: Iterable[KnownSpan]) -> tuple[str, ...]:
    """The distinct texts of ``spans``, in order (two spellings of one trigger name it once)."""
    return tuple(dict.fromkeys(span.text for span in spans))


def _whole_words(text: str, start: int, end: int) -> bool:
    """Whether ``text[start:end]`` has no letter or digit right before or after it."""
    return (start == 0 or not text[start - 1].isalnum()) and (end >= len(text) or not text[end].isalnum())
