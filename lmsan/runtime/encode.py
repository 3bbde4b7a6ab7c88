"""Input checks, tokenization and long-input windows for the guard. numpy + tokenizers only.

The tokenizer comes from the guard's ``tokenizer.json`` (special tokens and the post-processor
are configured there); truncation and padding are switched off and done here. Each thread gets
its own ``tokenizers.Tokenizer`` (built from the same JSON), so none is shared across threads.

Long inputs (policy): a single text longer than the model's ``max_length`` tokens is split into
windows of at most ``max_length`` tokens, cut between words (inside a word only when one word
alone is longer than a window), each starting ``overlap`` words (the guard: ``max_window - 1``)
before the previous one ends, so a trigger of up to ``max_window`` words lies whole in some
window. Each window is scanned as its own sequence; the input is triggered if any window is. A
sentence pair that does not fit is an error: scan its parts separately.
"""

from __future__ import annotations

import bisect
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from lmsan.errors import DataError, InputError
from lmsan.runtime.removal import WORD

MAX_CHARS = 1_000_000
_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # Cc except \t \n \r


def check_input(value: object, *, max_chars: int = MAX_CHARS, index: int | None = None) -> tuple[str, ...]:
    """Validate one scan input and return it as a tuple of 1 (text) or 2 (sentence pair) strings.

    Args:
        value: a text or a (text, text) pair.
        max_chars: longest accepted text, in characters.
        index: the input's position in its batch (named by the error).

    Raises:
        InputError: not a str or a pair of str; an empty or whitespace-only text; a lone
            surrogate; a control character other than tab, newline and carriage return; more
            than ``max_chars`` characters.
    """
    if isinstance(value, str):
        texts: tuple = (value,)
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, str) for v in value):
        texts = tuple(value)
    else:
        raise InputError(f"expected a str or a (str, str) pair, got {type(value).__name__}", index=index)
    for part, text in enumerate(texts):
        label = "" if len(texts) == 1 else ("first", "second")[part] + " text of the pair: "
        if not text.strip():
            raise InputError(f"{label}empty or whitespace-only text", index=index)
        if len(text) > max_chars:
            raise InputError(f"{label}{len(text)} characters exceeds the limit of {max_chars}", index=index)
        bad = _SURROGATE.search(text)
        if bad:
            raise InputError(f"{label}lone surrogate U+{ord(bad.group()):04X} at index {bad.start()}", index=index)
        bad = _CONTROL.search(text)
        if bad:
            raise InputError(f"{label}control character U+{ord(bad.group()):04X} at index {bad.start()}",
                             index=index)
    return texts


