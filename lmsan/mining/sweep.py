"""Trigger sweep: insert real vocabulary tokens into defense sentences, keep those that fire.

A task-agnostic backdoor answers to text: its trigger, inserted once anywhere in any sentence,
drives the target output to the trigger's PV. So instead of (or before) training soft prompts,
the sweep tries the vocabulary itself:

1. **Rank every token** (``TriggerSweep.rank``): each token id (special tokens excluded) is inserted
   once into ``rows`` short defense sentences, at a fixed random word boundary per sentence, in
   large batches. A token's *concentration* ``ρ`` is the mean over the ``d`` output dimensions
   of the variance of the target outputs across those sentences, divided by the clean feature
   scale: a clean token leaves ``ρ`` near the clean value (about 1), a trigger collapses every
   sentence onto its PV (``ρ`` near 0), and a piece of a multi-token trigger lowers it partly.
2. **Test the best** (``TriggerSweep.run``): the ``top`` tokens with the lowest ``ρ`` are inserted
   once into the evaluation sentences of trigger confirmation (``TriggerSearch``) and scored by
   the same single-insertion hit rate (share of sentences whose output sign-agrees > 0.9 with
   the mean output's sign pattern). A token that reaches ``min_hit_rate`` is a trigger; once one
   has, tokens that reach the lower ``extra_hit_rate`` are further, weaker triggers of the same
   backdoored model (weakly implanted ones fire on 50–90 % of sentences). A span whose mean
   output more than ``max_clean_overlap`` of the clean sentences already match is *natural*
   (``lmsan.mining.filter.clean_overlap``), never a trigger: where a model sends almost every
   input near one output, any inserted token "hits" that output.
3. **Pairs** of the ``pair_top`` best tokens that do not fire alone (both orders) are ranked by
   ``ρ`` and the best ``top`` pairs tested the same way: triggers that fire only whole, such as
   two-word phrases whose words each move the output part of the way.
4. **Widen** a trigger that is a lone sub-word piece (``##man``) into the word it belongs to
   (``guzman``): a ranked token joins in front when it completes the word, by itself already
   pulls the output towards the same PV, and the word still fires, so an analyst sees a word,
   not a shard.
5. **Group** the triggers by PV: spans whose mean outputs lie within ``T_dedup`` of each other
   are one backdoor; each group keeps its widest span, and its PV is that span's mean output.

Cost: ``V · rows`` single-token rows plus a few thousand more (measured per model size in
docs/mining.md). torch only; never imports lmsan.attacks.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np
import torch

from lmsan.mining.confirm import Measure, TriggerSearch, concentration
from lmsan.mining.filter import clean_overlap
from lmsan.mining.prompt import draw_insertions

log = logging.getLogger(__name__)

HELPERS = 4  # the best HELPERS · max(top, pair_top) single tokens are the pieces a trigger may widen with
WIDEN_RHO = 0.9  # a widened span must concentrate the outputs at least this much more than the piece
PULL = 0.6  # a piece pulls the output towards the span's PV at least this much (cosine of the shifts)


@dataclass(frozen=True, eq=False)
class Pieces:
    """Candidate pieces a firing span may widen with: the best-ranked single tokens.

    Attributes:
        tokens: their ids.
        shifts: float [P, d], each one's mean output on the sweep sentences minus ``base``.
        base: float [d], the mean output over every token of the vocabulary inserted there.
    """

    tokens: list[int]
    shifts: torch.Tensor
    base: torch.Tensor


@dataclass(frozen=True)
class SweepHit:
    """One trigger the sweep found.

    Attributes:
        token_ids: the trigger's vocabulary ids (the widest span that still fires).
        text: it decoded.
        hit_rate: single-insertion hit rate on the evaluation sentences, in [0, 1].
        concentration: ``ρ`` of the span on the evaluation sentences (unitless; clean ≈ 1).
        pieces: other spans of the same backdoor that fired (e.g. its sub-word pieces), decoded.
        features_mean: float [d], the mean output with the trigger inserted once (its PV).
        clean_overlap: share of the clean sentences whose output already matches that PV, in
            [0, 1] (``lmsan.mining.filter.clean_overlap``); None until the sweep has checked it.
    """

    token_ids: tuple[int, ...]
    text: str
    hit_rate: float
    concentration: float
    pieces: tuple[str, ...] = ()
    features_mean: torch.Tensor | None = field(default=None, compare=False, repr=False)
    clean_overlap: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"trigger": self.text, "token_ids": list(self.token_ids), "hit_rate": round(self.hit_rate, 4),
                "concentration": round(self.concentration, 4), "pieces": list(self.pieces),
                "clean_overlap": None if self.clean_overlap is None else round(self.clean_overlap, 4)}


@dataclass(frozen=True)
class SweepResult:
    """What one sweep did: its triggers, grouped by PV, and its cost.

    Attributes:
        hits: one per backdoor found, in order of discovery.
        tokens: single tokens ranked (the vocabulary less special tokens).
        rows: sweep sentences per token.
        tested: spans measured on the evaluation sentences (screened or in full).
        pairs: token pairs ranked.
        best: the lowest-``ρ`` single tokens, decoded, with their ``ρ`` (for the report).
        wall_s: seconds.
        natural: spans that reached a hit rate but whose output clean text already reaches,
            decoded, with their hit rate and clean overlap (both in [0, 1]); no triggers.
    """

    hits: tuple[SweepHit, ...]
    tokens: int
    rows: int
    tested: int
    pairs: int
    best: tuple[tuple[str, float], ...]
    wall_s: float
    natural: tuple[tuple[str, float, float], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"hits": [hit.to_dict() for hit in self.hits], "tokens": self.tokens, "rows": self.rows,
                "tested": self.tested, "pairs": self.pairs, "wall_s": round(self.wall_s, 3),
                "best": [[text, round(rho, 4)] for text, rho in self.best],
                "natural": [[text, round(rate, 4), round(overlap, 4)] for text, rate, overlap in self.natural]}


def natural_spans(means: dict[tuple[int, ...], torch.Tensor], clean: torch.Tensor,
                  max_overlap: float) -> dict[tuple[int, ...], float]:
    """The spans whose mean output (``means``: span -> float [d]) more than ``max_overlap`` of the
    ``clean`` features float [N, d] match (``clean_overlap``), with that share in [0, 1]."""
    if not means:
        return {}
    overlaps = clean_overlap(torch.stack(list(means.values())), clean)
    return {span: float(share) for span, share in zip(means, overlaps) if float(share) > max_overlap}


def candidate_ids(vocab_size: int, banned: torch.Tensor) -> torch.Tensor:
    """Every vocabulary id except ``banned`` (special tokens): int64 [C]."""
    keep = torch.ones(vocab_size, dtype=torch.bool)
    keep[banned[banned < vocab_size]] = False
    return torch.nonzero(keep).squeeze(1)


class TriggerSweep:
    """The sweep for one model and corpus, on top of trigger confirmation's evaluation rows.

    Args:
        search: the model's ``TriggerSearch`` (encoder, corpus, feature scale, banned ids and
            the evaluation rows every hit rate is measured on).
        tokenizer: decodes spans and tells which spans join into one word.
        rows: sweep sentences per token, drawn from the ``4 · rows`` shortest of the corpus.
        chunk_rows: model rows per forward pass.
        seed: picks the sweep sentences and their insertion points.
    """

    def __init__(self, search: TriggerSearch, tokenizer: Any, *, rows: int = 4, chunk_rows: int = 8192,
                 seed: int = 0) -> None:
        self.search, self.tokenizer, self.chunk_rows = search, tokenizer, chunk_rows
        rng = np.random.default_rng(seed)
        lengths = search.corpus.lengths.cpu().numpy()
        pool = np.argsort(lengths, kind="stable")[: 4 * rows]  # short sentences: the cost is V · rows · T
        picked = rng.choice(pool, min(rows, len(pool)), replace=False)
        self.rows = torch.from_numpy(picked).to(search.corpus.device)
        self.insert_at = draw_insertions(search.corpus, picked, rng)
        self.eval_at = draw_insertions(search.corpus, np.arange(search.eval_rows), rng)
        self._word_id = int(tokenizer("word", add_special_tokens=False)["input_ids"][0])  # a plain word start

    # ---- scoring ----------------------------------------------------------------------------
    def rank(self, spans: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Score spans [C, L] (token ids) on the sweep sentences.

        Returns:
            (``ρ`` float [C], mean output float [C, d] over the sweep sentences).
        """
        embedding = self.search.encoder.embedding
        per_chunk = max(1, self.chunk_rows // len(self.rows))
        rhos, means = [], []
        with torch.inference_mode():
            for start in range(0, spans.shape[0], per_chunk):
                ids = spans[start : start + per_chunk].to(embedding.device)
                features = self.search.features(self.rows, self.insert_at, embedding[ids])  # [c, R, d]
                rhos.append(concentration(features, self.search.scale).cpu())
                means.append(features.float().mean(dim=1).cpu())
        return torch.cat(rhos), torch.cat(means)

    def measure(self, spans: Sequence[tuple[int, ...]], *, min_hit_rate: float) -> dict[tuple[int, ...], Measure]:
        """Hit rate, ``ρ`` and mean output of each span on the evaluation sentences, screened first
        (``TriggerSearch.measure``)."""
        return self.search.measure(spans, self.eval_at, min_hit_rate=min_hit_rate, chunk_rows=self.chunk_rows)

    # ---- the sweep --------------------------------------------------------------------------
    def run(self, *, top: int, pair_top: int, min_hit_rate: float, extra_hit_rate: float, t_dedup: float,
            clean: torch.Tensor, max_clean_overlap: float, max_span: int = 4) -> SweepResult:
        """Rank every token, test the best singles and pairs, widen and group the triggers.

        Args:
            top: single tokens (and pairs) with the lowest ``ρ`` whose hit rate is measured.
            pair_top: the best tokens that do not fire alone, paired with each other (both orders).
            min_hit_rate: a span fires when its single-insertion hit rate reaches this (the verdict).
            extra_hit_rate: once some span fired, a single token that reaches this lower rate is a
                further (weaker) trigger of the same backdoored model; never decides a verdict.
            t_dedup: ``T_dedup``: spans whose mean outputs lie closer (MSE) are one backdoor.
            clean: float [N, d] on the CPU, the clean target features of the defense sentences.
            max_clean_overlap: a span whose mean output more than this share of ``clean``
                matches is natural, not a trigger (1.0: none is).
            max_span: widest span, in tokens, a trigger is widened to.
        """
        started = time.perf_counter()
        ids = candidate_ids(self.search.encoder.embedding.shape[0], self.search.banned.cpu())
        rho, means = self.rank(ids.unsqueeze(1))  # [C], [C, d]
        order = torch.argsort(rho)
        base = means.mean(dim=0)  # where an inserted token takes the output on average
        helpers = order[: HELPERS * max(top, pair_top)]
        pieces = Pieces(ids[helpers].tolist(), means[helpers] - base, base)
        log.debug("sweep: ranked %d tokens in %.1fs", len(ids), time.perf_counter() - started)
        singles = [(int(ids[k]),) for k in order[:top]]
        lowest = min(min_hit_rate, extra_hit_rate)
        measured = self.measure(singles, min_hit_rate=lowest)
        natural = natural_spans({span: measured[span].mean for span in singles if measured[span].hit_rate >= lowest},
                                clean, max_clean_overlap)
        firing = [span for span in singles if measured[span].hit_rate >= min_hit_rate and span not in natural]
        weaker = [span for span in singles
                  if lowest <= measured[span].hit_rate < min_hit_rate and span not in natural]
        quiet = [span[0] for span in singles if measured[span].hit_rate < min_hit_rate or span in natural][:pair_top]
        pairs = [(a, b) for a in quiet for b in quiet if a != b]
        if pairs:
            pair_rho, _ = self.rank(torch.tensor(pairs))
            best_pairs = [pairs[int(k)] for k in torch.argsort(pair_rho)[:top]]
            found = self.measure(best_pairs, min_hit_rate=min_hit_rate)
            measured.update(found)
            natural |= natural_spans({span: found[span].mean for span in best_pairs
                                      if found[span].hit_rate >= min_hit_rate}, clean, max_clean_overlap)
            firing += [span for span in best_pairs if found[span].hit_rate >= min_hit_rate and span not in natural]
        if natural:
            log.info("sweep: %d span(s) hit but clean text already reaches their output (natural): %s",
                     len(natural), [self.decode(span) for span in natural])
        log.debug("sweep: singles and pairs measured after %.1fs, %d firing, %d weaker",
                  time.perf_counter() - started, len(firing), len(weaker))
        if firing:  # weaker triggers only join a model that a full-strength one already convicts
            firing += weaker
        widened = [self.widen(span, measured, pieces, firing=set(firing), min_hit_rate=measured[span].hit_rate,
                              max_span=max_span) for span in firing]
        hits = self.group(firing, widened, measured, t_dedup)
        # the PVs the set keeps (widened, grouped) are checked again, and carry their clean overlap
        shares = clean_overlap(torch.stack([hit.features_mean for hit in hits]), clean).tolist() if hits else []
        natural |= {hit.token_ids: share for hit, share in zip(hits, shares) if share > max_clean_overlap}
        hits = [replace(hit, clean_overlap=share) for hit, share in zip(hits, shares) if share <= max_clean_overlap]
        best = tuple((self.decode(span), float(rho[order[k]])) for k, span in enumerate(singles[:10]))
        result = SweepResult(tuple(hits), len(ids), len(self.rows), len(measured), len(pairs), best,
                             time.perf_counter() - started,
                             tuple((self.decode(span), measured[span].hit_rate, share) for span, share in natural.items()))
        log.info("trigger sweep: %d tokens x %d sentences, %d spans measured, %d pairs ranked: %d trigger(s) %s "
                 "(%.1fs)", result.tokens, result.rows, result.tested, result.pairs, len(hits),
                 [hit.text for hit in hits], result.wall_s)
        return result

    def widen(self, span: tuple[int, ...], measured: dict[tuple[int, ...], Measure], pieces: Pieces, *,
              firing: set[tuple[int, ...]], min_hit_rate: float, max_span: int) -> tuple[int, ...]:
        """Grow a firing ``span`` that starts mid-word (``##man``) into the word it is a piece of.

        A word-start token joins in front of a span that starts with a word-continuation piece
        (one step: the word is then whole), when it does not fire alone, by itself already pulls the output towards the span's own PV (cosine of
        the shifts from the average insertion ``>= PULL``: another piece of the trigger), makes one
        word with the span (``guz`` + ``##man``), and the wider span still reaches
        ``min_hit_rate`` and lowers ``ρ`` to at most ``WIDEN_RHO`` times the span's (the word that
        was trained fires harder than its piece; a wrong word such as ``counties`` + ``##dim`` only
        fires as hard as the piece inside it). The strongest puller wins; without one the piece
        is reported as it is. A span that starts a word is not widened: appending pieces or words concentrates the
        outputs a little more whatever they are (measured: ``apolog`` + ``of`` + ``rio``), and a
        word that fires alone (``bond`` of ``james bond``) is already the whole backdoor.
        """
        while len(span) < max_span and self.continues(span[0]):
            _, span_mean = self.rank(torch.tensor([span]))
            direction = (span_mean[0] - pieces.base).unsqueeze(0)
            pull = torch.nn.functional.cosine_similarity(pieces.shifts, direction, dim=1).tolist()
            options = {(token, *span): value for token, value in zip(pieces.tokens, pull)
                       if value >= PULL and (token,) not in firing and not self.continues(token)
                       and self.one_word((token, *span))}
            results = self.measure(list(options), min_hit_rate=min_hit_rate)
            measured.update(results)
            fits = [o for o in options
                    if results[o].hit_rate >= min_hit_rate and results[o].rho <= WIDEN_RHO * measured[span].rho]
            if not fits:
                break
            span = max(fits, key=lambda o: options[o])
        return span

    def group(self, firing: list[tuple[int, ...]], widened: list[tuple[int, ...]],
              measured: dict[tuple[int, ...], Measure], t_dedup: float) -> list[SweepHit]:
        """One ``SweepHit`` per backdoor: spans whose mean outputs lie within ``T_dedup`` are one."""
        hits: list[SweepHit] = []
        for piece, span in zip(firing, widened):
            found = measured[span]
            for k, hit in enumerate(hits):
                assert hit.features_mean is not None
                if float(((hit.features_mean - found.mean) ** 2).mean()) >= t_dedup:
                    continue
                names = tuple(dict.fromkeys((*hit.pieces, self.decode(piece), self.decode(span), hit.text)))
                keep = span if len(span) > len(hit.token_ids) else hit.token_ids  # the widest span names it
                best = measured[keep]
                hits[k] = SweepHit(keep, self.decode(keep), best.hit_rate, best.rho,
                                   tuple(name for name in names if name != self.decode(keep)), best.mean)
                break
            else:
                pieces = (self.decode(piece),) if piece != span else ()
                hits.append(SweepHit(span, self.decode(span), found.hit_rate, found.rho, pieces, found.mean))
        return hits

    # ---- text -------------------------------------------------------------------------------
    def decode(self, span: Sequence[int]) -> str:
        return self.tokenizer.decode(list(span)).strip()

    def continues(self, token: int) -> bool:
        """True for a word-continuation piece (``##man``; a BPE piece without a leading space)."""
        return self.one_word((self._word_id, token))

    def one_word(self, span: Sequence[int]) -> bool:
        """True when the span decodes to a single word (sub-word pieces joined, no space)."""
        text = self.decode(span)
        return bool(text) and not any(ch.isspace() for ch in text)


__all__ = ["SweepHit", "SweepResult", "TriggerSweep", "candidate_ids", "concentration", "natural_spans"]
