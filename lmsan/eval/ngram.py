"""An interpolated Kneser-Ney n-gram language model with an open vocabulary. Pure Python + numpy.

This is ONION's perplexity scorer here (``lmsan.eval.onion``): no GPT-2 can be had offline, and
on sentences with an inserted rare trigger it ranks the trigger first more often than the tiny
masked LM does (``docs/evaluation.md``). Words are lower-cased ``\\w+`` runs and single
punctuation marks, digits folded to ``0``. A word seen fewer than ``min_count`` times in training
becomes ``<unk>``; an unknown word is scored as ``P(<unk> | history) * S(word)``, where ``S`` comes
from a character-level Kneser-Ney model trained on the words that became ``<unk>``, so an unseen
name costs less than an unseen letter salad. By default ``S`` is length-normalised:
``log S(w) = log P_char(w) / (len(w) + 1) * L``, with ``L`` the mean ``len + 1`` of the training
``<unk>`` tokens. A plain ``P_char`` charges long real words ("engagingly") more than a two-letter
trigger ("cf") just for their length; normalised, it charges each unknown word for how un-English
its spelling is. That lifts the trigger's top-1 suspicion rate from 0.38-0.61 to 0.78-0.99
(``docs/evaluation.md``); the price is that ``S`` no longer sums to 1, so the "perplexity" is a
fluency score, which is all ONION compares. ``min_count=4`` (not 2) sends words seen 2-3 times in
~1M training tokens (``bb``, ``mm`` among the paper's triggers) through the spelling model too.
Must not import torch or transformers.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from typing import Iterable, Sequence

import numpy as np

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
_WORD = re.compile(r"\w+|[^\w\s]")
_DIGIT = re.compile(r"\d")


def words(text: str) -> list[str]:
    """Split ``text`` into the model's word tokens (lower-cased, digits folded to ``0``)."""
    return [_DIGIT.sub("0", token) for token in _WORD.findall(text.lower())]


class KneserNey:
    """Interpolated Kneser-Ney over token sequences (one absolute discount per order).

    ``P(w | h) = max(c(h w) - D, 0) / c(h) + D * N1+(h .) / c(h) * P(w | h[1:])``, with
    continuation counts ``N1+(. h w)`` for ``c`` below the top order and a uniform floor
    ``1 / |V|`` under the unigrams (Chen & Goodman 1998). Sequences are padded with
    ``order - 1`` ``<s>`` and one ``</s>``.
    """

    def __init__(self, sequences: Iterable[Sequence[str]], *, order: int = 3):
        if order < 1:
            raise ValueError(f"order must be >= 1, got {order}")
        self.order = order
        top: Counter[tuple[str, ...]] = Counter()
        for seq in sequences:
            padded = [BOS] * (order - 1) + list(seq) + [EOS]
            for i in range(order - 1, len(padded)):
                top[tuple(padded[i - order + 1:i + 1])] += 1
        # counts[k][context] -> Counter(next): raw counts at the top order, continuation below
        self.counts: list[dict[tuple[str, ...], Counter[str]]] = [defaultdict(Counter) for _ in range(order)]
        for gram, n in top.items():
            self.counts[order - 1][gram[:-1]][gram[-1]] += n
        for k in range(order - 1, 0, -1):
            for context, nexts in self.counts[k].items():
                for w in nexts:
                    self.counts[k - 1][context[1:]][w] += 1  # one more distinct left extension
        self.vocab = set(self.counts[0][()]) | {UNK}
        self.discounts = [self._discount(level) for level in self.counts]
        self._totals = [{c: sum(n.values()) for c, n in level.items()} for level in self.counts]

    @staticmethod
    def _discount(level: dict[tuple[str, ...], Counter[str]]) -> float:
        n1 = sum(1 for nexts in level.values() for n in nexts.values() if n == 1)
        n2 = sum(1 for nexts in level.values() for n in nexts.values() if n == 2)
        return n1 / (n1 + 2 * n2) if n1 and n2 else 0.5

    def prob(self, word: str, history: Sequence[str]) -> float:
        """Return ``P(word | last order-1 tokens of history)``; ``history`` is padded by the caller."""
        p = 1.0 / len(self.vocab)
        for k in range(self.order):
            context = tuple(history[len(history) - k:]) if k else ()
            nexts = self.counts[k].get(context)
            if not nexts:
                continue  # unseen history: keep the lower-order estimate
            total, d = self._totals[k][context], self.discounts[k]
            p = max(nexts.get(word, 0) - d, 0.0) / total + d * len(nexts) / total * p
        return p

    def logprob(self, seq: Sequence[str]) -> tuple[float, int]:
        """Return ``(sum of natural-log probabilities, tokens scored)`` of ``seq`` plus ``</s>``."""
        padded = [BOS] * (self.order - 1) + list(seq) + [EOS]
        total = 0.0
        for i in range(self.order - 1, len(padded)):
            total += math.log(self.prob(padded[i], padded[i - self.order + 1:i]))
        return total, len(padded) - self.order + 1


