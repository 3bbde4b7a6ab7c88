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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

from lmsan.runtime.removal import drop_spans


@dataclass(frozen=True)
class KnownSpan:
    """One known trigger of a guard (``guard.json`` ``known_triggers``).

    Attributes:
        pv: index of the PV the trigger produces, in [0, K).
        text: the trigger decoded (for reports).
        token_ids: its token ids in the guard's tokenizer, at least one.
    """

    pv: int
    text: str
    token_ids: tuple[int, ...]


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

    def occurrences(self, ids: Sequence[int]) -> list[tuple[KnownSpan, int, int]]:
        """Every occurrence of a known span in ``ids``: (span, first token, end token), left to
        right; occurrences may overlap."""
        return list(self._matches(ids))

    def first(self, ids: Sequence[int]) -> KnownSpan | None:
        """The first known span occurring in ``ids``, or None (the detection pass's check: it
        stops at the first)."""
        return next((span for span, _, _ in self._matches(ids)), None)

    def found_in(self, texts: tuple[str, ...], encode: Callable[[list[str]], list]) -> tuple[KnownSpan, ...]:
        """The known spans that ``texts`` hold (each text tokenized on its own by ``encode``,
        ``Encoder.alone``), distinct, in order of first occurrence; nothing is removed."""
        found = (span for encoding in encode(list(texts)) for span, _, _ in self._matches(encoding.ids))
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
            for encoding in encode(list(texts)):
                occurrences = self.occurrences(encoding.ids)
                found.update((span, None) for span, _, _ in occurrences)
                spans_per_text.append([(encoding.offsets[a][0], encoding.offsets[b - 1][1]) for _, a, b in occurrences])
            if not any(spans_per_text):
                return Stripped(texts, tuple(removed), tuple(found))
            cut = [drop_spans(text, spans, protect) for text, spans in zip(texts, spans_per_text)]
            if all(not words for _, words in cut):  # every occurrence lies inside a protected word
                return Stripped(texts, tuple(removed), tuple(found), stuck=True)
            texts = tuple(text for text, _ in cut)
            removed += [word for _, words in cut for word in words]
