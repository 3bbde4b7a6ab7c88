"""Fuzz loops (method.md §1), several trained side by side in one batched forward.

Each of ``parallel_seeds`` slots runs one fuzz loop: its own prompt, Adam moments, learning rate,
batch order and insertion points, all drawn from its seed, so a loop's result does not depend on
which loops share the batch (up to float rounding of the padded width). When a loop ends (done or
aborted) its slot takes the next seed at once, keeping the batch full. The caller judges each
finished loop through ``on_finish`` and can stop the run there.

Adam is written out here because each slot needs its own learning rate (the adaptive switch) and
its own reset; it is the same update as ``torch.optim.Adam`` (betas 0.9/0.999, eps 1e-8).
torch only; never imports lmsan.attacks.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch

from lmsan.mining.config import MiningConfig
from lmsan.mining.features import Encoder
from lmsan.mining.losses import distance_loss, diversity_loss, path_loss, total_loss
from lmsan.mining.prompt import Corpus, draw_insertions, init_prompt
from lmsan.mining.report import EpochStats

BETAS = (0.9, 0.999)
EPS = 1e-8


def grad_peak(grad: torch.Tensor, test: str = "abs") -> torch.Tensor:
    """The learning-rate switch statistic per slot: max |grad| (``abs``) or max grad (``signed``).

    Args:
        grad: float [S, l_sp, d_emb], the prompts' gradients.
        test: ``abs`` (ours) or ``signed`` (reference: a step with only large negative
            gradients never switches).

    Returns:
        float [S]; the rate drops from ``lr0`` to ``lr`` once it exceeds ``T_grad``.
    """
    return grad.abs().amax(dim=(1, 2)) if test == "abs" else grad.amax(dim=(1, 2))


@dataclass(frozen=True)
class StepInfo:
    """Progress of one loop after one optimiser step (for progress bars).

    Attributes:
        slot: which side-by-side slot runs the loop (0-based).
        seed: the loop's seed.
        step: steps done in this loop; total: steps a full loop takes.
        epoch: 0-based epoch of the step.
        dist, div, path: the step's ``L_D``, ``L_div``, ``L_P``.
    """

    slot: int
    seed: int
    step: int
    total: int
    epoch: int
    dist: float
    div: float
    path: float


@dataclass(frozen=True, eq=False)
class FinishedLoop:
    """A loop that ended, handed to ``on_finish``.

    Attributes:
        seed, epochs, lr_switch_step, steps, wall_s: as in ``LoopTrace``.
        aborted: stopped early (not converged by ``abort_after_epoch``).
        prompt: float [l_sp, d_emb], the final prompt.
        candidate: returns the candidate PV float [d] (computed on first call: a full pass with
            the final prompt, or the last batch's mean, per ``pv_average``).
    """

    seed: int
    epochs: tuple[EpochStats, ...]
    lr_switch_step: int | None
    steps: int
    wall_s: float
    aborted: bool
    prompt: torch.Tensor
    candidate: Callable[[], torch.Tensor]


@dataclass(eq=False)
class _Slot:
    seed: int
    rng: np.random.Generator
    order: np.ndarray
    lr: float
    started: float
    epoch: int = 0
    batch: int = 0
    step: int = 0
    sums: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    epochs: list[EpochStats] = field(default_factory=list)
    switched_at: int | None = None
    last_mean: torch.Tensor | None = None


class FuzzEngine:
    """Run fuzz loops on a frozen encoder, ``config.parallel_seeds`` at a time.

    Args:
        encoder: the frozen encoder and ``W_emb``.
        corpus: the tokenised defense sentences (``N >= B``).
        aux: float [N, d] cached auxiliary features (with ``aux = recompute`` the losses use
            features recomputed every step instead).
        config: the mining knobs.
        t_l: ``T_L``, for the aborts and the early accept.
        t_div: ``T_div``, for the early accept.
        lr: base rate; ``lr0 = lr · lr0_factor``.
        div_scale: divisor of the features' variance inside ``L_div`` (1 = raw, paper).
        slots: loops trained side by side.
        bounds: (low, high), scalar or [d_emb]: clip the prompts into them after every step.
    """

    def __init__(self, encoder: Encoder, corpus: Corpus, aux: torch.Tensor, config: MiningConfig, *,
                 t_l: float, t_div: float, lr: float, div_scale: float = 1.0, slots: int = 1,
                 bounds: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        self.encoder, self.corpus, self.aux, self.config = encoder, corpus, aux, config
        self.t_l, self.t_div, self.lr, self.lr0 = t_l, t_div, lr, lr * config.lr0_factor
        self.div_scale = div_scale
        self.batches = corpus.size // config.batch_size  # full batches per epoch
        if config.epoch_batches:  # an epoch is a fresh random draw of that many batches
            self.batches = min(self.batches, config.epoch_batches)
        self.slots = slots
        device, width = encoder.embedding.device, encoder.embedding.shape[1]
        shape = (slots, config.prompt_len, width)  # [S, l_sp, d_emb]
        self.prompts = torch.zeros(shape, device=device, requires_grad=True)
        self.m = torch.zeros(shape, device=device)
        self.v = torch.zeros(shape, device=device)
        self.t = torch.zeros(slots, device=device)
        self.accepted = torch.zeros(0, aux.shape[1], device=device)  # [K, d], updated by the caller
        self._lengths = corpus.lengths.cpu().numpy()
        self.bounds = None if bounds is None else tuple(b.to(device) for b in bounds)

    @property
    def steps_per_loop(self) -> int:
        return self.batches * self.config.epochs

    def run(self, seeds: Iterator[int], on_finish: Callable[[FinishedLoop], bool],
            on_step: Callable[[StepInfo], None] | None = None) -> None:
        """Train loops for ``seeds`` until they run out or ``on_finish`` returns True (stop).

        Loops still running when the run stops are dropped unrecorded.
        """
        slots: list[_Slot | None] = [None] * self.slots
        for i in range(len(slots)):
            slots[i] = self._start(i, seeds)
        while any(slot is not None for slot in slots):
            active = [i for i, slot in enumerate(slots) if slot is not None]
            finished = self._step(active, slots, on_step)
            for i in finished:
                slot = slots[i]
                assert slot is not None
                slots[i] = None
                if on_finish(self._finish(i, slot)):
                    return
                slots[i] = self._start(i, seeds)

    # ---- one slot's life ------------------------------------------------------------------
    def _start(self, i: int, seeds: Iterator[int]) -> _Slot | None:
        seed = next(seeds, None)
        if seed is None:
            return None
        with torch.no_grad():
            self.prompts[i] = init_prompt(self.encoder.embedding, seed, self.config.prompt_len, scheme=self.config.init)
            if self.config.reset_adam:
                self.m[i].zero_()
                self.v[i].zero_()
                self.t[i] = 0
        rng = np.random.default_rng(seed)
        return _Slot(seed, rng, self._epoch_order(rng), self.lr0, time.perf_counter())

    def _epoch_order(self, rng: np.random.Generator, *, bucket: int = 16) -> np.ndarray:
        """Row order of one epoch: ``batches · B`` rows, each run of ``B`` one batch.

        ``bucketed``: shuffle, sort each chunk of ``bucket`` batches by length, cut it into
        batches and shuffle the batches: every batch is still a random draw of sentences, with
        similar lengths so that little compute goes to padding.
        """
        size = self.config.batch_size
        order = rng.permutation(self.corpus.size)[: self.batches * size]
        if self.config.batching == "random":
            return order
        chunks = [order[start : start + bucket * size] for start in range(0, len(order), bucket * size)]
        batches = [chunk[np.argsort(self._lengths[chunk], kind="stable")] for chunk in chunks]
        stacked = np.concatenate(batches).reshape(self.batches, size)  # [batches, B]
        return stacked[rng.permutation(self.batches)].reshape(-1)

    def _finish(self, i: int, slot: _Slot) -> FinishedLoop:
        prompt = self.prompts[i].detach().clone()
        cache: list[torch.Tensor] = []

        def candidate() -> torch.Tensor:
            if not cache:
                if self.config.pv_average == "last_batch" and slot.last_mean is not None:
                    cache.append(slot.last_mean)
                else:
                    cache.append(self.full_pass_mean(prompt, slot.rng))
            return cache[0]

        aborted = len(slot.epochs) < self.config.epochs and not slot.epochs[-1].dist < self.t_l
        return FinishedLoop(slot.seed, tuple(slot.epochs), slot.switched_at, slot.step,
                            time.perf_counter() - slot.started, aborted, prompt, candidate)

    def full_pass_mean(self, prompt: torch.Tensor, rng: np.random.Generator, *, chunk: int = 128) -> torch.Tensor:
        """Mean target feature over the whole corpus with ``prompt`` [l_sp, d_emb]: float [d]."""
        total = torch.zeros(self.aux.shape[1], dtype=torch.float64, device=self.aux.device)
        order = np.argsort(self._lengths, kind="stable")  # similar lengths together: less padding
        with torch.inference_mode():
            for start in range(0, self.corpus.size, chunk):
                rows_np = order[start : start + chunk]
                insert = draw_insertions(self.corpus, rows_np, rng)
                index = torch.from_numpy(rows_np).to(self.corpus.device)
                rows = prompt.unsqueeze(0).expand(len(index), -1, -1)
                total += self.encoder.prompted_features(self.corpus, index, rows, insert).double().sum(0)
        return (total / self.corpus.size).float().cpu()

    # ---- one optimiser step for every active slot -----------------------------------------
    def _step(self, active: list[int], slots: list[_Slot | None], on_step: Callable[[StepInfo], None] | None) -> list[int]:
        config, size = self.config, self.config.batch_size
        live = [slots[i] for i in active]
        rows_np = [s.order[s.batch * size : (s.batch + 1) * size] for s in live]
        insert = torch.cat([draw_insertions(self.corpus, r, s.rng) for r, s in zip(rows_np, live)])
        index = torch.from_numpy(np.concatenate(rows_np)).to(self.corpus.device)
        act = torch.tensor(active, device=self.prompts.device)
        rows = self.prompts[act.repeat_interleave(size)]  # [S_a·B, l_sp, d_emb], grad flows to the prompts
        features = self.encoder.prompted_features(self.corpus, index, rows, insert)
        features = features.view(len(active), size, -1)  # [S_a, B, d]
        if config.aux == "recompute":  # the reference's pseudo-siamese copy, run every step
            aux = self.encoder.clean_features(self.corpus, index).view_as(features)
        else:
            aux = self.aux[index].view_as(features)
        dist = distance_loss(features, aux)  # [S_a]
        div = diversity_loss(features, self.div_scale)
        path = path_loss(features, self.accepted, farthest=config.path_target == "farthest")
        loss = total_loss(dist, div, path, lambda_dist=config.lambda_dist, lambda_div=config.lambda_div,
                          lambda_path=config.lambda_path).sum()  # slots are independent: sum their losses
        self.prompts.grad = None
        loss.backward()
        grad = self.prompts.grad[act]  # [S_a, l_sp, d_emb]
        lrs = torch.tensor([s.lr for s in live], device=grad.device)
        self._adam(act, grad, lrs)
        peak = grad_peak(grad, config.grad_test)
        values = torch.stack([dist, div, path]).detach().T.tolist()  # [S_a, 3]
        means = features.detach().mean(dim=1) if config.pv_average == "last_batch" else None
        finished = []
        for k, (i, slot) in enumerate(zip(active, live)):
            if slot.switched_at is None and float(peak[k]) > config.grad_threshold:
                slot.lr, slot.switched_at = self.lr, slot.step
            for j in range(3):
                slot.sums[j] += values[k][j]
            if on_step is not None:
                on_step(StepInfo(i, slot.seed, slot.step + 1, self.steps_per_loop, slot.epoch, *values[k]))
            slot.step += 1
            slot.batch += 1
            if slot.batch < self.batches:
                continue
            if means is not None:
                slot.last_mean = means[k].cpu()
            slot.epochs.append(EpochStats(*(value / self.batches for value in slot.sums)))
            slot.epoch, slot.batch, slot.sums = slot.epoch + 1, 0, [0.0, 0.0, 0.0]
            slot.order = self._epoch_order(slot.rng)
            if self._loop_over(slot):
                finished.append(i)
        return finished

    def _loop_over(self, slot: _Slot) -> bool:
        """At an epoch's end: has the loop finished (all epochs, early accept, or abort)?"""
        config, last = self.config, slot.epochs[-1]
        done = slot.epoch >= config.epochs
        converged = last.dist < self.t_l
        accept = (config.early_accept and slot.epoch >= config.abort_after_epoch and converged
                  and last.div < self.t_div)
        abort = slot.epoch == config.abort_after_epoch and not converged
        if config.abort_div_margin and slot.epoch == config.abort_after_epoch:
            abort = abort or not last.div < -math.log(config.batch_size) + config.abort_div_margin
        if config.early_abort_frac and slot.epoch < config.abort_after_epoch:
            abort = abort or not last.dist < config.early_abort_frac * self.t_l
        return done or accept or abort

    def _adam(self, act: torch.Tensor, grad: torch.Tensor, lrs: torch.Tensor) -> None:
        """One Adam update of the active slots' prompts with per-slot rates (torch.optim.Adam math)."""
        beta1, beta2 = BETAS
        with torch.no_grad():
            m = self.m[act].mul_(beta1).add_(grad, alpha=1 - beta1)
            v = self.v[act].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            t = self.t[act] + 1
            self.m[act], self.v[act], self.t[act] = m, v, t
            correction1 = 1 - beta1**t  # [S_a]
            correction2 = (1 - beta2**t).sqrt()
            denom = v.sqrt() / correction2.view(-1, 1, 1) + EPS
            step = (lrs / correction1).view(-1, 1, 1) * m / denom
            updated = self.prompts[act] - step
            if self.bounds is not None:
                updated = torch.minimum(torch.maximum(updated, self.bounds[0]), self.bounds[1])
            self.prompts[act] = updated


__all__ = ["FinishedLoop", "FuzzEngine", "StepInfo", "grad_peak"]
