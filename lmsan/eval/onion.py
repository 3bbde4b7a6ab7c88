"""The ONION baseline defense (Qi et al., EMNLP 2021) as OpenBackdoor's ``ONIONDefender`` runs it.

For a text of words ``x_1 .. x_n`` (whitespace split, empty pieces dropped), ``p_0`` is the
perplexity of the text and ``p_i`` that of the text without ``x_i``; the suspicion score is
``f_i = p_0 - p_i`` and every word with ``f_i >= bar`` is removed (OpenBackdoor compares with
``>=``; its default ``bar`` is 0, the paper's simplified ONION of Xu et al. [76]: "removes x_i if
removing it leads to a lower perplexity"). The language model is any object with
``perplexities(texts) -> float [B]`` (``lmsan.eval.ngram.NgramScorer``, or
``lmsan.eval.mlm.MaskedLMScorer``); see ``docs/evaluation.md`` for which one and why.

Work is bounded: only the first ``max_words`` words are scored and the rest are kept, and the
scorer is called with at most ``batch_size`` texts at a time. (OpenBackdoor's GPT-2 truncates at
96 tokens, so deleting a word past them leaves ``p_i = p_0``, ``f_i = 0 >= bar``, and the whole
tail is deleted: an artefact we do not copy.) numpy only; must not import torch.
"""

from __future__ import annotations

import logging
import random
from typing import Iterable, Protocol, Sequence

import numpy as np

log = logging.getLogger(__name__)


class PerplexityScorer(Protocol):
    """A language model that scores whole texts."""

    def perplexities(self, texts: list[str]) -> np.ndarray:
        """Return float [len(texts)] perplexities (> 0, lower = more fluent)."""
        ...


class Onion:
    """Remove the words whose deletion lowers the text's perplexity by at least ``bar``.

    Args:
        scorer: the language model.
        bar: suspicion threshold; a word goes when ``p_0 - p_i >= bar`` (perplexity units).
        max_words: words scored per text; words after them are never removed.
        batch_size: texts per ``scorer.perplexities`` call.
    """

    def __init__(self, scorer: PerplexityScorer, *, bar: float = 0.0, max_words: int = 64, batch_size: int = 64):
        if max_words < 1 or batch_size < 1:
            raise ValueError(f"max_words and batch_size must be >= 1, got {max_words} and {batch_size}")
        self.scorer = scorer
        self.bar = float(bar)
        self.max_words = max_words
        self.batch_size = batch_size

    def _perplexities(self, texts: list[str]) -> np.ndarray:
        parts = [np.asarray(self.scorer.perplexities(texts[i:i + self.batch_size]), dtype=np.float64)
                 for i in range(0, len(texts), self.batch_size)]
        out = np.concatenate(parts) if parts else np.empty(0)
        if out.shape != (len(texts),):
            raise ValueError(f"scorer returned shape {out.shape} for {len(texts)} texts")
        return out

    def suspicion_batch(self, texts: Iterable[str]) -> list[tuple[list[str], np.ndarray]]:
        """Return, per text, its scored words and their suspicion scores ``f_i = p_0 - p_i``.

        Returns:
            ``[(words, scores)]`` with ``words`` the first ``max_words`` whitespace-separated words
            and ``scores`` float64 [len(words)] in perplexity units (positive = deleting the word
            makes the text more fluent). A text of fewer than two words gets no scores.
        """
        split = [text.split()[:self.max_words] for text in texts]
        queries: list[str] = []
        for ws in split:
            if len(ws) < 2:
                continue
            queries.append(" ".join(ws))
            queries.extend(" ".join(ws[:i] + ws[i + 1:]) for i in range(len(ws)))
        ppl = self._perplexities(queries)
        out, at = [], 0
        for ws in split:
            if len(ws) < 2:
                out.append((ws, np.zeros(0)))
                continue
            p0, rest = ppl[at], ppl[at + 1:at + 1 + len(ws)]
            out.append((ws, p0 - rest))
            at += 1 + len(ws)
        return out

    def clean_batch(self, texts: Sequence[str]) -> list[str]:
        """Return each text without its suspicious words, re-joined with single spaces.

        A text of fewer than two words is returned unchanged (OpenBackdoor drops such texts).
        """
        texts = list(texts)
        cleaned = []
        for text, (ws, scores) in zip(texts, self.suspicion_batch(texts)):
            if len(ws) < 2:
                cleaned.append(text)
                continue
            kept = [w for w, f in zip(ws, scores) if not f >= self.bar]
            cleaned.append(" ".join(kept + text.split()[self.max_words:]))
            log.debug("onion removed %s", [w for w, f in zip(ws, scores) if f >= self.bar])
        return cleaned

    def clean(self, text: str) -> str:
        """Return ``text`` without its suspicious words (see ``clean_batch``)."""
        return self.clean_batch([text])[0]


def trigger_detection(onion: Onion, sentences: Sequence[str], triggers: Sequence[str], *,
                      seed: int = 0) -> dict[str, float]:
    """Measure how well ONION's scores single out one inserted single-word trigger.

    Each sentence gets each trigger once at a random word boundary (``insert_trigger``, one
    ``random.Random(seed)`` for the whole run); insertions past ``max_words`` are skipped.

    Returns:
        ``top1``: share of triggered texts whose highest suspicion score is the trigger's;
        ``trigger_removed``: share where ``clean`` would remove the trigger (``f >= bar``);
        ``other_removed``: share of the other words of triggered texts that would be removed;
        ``clean_removed``: share of the words of the untouched sentences that would be removed;
        ``n``: triggered texts scored (an empty sentence plus its trigger has one word and is
        skipped). Fractions in [0, 1].
    """
    from lmsan.eval.metrics import insert_trigger

    rng = random.Random(seed)
    texts, positions = [], []
    for sentence in sentences:
        for trigger in triggers:
            position = rng.randint(0, len(sentence.split()))
            if position < onion.max_words:
                texts.append(insert_trigger(sentence, trigger, rng, position=position))
                positions.append(position)
    top1 = removed = other = other_words = n = 0
    for (_, scores), p in zip(onion.suspicion_batch(texts), positions):
        if p >= len(scores):  # a one-word text: ONION leaves it alone
            continue
        n += 1
        top1 += int(np.argmax(scores) == p)
        removed += int(scores[p] >= onion.bar)
        rest = np.delete(scores, p)
        other += int(np.sum(rest >= onion.bar))
        other_words += len(rest)
    clean = clean_words = 0
    for _, scores in onion.suspicion_batch(sentences):
        clean += int(np.sum(scores >= onion.bar))
        clean_words += len(scores)
    return {"top1": top1 / n if n else 0.0, "trigger_removed": removed / n if n else 0.0,
            "other_removed": other / other_words if other_words else 0.0,
            "clean_removed": clean / clean_words if clean_words else 0.0, "n": n}