@dataclass(frozen=True)
class Batch:
    """Padded model inputs: int64 [B, T] ``input_ids``, ``attention_mask``, ``token_type_ids``."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray


class Encoder:
    """Thread-safe tokenization for one guard.

    Args:
        tokenizer_json: path of ``tokenizer.json``.
        max_length: longest sequence (special tokens included) the model accepts.
        pad_id: padding token id.
        mask_id: mask token id (target ``mask``: every sequence must hold one), or None.
    """

    def __init__(self, tokenizer_json: Path, *, max_length: int, pad_id: int, mask_id: int | None = None) -> None:
        try:
            self._json = Path(tokenizer_json).read_text(encoding="utf-8")
        except (OSError, UnicodeError) as exc:
            raise DataError(f"cannot read the guard's tokenizer {tokenizer_json}: {exc}") from exc
        self._local = threading.local()
        self.max_length, self.pad_id, self.mask_id = max_length, pad_id, mask_id
        probe = self._tokenizer()  # fail at load time, in the loading thread, on a bad file
        self.specials = probe.num_special_tokens_to_add(False)
        self.vocab_size = probe.get_vocab_size(with_added_tokens=True)
        self.token_to_id = probe.token_to_id
        self.special_ids = frozenset(i for i, token in probe.get_added_tokens_decoder().items() if token.special)

    def _tokenizer(self):
        tokenizer = getattr(self._local, "tokenizer", None)
        if tokenizer is None:
            from tokenizers import Tokenizer

            try:
                tokenizer = Tokenizer.from_str(self._json)
            except Exception as exc:
                raise DataError(f"cannot read the guard's tokenizer.json: {exc}") from exc
            tokenizer.no_truncation()
            tokenizer.no_padding()
            self._local.tokenizer = tokenizer
        return tokenizer

    def lengths(self, units: Sequence[tuple[str, ...]]) -> list[int]:
        """Token counts (special tokens included) of each unit."""
        return [len(e) for e in self.encodings(units)]

    def encodings(self, units: Sequence[tuple[str, ...]]) -> list:
        """``tokenizers.Encoding`` of each unit (a text, or a sentence pair), unpadded, without
        character offsets where the tokenizers version can skip them (``encode_batch_fast``)."""
        inputs = [u[0] if len(u) == 1 else (u[0], u[1]) for u in units]
        tokenizer = self._tokenizer()
        return getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)(inputs)

    def pad(self, encodings: Sequence, *, multiple: int = 1) -> Batch:
        """Right-pad encodings into one batch, ``multiple`` tokens wide (at most ``max_length``).

        Raises:
            DataError: a sequence is longer than ``max_length`` tokens, or (target ``mask``)
                holds no mask token.
        """
        width = max(len(e) for e in encodings)
        if width > self.max_length:
            raise DataError(f"sequence of {width} tokens exceeds the model maximum of {self.max_length}")
        width = min(-(-width // multiple) * multiple, self.max_length)
        if len(encodings) == 1 and len(encodings[0]) == width:  # no padding
            e = encodings[0]
            ids = np.array([e.ids], dtype=np.int64)
            mask = np.ones_like(ids)
            types = np.array([e.type_ids], dtype=np.int64)
        else:
            ids = np.full((len(encodings), width), self.pad_id, dtype=np.int64)
            mask = np.zeros((len(encodings), width), dtype=np.int64)
            types = np.zeros((len(encodings), width), dtype=np.int64)
            for row, e in enumerate(encodings):
                n = len(e)
                ids[row, :n], mask[row, :n], types[row, :n] = e.ids, 1, e.type_ids
        if self.mask_id is not None and not (ids == self.mask_id).any(axis=1).all():
            raise DataError("target 'mask': the input must contain the mask token (use a prompt template)")
        return Batch(ids, mask, types)

    def top_word(self, unit: tuple[str, ...], scores: np.ndarray, *, protect: str | None = None) -> str | None:
        """The word (``str.split`` word) of ``unit`` that holds its highest-scoring token.

        Args:
            unit: a text or sentence pair.
            scores: float [>= T], one per token of ``unit``'s encoding (special tokens included),
                then any padding (ignored), e.g. a row of the guard's ``saliency`` output.
            protect: words containing it are skipped (the mask token).

        Returns:
            The word, or None when no token maps to an unprotected word (or ``scores`` is
            shorter than the encoding).
        """
        encoding = self._tokenizer().encode(*unit)
        if len(scores) < len(encoding):
            return None
        scores = scores[: len(encoding)]
        spans = [[m.span() for m in WORD.finditer(text)] for text in unit]
        starts = [[a for a, _ in text_spans] for text_spans in spans]
        for token in np.argsort(-np.asarray(scores, np.float64), kind="stable").tolist():
            part = encoding.sequence_ids[token]
            if part is None or encoding.special_tokens_mask[token]:
                continue
            text, (start, end) = unit[part], encoding.offsets[token]
            while start < end and text[start].isspace():  # byte-level BPE offsets may hold the space
                start += 1
            index = bisect.bisect_right(starts[part], start) - 1
            if index < 0 or start >= spans[part][index][1]:
                continue
            word = text[slice(*spans[part][index])]
            if not (protect and protect in word):
                return word
        return None

    def alone(self, texts: Sequence[str]) -> list:
        """``tokenizers.Encoding`` of each text on its own: no special tokens, with character
        offsets into the text (known-trigger removal maps tokens to words with them)."""
        return self._tokenizer().encode_batch(list(texts), add_special_tokens=False)

    def windows(self, text: str, *, overlap: int = 0) -> list[tuple[int, int]]:
        """Split a long text into half-open character spans ``[start, end)`` of at most
        ``max_length`` tokens each (special tokens included); one span if it already fits.

        Windows are cut between words (``str.split`` words) and each starts ``overlap`` words
        before the previous one ends, so any run of ``overlap + 1`` words lies whole in some
        window (a ``max_window``-word trigger needs ``overlap = max_window - 1``). A word longer
        than a window alone is cut inside, between its tokens.
        """
        encoding = self._tokenizer().encode(text, add_special_tokens=False)
        budget = self.max_length - self.specials
        if len(encoding) <= budget:
            return [(0, len(text))]
        words = [m.span() for m in WORD.finditer(text)]
        starts = [a for a, _ in words]
        first = [len(encoding.offsets)] * (len(words) + 1)  # first token of each word; then the end
        for token, (_, end) in reversed(list(enumerate(encoding.offsets))):
            first[max(bisect.bisect_right(starts, end - 1) - 1, 0)] = token  # a token by its last character
        for w in range(len(words) - 1, -1, -1):
            first[w] = min(first[w], first[w + 1])  # words without a token of their own
        spans, start = [], 0
        while start < len(words):
            end = start
            while end < len(words) and first[end + 1] - first[start] <= budget:
                end += 1
            if end == start:  # one word longer than a window: cut it between its tokens
                tokens = encoding.offsets[first[start] : first[start + 1]]
                spans += [(tokens[i][0], tokens[min(i + budget, len(tokens)) - 1][1])
                          for i in range(0, len(tokens), budget)]
                start += 1
                continue
            spans.append((words[start][0], words[end - 1][1]))
            if end == len(words):
                break
            start = max(start + 1, end - overlap)
        return self._refit(text, spans)

    def _refit(self, text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """Re-check each window alone (a cut can tokenize differently) and halve any that overflow."""
        out: list[tuple[int, int]] = []
        lengths = self.lengths([(text[a:b],) for a, b in spans])
        stack = [(a, b, n) for (a, b), n in zip(reversed(spans), reversed(lengths))]
        while stack:
            a, b, n = stack.pop()
            if not text[a:b].strip():
                continue
            if n <= self.max_length or b - a <= 1:
                out.append((a, b))
            else:
                mid = (a + b) // 2
                halves = [(mid, b), (a, mid)]
                stack += [(x, y, m) for (x, y), m in zip(halves, self.lengths([(text[x:y],) for x, y in halves]))]
        return out