class NgramScorer:
    """Sentence perplexity under a word Kneser-Ney model with a character model for unknown words.

    Args:
        sentences: training text (keep it disjoint from the sentences you evaluate).
        order: word n-gram order.
        char_order: character n-gram order of the spelling model.
        min_count: words seen fewer times become ``<unk>``.
        normalize_spelling: length-normalise the unknown-word spelling score (module docstring);
            ``False`` gives a proper probability model.
    """

    def __init__(self, sentences: Iterable[str], *, order: int = 3, char_order: int = 4, min_count: int = 4,
                 normalize_spelling: bool = True):
        tokenized = [words(s) for s in sentences]
        freq = Counter(w for seq in tokenized for w in seq)
        self.known = {w for w, n in freq.items() if n >= min_count}
        if not self.known:
            raise ValueError("no word seen min_count times: give the n-gram model more text")
        rare = [w for w, n in freq.items() if n < min_count for _ in range(n)]
        self.words = KneserNey(([w if w in self.known else UNK for w in seq] for seq in tokenized), order=order)
        self.spelling = KneserNey((list(w) for w in rare or ["x"]), order=char_order)
        # L: mean characters (+ end of word) of a training <unk> token
        self.spelling_length = float(np.mean([len(w) + 1 for w in rare])) if normalize_spelling and rare else None
        self.order = order

    @classmethod
    def from_sources(cls, sources: Sequence[str] = ("oanc", "bbcnews"), *, exclude: Iterable[str] = (),
                     **kwargs: object) -> "NgramScorer":
        """Train on registry corpora or files (``lmsan.data.load_sentences``), minus ``exclude``.

        Pass the evaluation texts as ``exclude`` when they come from the same corpora: a model that
        has seen a test sentence finds it too fluent, which flatters ONION.
        """
        from lmsan.data import load_sentences

        excluded = set(exclude)
        sentences = [s for source in sources for s in load_sentences(source) if s not in excluded]
        return cls(sentences, **kwargs)  # type: ignore[arg-type]

    def logprob(self, text: str) -> tuple[float, int]:
        """Return ``(natural-log probability of text, tokens scored incl. </s>)``."""
        seq = words(text)
        mapped = [w if w in self.known else UNK for w in seq]
        total, n = self.words.logprob(mapped)
        for w, m in zip(seq, mapped):
            if m == UNK:
                spelled, chars = self.spelling.logprob(list(w))
                total += spelled if self.spelling_length is None else spelled / chars * self.spelling_length
        return total, n

    def perplexities(self, texts: Sequence[str]) -> np.ndarray:
        """Return float64 [len(texts)] perplexities, ``exp(-logprob / tokens)``."""
        out = np.empty(len(texts), dtype=np.float64)
        for i, text in enumerate(texts):
            total, n = self.logprob(text)
            out[i] = math.exp(-total / n)
        return out
