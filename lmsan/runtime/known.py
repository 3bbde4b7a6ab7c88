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
from typing import Any, Iterable, Iterator, Sequence

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
    """One text after removing its known triggers.

    Attributes:
        text: the text without the words under each occurrence.
        removed: the removed runs of words, each joined by one space, in order.
        found: the known spans that occurred, distinct, in order of first occurrence.
    """

    text: str
    removed: tuple[str, ...]
    found: tuple[KnownSpan, ...]


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

    def strip(self, text: str, encoding: Any, protect: str | None = None) -> Stripped:
        """``text`` without the words under every known span of ``encoding`` (the
        ``tokenizers.Encoding`` of ``text`` alone, without special tokens, with character
        offsets into ``text``); a word holding ``protect`` (the mask token) stays."""
        occurrences = self.occurrences(encoding.ids)
        offsets = encoding.offsets
        spans = [(offsets[start][0], offsets[end - 1][1]) for _, start, end in occurrences]
        cleaned, removed = drop_spans(text, spans, protect)
        return Stripped(cleaned, removed, tuple(dict.fromkeys(span for span, _, _ in occurrences)))
