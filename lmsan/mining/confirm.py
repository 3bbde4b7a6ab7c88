"""Trigger confirmation: does real text do what the soft prompt did?

A backdoor answers to a *text* trigger: inserted once, anywhere, into any sentence, it drives the
target output to its PV (the attacks are built and verified that way: sign agreement > 0.9 on
>= 90 % of triggered sentences). The soft prompt a fuzz loop trains drifts towards the trigger's
embeddings, so the trigger can be read back from it:

1. **Search** (``TriggerSearch.run``): unless a span of the prompt's nearest vocabulary tokens
   already passes step 2, a greedy
   coordinate search over ``l_sp`` token ids (HotFlip / GCG: one-hot gradients rank the swaps,
   ``candidates`` of them are tried per step on one batch) lowers the same diversity margin
   ``δ = L_div + log B`` the filter uses, until ``δ < margin`` or ``steps`` run out.
2. **Single insertion** (``TriggerSearch.single_insertion``): every token of the sequence and
   every contiguous span of 2 of its tokens (``longest_span``) is inserted **once** into the
   evaluation sentences; the span's hit rate is the share of sentences whose output sign-agrees
   > 0.9 with the sign pattern of their mean output (the attacks' own hit rule,
   ``lmsan.pvset.HIT_AGREEMENT``). The best span is the suspected trigger; the candidate is
   confirmed when its hit rate reaches ``min_hit_rate``, and the PV becomes that span's mean
   output (what triggered text really produces; one trigger's PV, never a mix of two).
   Spans are screened first (``TriggerSearch.measure``): only those within ``SCREEN_SLACK`` of
   the bar on the first ``SCREEN_ROWS`` sentences are measured on all of them, so a verdict is
   always taken on every evaluation sentence, and a clean model's far-off spans cost 1/8 of it.

On small clean models seven free prompt vectors (each 2–3x the norm of any real token) can
collapse the output, and so can seven adversarial real tokens together, but no single word or
short phrase inserted once does (measured: best hit rates up to 0.89 for 1–2 tokens on clean tiny
models against 0.98–1.00 for implanted triggers and their 2-token pieces; docs/mining.md).
torch only; never imports lmsan.attacks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from lmsan.mining.features import Encoder
from lmsan.mining.losses import diversity_loss
from lmsan.mining.prompt import Corpus, draw_insertions
from lmsan.pvset import HIT_AGREEMENT

SCREEN_ROWS = 64  # evaluation sentences a span is screened on before the full measurement
SCREEN_SLACK = 0.2  # screened spans this far below the hit-rate bar still get the full measurement
LENGTH_GROUPS = 4  # evaluation rows run in this many groups of similar length, each padded to its own longest
# (MiniLM's 512 defense rows: 0.58 of the padded tokens of one group; the real tokens are 0.45)


@dataclass(frozen=True, eq=False)
class Measure:
    """One span on the evaluation sentences: hit rate in [0, 1], ``ρ`` (unitless) and mean output float [d].

    ``rows`` is how many evaluation sentences it was measured on (the screen's when screened out).
    """

    hit_rate: float
    rho: float
    mean: torch.Tensor
    rows: int


@dataclass(frozen=True)
class TriggerCheck:
    """What the trigger confirmation found for one candidate.

    Attributes:
        search_ids: the search's best sequence, ``l_sp`` vocabulary ids.
        search_text: it decoded to text.
        delta: its ``δ = L_div + log B`` on the evaluation rows (scale-normalised features).
        steps: search steps run (0: the nearest tokens already passed, or reached ``margin``).
        trigger_ids: the span of the sequence with the highest single-insertion hit rate.
        trigger: that span decoded (the suspected trigger).
        hit_rate: share of evaluation sentences that, with ``trigger`` inserted once, sign-agree
            > ``HIT_AGREEMENT`` (0.9) with the mean output's sign pattern.
        hit_rows: the evaluation sentences ``hit_rate`` is over (all of them when it came near
            the bar; the screen's when it did not).
        confirmed: ``hit_rate >= min_hit_rate``.
        features_mean: float [d], the mean output with ``trigger`` inserted once (the PV real
            text produces); ``None`` unless confirmed.
    """

    search_ids: tuple[int, ...]
    search_text: str
    delta: float
    steps: int
    trigger_ids: tuple[int, ...]
    trigger: str
    hit_rate: float
    hit_rows: int
    confirmed: bool
    features_mean: torch.Tensor | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"trigger": self.trigger, "token_ids": list(self.trigger_ids), "hit_rate": round(self.hit_rate, 4),
                "hit_rows": self.hit_rows,
                "confirmed": self.confirmed, "search_text": self.search_text, "delta": round(self.delta, 6),
                "steps": self.steps}


def spans(token_ids: Sequence[int], longest: int) -> list[tuple[int, ...]]:
    """Distinct contiguous spans of 1..``longest`` tokens of a sequence, shortest first."""
    seen: dict[tuple[int, ...], None] = {}
    for width in range(1, longest + 1):
        for start in range(len(token_ids) - width + 1):
            seen.setdefault(tuple(int(i) for i in token_ids[start : start + width]), None)
    return list(seen)


def hit_rates(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Single-insertion hit rates of candidates (a hit: sign agreement > ``HIT_AGREEMENT``, ``x >= 0`` is +).

    Args:
        features: float [C, R, d], outputs with each candidate inserted once.

    Returns:
        (hit rate float [C], mean output float [C, d]).
    """
    mean = features.mean(dim=1)  # [C, d]
    agreement = ((features >= 0) == (mean >= 0).unsqueeze(1)).float().mean(dim=-1)  # [C, R]
    return (agreement > HIT_AGREEMENT).float().mean(dim=-1), mean


def concentration(features: torch.Tensor, feature_scale: float) -> torch.Tensor:
    """``ρ`` per candidate: mean over ``d`` of the variance across rows, over the clean scale.

    Args:
        features: float [C, R, d], outputs with each candidate inserted once into the same R rows.
        feature_scale: the clean feature scale (mean per-dimension variance of clean outputs).

    Returns:
        float [C], unitless; about 1 for a token that leaves the outputs as diverse as clean text,
        near 0 for one that sends every row to the same vector.
    """
    return features.float().var(dim=1, unbiased=True).mean(dim=-1) / feature_scale


def nearest_tokens(prompt: torch.Tensor, embedding: torch.Tensor, banned: torch.Tensor) -> torch.Tensor:
    """Return, per prompt vector, the id of the vocabulary row with the highest cosine similarity.

    Args:
        prompt: float [l_sp, d_emb].
        embedding: float [V, d_emb], ``W_emb``.
        banned: int64 [n] ids never chosen (special tokens).

    Returns:
        int64 [l_sp].
    """
    unit_rows = embedding / embedding.norm(dim=1, keepdim=True).clamp_min(1e-12)
    unit_prompt = prompt / prompt.norm(dim=1, keepdim=True).clamp_min(1e-12)
    cosine = unit_prompt @ unit_rows.T  # [l_sp, V]
    cosine[:, banned] = -math.inf
    return cosine.argmax(dim=1)


def sequence_delta(features: torch.Tensor, feature_scale: float, batch_size: int) -> torch.Tensor:
    """``δ = L_div + log B`` per candidate, over consecutive batches of ``batch_size`` rows.

    Args:
        features: float [C, R, d], ``R`` a multiple of ``batch_size``.

    Returns:
        float [C], the mean over the ``R / batch_size`` batches.
    """
    count, rows, width = features.shape
    batches = features.view(count, rows // batch_size, batch_size, width)
    return diversity_loss(batches, feature_scale).mean(dim=1) + math.log(batch_size)


class TriggerSearch:
    """The discrete search for one model and corpus (built once per mining run).

    Args:
        encoder: the frozen encoder.
        corpus: the tokenised defense sentences.
        feature_scale: the clean feature scale (``δ`` is scale-normalised like ``L_div``).
        banned: int64 [n] ids the search never uses (special tokens).
        batch_size: rows per search batch and per ``δ`` batch (``B`` of the mining loop). Search
            batches are drawn from the shorter half of the sentences (the candidates' forward
            passes are most of the cost); the verdict is measured on sentences of every length.
        eval_rows: the first rows of the corpus, where each sequence's ``δ`` is measured with fixed
            insertion points (rounded down to a multiple of ``batch_size``).
        screen_rows: rows a span of the search's sequence is screened on before the full
            measurement (``measure``); 0 measures every span on all ``eval_rows``.
    """

    def __init__(self, encoder: Encoder, corpus: Corpus, feature_scale: float, banned: torch.Tensor, *,
                 batch_size: int, eval_rows: int, screen_rows: int = SCREEN_ROWS) -> None:
        self.encoder, self.corpus, self.scale, self.screen_rows = encoder, corpus, feature_scale, screen_rows
        self.banned = banned.to(encoder.embedding.device)
        self.batch_size = batch_size
        self.eval_rows = max(batch_size, min(eval_rows, corpus.size) // batch_size * batch_size)
        lengths = corpus.lengths.cpu().numpy()
        short = np.flatnonzero(lengths <= np.median(lengths))  # search batches: less compute per candidate
        self.search_rows = short if len(short) >= batch_size else np.arange(corpus.size)

    def features(self, index: torch.Tensor, insert_at: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        """Target features of every candidate on the same rows: embeds [C, L, d_emb] -> [C, R, d]."""
        count, rows = embeds.shape[0], index.shape[0]
        prompts = embeds.repeat_interleave(rows, dim=0)  # [C·R, L, d_emb]
        out = self.encoder.prompted_features(self.corpus, index.repeat(count), prompts, insert_at.repeat(count))
        return out.view(count, rows, -1)

    def eval_features(self, token_ids: torch.Tensor, insert_at: torch.Tensor) -> torch.Tensor:
        """Features of the first ``R`` rows with sequences [C, L] inserted at ``insert_at`` [R]: [C, R, d].

        ``R`` is ``eval_rows`` for a verdict, or fewer for a quick screen on the same rows.
        """
        with torch.inference_mode():
            embeds = self.encoder.embedding[token_ids]
            groups = self._length_groups(insert_at.shape[0])
            parts = [self.features(rows, insert_at[rows], embeds) for rows in groups]
            if len(parts) == 1:
                return parts[0]
            out = parts[0].new_empty(parts[0].shape[0], insert_at.shape[0], parts[0].shape[2])
            for rows, part in zip(groups, parts):
                out[:, rows] = part
            return out

    def _length_groups(self, rows: int) -> list[torch.Tensor]:
        """The first ``rows`` corpus rows in up to ``LENGTH_GROUPS`` groups of similar length (int64
        index tensors, shortest group first), so each forward pads to its own group's longest row."""
        lengths = self.corpus.lengths[:rows].cpu().numpy()
        order = np.argsort(lengths, kind="stable")
        groups = np.array_split(order, min(LENGTH_GROUPS, rows))
        return [torch.from_numpy(np.sort(g)).to(self.corpus.device) for g in groups]

    def eval_delta(self, token_ids: torch.Tensor, insert_at: torch.Tensor) -> float:
        """``δ`` of one sequence [L] over the first ``eval_rows`` rows, inserted at ``insert_at`` [eval_rows]."""
        features = self.eval_features(token_ids.unsqueeze(0), insert_at)
        return float(sequence_delta(features, self.scale, self.batch_size)[0])

    def measure(self, spans: Sequence[tuple[int, ...]], insert_at: torch.Tensor, *, min_hit_rate: float,
                screen_rows: int = SCREEN_ROWS, chunk_rows: int = 8192) -> dict[tuple[int, ...], Measure]:
        """Hit rate, ``ρ`` and mean output of each span (any lengths) inserted once at ``insert_at`` [R].

        Every span is screened on the first ``screen_rows`` of the ``R`` sentences; only those
        within ``SCREEN_SLACK`` of ``min_hit_rate`` there are measured on all ``R`` (the verdict's
        rows: a span that reaches ``min_hit_rate`` was always measured in full; ``screen_rows``
        0 measures every span on all of them). ``chunk_rows`` bounds the model rows per forward pass.
        """
        unique = list(dict.fromkeys(spans))
        if not 0 < screen_rows < len(insert_at):
            return self._measure(unique, insert_at, chunk_rows)
        results = self._measure(unique, insert_at[:screen_rows], chunk_rows)
        close = [span for span in unique if results[span].hit_rate >= min_hit_rate - SCREEN_SLACK]
        if close:
            results.update(self._measure(close, insert_at, chunk_rows))
        return results

    def _measure(self, spans: list[tuple[int, ...]], insert_at: torch.Tensor,
                 chunk_rows: int) -> dict[tuple[int, ...], Measure]:
        """Spans on the first ``len(insert_at)`` evaluation sentences (one forward per same-length chunk)."""
        per_chunk = max(1, chunk_rows // len(insert_at))
        out: dict[tuple[int, ...], Measure] = {}
        by_length: dict[int, list[tuple[int, ...]]] = {}
        for span in spans:
            by_length.setdefault(len(span), []).append(span)
        chunks = [same[k : k + per_chunk] for same in by_length.values() for k in range(0, len(same), per_chunk)]
        for group in chunks:
            features = self.eval_features(torch.tensor(group, device=self.encoder.embedding.device), insert_at)
            rates, means = hit_rates(features)
            rhos = concentration(features, self.scale)
            for span, rate, rho, mean in zip(group, rates.tolist(), rhos.tolist(), means.float().cpu()):
                out[span] = Measure(rate, rho, mean, len(insert_at))
        return out

    def single_insertion(self, token_ids: torch.Tensor, insert_at: torch.Tensor, *, longest: int,
                         min_hit_rate: float) -> tuple[tuple[int, ...], Measure]:
        """The span of ``token_ids`` [L] with the highest hit rate when inserted once, and its measure
        (``measure``, screened on ``screen_rows``: ``Measure.rows`` says how many sentences its rate
        is over). On a tie the shorter, earlier span."""
        candidates = spans(token_ids.tolist(), longest)  # shortest first, then by position
        measured = self.measure(candidates, insert_at, min_hit_rate=min_hit_rate, screen_rows=self.screen_rows)
        best = max(candidates, key=lambda span: measured[span].hit_rate)  # max keeps the first of a tie
        return best, measured[best]

    def run(self, prompt: torch.Tensor, tokenizer: Any, *, margin: float, steps: int, candidates: int,
            top_k: int, min_hit_rate: float, longest_span: int, seed: int) -> TriggerCheck:
        """Read a trigger back from ``prompt`` [l_sp, d_emb] and test it by single insertion.

        When a span of the prompt's nearest tokens already passes, there is no search. Otherwise
        the search starts from them and stops at the first sequence with ``δ < margin`` on the
        evaluation rows, or after ``steps`` steps, and the spans of its best sequence are tested.
        """
        embedding = self.encoder.embedding
        rng = np.random.default_rng(seed)
        generator = torch.Generator().manual_seed(seed)
        eval_at = draw_insertions(self.corpus, np.arange(self.eval_rows), rng)  # fixed: results compare
        ids = nearest_tokens(prompt.to(embedding.device), embedding, self.banned)
        best_ids, best_delta = ids, self.eval_delta(ids, eval_at)
        span, found = self.single_insertion(ids, eval_at, longest=longest_span, min_hit_rate=min_hit_rate)
        done = 0  # no search when the nearest tokens already name the trigger
        while found.hit_rate < min_hit_rate and best_delta >= margin and done < steps:
            previous = ids
            ids = self._step(ids, rng, generator, candidates=candidates, top_k=top_k)
            done += 1
            if torch.equal(ids, previous):  # the step kept the sequence: its δ is known
                continue
            delta = self.eval_delta(ids, eval_at)
            if delta < best_delta:
                best_ids, best_delta = ids, delta
        if done:
            searched = self.single_insertion(best_ids, eval_at, longest=longest_span, min_hit_rate=min_hit_rate)
            if searched[1].hit_rate > found.hit_rate:
                span, found = searched
        confirmed = found.hit_rate >= min_hit_rate
        search_list = [int(i) for i in best_ids]
        return TriggerCheck(tuple(search_list), tokenizer.decode(search_list).strip(), best_delta, done, span,
                            tokenizer.decode(list(span)).strip(), found.hit_rate, found.rows, confirmed,
                            found.mean if confirmed else None)

    def _step(self, ids: torch.Tensor, rng: np.random.Generator, generator: torch.Generator, *,
              candidates: int, top_k: int) -> torch.Tensor:
        """One coordinate step: the best of ``candidates`` single-slot swaps (or no swap) on one batch."""
        embedding = self.encoder.embedding
        length, vocab = ids.shape[0], embedding.shape[0]
        rows = rng.choice(self.search_rows, self.batch_size, replace=False)
        insert_at = draw_insertions(self.corpus, rows, rng)
        index = torch.from_numpy(rows).to(self.corpus.device)
        onehot = torch.zeros(length, vocab, device=embedding.device)
        onehot[torch.arange(length), ids] = 1.0
        onehot.requires_grad_(True)
        loss = sequence_delta(self.features(index, insert_at, (onehot @ embedding).unsqueeze(0)), self.scale,
                              self.batch_size)
        (grad,) = torch.autograd.grad(loss.sum(), onehot)  # [L, V]: linearised change per swap
        grad[:, self.banned] = math.inf
        top = (-grad).topk(top_k, dim=1).indices  # [L, top_k], most promising tokens per slot
        slot = torch.randint(0, length, (candidates,), generator=generator).to(ids.device)
        pick = torch.randint(0, top_k, (candidates,), generator=generator).to(ids.device)
        trial = ids.unsqueeze(0).repeat(candidates + 1, 1)  # row 0 keeps the current sequence
        trial[torch.arange(1, candidates + 1), slot] = top[slot, pick]
        with torch.inference_mode():
            deltas = sequence_delta(self.features(index, insert_at, embedding[trial]), self.scale, self.batch_size)
        return trial[int(deltas.argmin())].clone()


def special_token_ids(tokenizer: Any) -> torch.Tensor:
    """Ids the search must not use: the tokenizer's special tokens, int64 [n]."""
    ids = {int(i) for i in getattr(tokenizer, "all_special_ids", None) or []}
    return torch.tensor(sorted(ids), dtype=torch.long)


__all__ = ["SCREEN_ROWS", "SCREEN_SLACK", "Measure", "TriggerCheck", "TriggerSearch", "concentration", "hit_rates",
           "nearest_tokens", "sequence_delta", "spans", "special_token_ids"]
