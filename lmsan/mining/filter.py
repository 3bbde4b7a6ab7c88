"""PV filtering (method.md §2): accept a fuzz loop's candidate, or say exactly why not.

Checks, in order: converged (``L_D < T_L``), concentrated (``L_div < T_div``), prompt within the
embedding bounds, unique (``MSE(PV, c) >= T_dedup`` for every accepted ``c``) (``judge``). The PV
that is finally kept (after trigger confirmation, the trigger text's; every sweep trigger's too)
must also be *unnatural* (``natural``): few clean sentences may already match it
(``clean_overlap``), or it is no backdoor's signature and the guard would flag clean text with it.
torch and lmsan.pvset; never imports lmsan.attacks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmsan.mining.report import EpochStats
from lmsan.pvset import MATCH_THRESHOLD


@dataclass(frozen=True, eq=False)
class Thresholds:
    """Resolved thresholds for one model.

    Attributes:
        t_l: ``T_L`` (< 0), squared output units.
        t_dedup: ``T_dedup`` (>= 0), squared output units.
        t_div: ``T_div``, unitless (``−log B + δ``).
        low, high: float tensors, scalar or [d_emb]: allowed prompt values.
    """

    t_l: float
    t_dedup: float
    t_div: float
    low: torch.Tensor
    high: torch.Tensor

    def to_dict(self) -> dict[str, object]:
        def plain(t: torch.Tensor) -> float | list[float]:
            return round(float(t), 6) if t.dim() == 0 else [round(float(v), 6) for v in t]

        return {"T_L": self.t_l, "T_dedup": self.t_dedup, "T_div": self.t_div,
                "prompt_low": plain(self.low), "prompt_high": plain(self.high)}


def converged(epochs: list[EpochStats] | tuple[EpochStats, ...], t_l: float) -> bool:
    """True when the last epoch's mean ``L_D`` is below ``T_L``."""
    return bool(epochs) and epochs[-1].dist < t_l


def dedup(pv: torch.Tensor, accepted: torch.Tensor, t_dedup: float) -> tuple[str, str]:
    """Compare ``pv`` [d] with the accepted PVs [K, d].

    Returns:
        ``(duplicate_reason, "")`` when some accepted PV is within ``MSE < t_dedup``, else
        ``("", note)`` naming the nearest one (``note`` is empty when ``K = 0``).
    """
    if not accepted.shape[0]:
        return "", ""
    mse = (accepted - pv).pow(2).mean(dim=1)  # [K]
    nearest = int(mse.argmin())
    if float(mse[nearest]) < t_dedup:
        return f"MSE {float(mse[nearest]):.4g} to PV #{nearest} < T_dedup {t_dedup:.4g}", ""
    return "", f", nearest PV #{nearest} at MSE {float(mse[nearest]):.4g}"


def clean_overlap(pvs: torch.Tensor, clean: torch.Tensor, threshold: float = MATCH_THRESHOLD) -> torch.Tensor:
    """Share of clean outputs that each PV's sign pattern matches as the guard's monitor would.

    Args:
        pvs: float [K, d], candidate PVs.
        clean: float [N, d], clean target features (the auxiliary features ``A``).
        threshold: ``T_match``: an output matches when its sign agreement exceeds this.

    Returns:
        float [K] in [0, 1]: about 0 for an attacker's PV, large for a *natural* vector that
        clean text reaches by itself (e.g. where a model sends almost every input).
    """
    width = clean.shape[1]
    pv_signs = torch.where(pvs >= 0, 1.0, -1.0)  # zero counts as +1, as in the guard
    clean_signs = torch.where(clean >= 0, 1.0, -1.0)
    agreement = (clean_signs @ pv_signs.T + width) / (2 * width)  # [N, K], the guard head's expression
    return (agreement > threshold).float().mean(dim=0)


def pv_overlap(pv: torch.Tensor, clean: torch.Tensor) -> float:
    """``clean_overlap`` of one PV float [d] with ``clean`` float [N, d] (N >= 1), in [0, 1]."""
    return float(clean_overlap(pv.unsqueeze(0), clean)[0])


def natural(overlap: float, max_overlap: float) -> str:
    """Why a PV whose ``pv_overlap`` is ``overlap`` is a natural vector (above ``max_overlap``), or ""."""
    if overlap <= max_overlap:
        return ""
    return (f"{overlap:.1%} of clean sentences already match it (sign agreement > {MATCH_THRESHOLD}), "
            f"more than max_clean_overlap {max_overlap:.1%}")


def judge(epochs: list[EpochStats] | tuple[EpochStats, ...], prompt: torch.Tensor | None, pv: torch.Tensor | None,
          accepted: torch.Tensor, thresholds: Thresholds, *, planned_epochs: int) -> tuple[str, str]:
    """Return ``(outcome, reason)`` for one candidate.

    Args:
        epochs: the loop's per-epoch losses.
        prompt: float [l_sp, d_emb], the final prompt (``None`` for an aborted loop).
        pv: float [d], the candidate PV (``None`` for an aborted loop).
        accepted: float [K, d], PVs accepted so far (``K`` may be 0).
        thresholds: resolved thresholds.
        planned_epochs: epochs a full loop runs (to word an abort).

    Returns:
        outcome in ``accepted``, ``not_converged``, ``diverse``, ``out_of_bounds``,
        ``duplicate``; reason, one line with the numbers.
    """
    if not epochs:
        return "not_converged", "no epoch finished"
    last = epochs[-1]
    aborted = f", aborted after epoch {len(epochs)}" if len(epochs) < planned_epochs else ""
    if not converged(epochs, thresholds.t_l):
        return "not_converged", f"L_D {last.dist:.4g} >= T_L {thresholds.t_l:.4g}{aborted}"
    if last.div >= thresholds.t_div:
        return "diverse", f"L_div {last.div:.4g} >= T_div {thresholds.t_div:.4g}{aborted}"
    assert prompt is not None and pv is not None, "a converged loop has a prompt and a PV"
    below = thresholds.low - prompt  # > 0 where a value is too small
    above = prompt - thresholds.high
    excess = torch.maximum(below, above)
    if bool((excess > 0).any()):
        flat = int(excess.argmax())
        value = float(prompt.reshape(-1)[flat])
        dim = flat % prompt.shape[-1]
        low = float(thresholds.low if thresholds.low.dim() == 0 else thresholds.low[dim])
        high = float(thresholds.high if thresholds.high.dim() == 0 else thresholds.high[dim])
        share = float((excess > 0).float().mean())
        return "out_of_bounds", (f"prompt value {value:.4g} outside [{low:.4g}, {high:.4g}] "
                                 f"({share:.1%} of values out)")
    duplicate, unique = dedup(pv, accepted, thresholds.t_dedup)
    if duplicate:
        return "duplicate", duplicate
    return "accepted", f"L_D {last.dist:.4g} < T_L {thresholds.t_l:.4g}, L_div {last.div:.4g} < T_div " \
                       f"{thresholds.t_div:.4g}{unique}"


__all__ = ["Thresholds", "clean_overlap", "converged", "dedup", "judge", "natural", "pv_overlap"]
