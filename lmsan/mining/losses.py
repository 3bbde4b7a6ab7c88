"""The three mining losses (method.md §1), batched over fuzz loops trained side by side.

Every function takes features with any number of leading "loop" axes: ``[..., B, d]``, and returns
one value per loop ``[...]``. torch only; must not import lmsan.attacks.
"""

from __future__ import annotations

import torch


def distance_loss(features: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
    """Return ``L_D = −MSE(F, A)`` per loop (mean over ``B·d``).

    Args:
        features: float [..., B, d], target-position outputs with the prompt.
        aux: float [..., B, d], the same sentences' outputs without it.

    Returns:
        float [...], ``<= 0``, in squared output units.
    """
    return -(features - aux).pow(2).mean(dim=(-2, -1))


def diversity_loss(features: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Return ``L_div = −(1/d)·Σ_j H(softmax_b(F[:, j] / sqrt(scale)))`` per loop.

    Args:
        features: float [..., B, d].
        scale: divide the features by ``sqrt(scale)`` before the softmax; 1 gives the paper's
            definition on raw values, ``feature_scale`` makes it scale-free.

    Returns:
        float [...] in ``[−log B, 0]``; ``−log B`` when every row of the batch is identical.
    """
    logits = features if scale == 1.0 else features / scale**0.5
    log_p = torch.log_softmax(logits, dim=-2)  # softmax over the batch axis
    entropy = -(log_p.exp() * log_p).sum(dim=-2)  # [..., d]
    return -entropy.mean(dim=-1)


def path_loss(features: torch.Tensor, accepted: torch.Tensor | None, *, farthest: bool = False) -> torch.Tensor:
    """Return ``L_P = −MSE(F, c*)`` per loop, ``c*`` the accepted PV nearest to the batch.

    ``c*`` is chosen without gradient, then the MSE to it is recomputed with gradient (method.md
    §1; paper eq. 7 picks the farthest, ``farthest=True``). Zero while no PV is accepted.

    Args:
        features: float [..., B, d].
        accepted: float [K, d] accepted PVs, or ``None`` / ``K = 0``.
        farthest: pick the farthest PV instead.

    Returns:
        float [...], ``<= 0``.
    """
    if accepted is None or accepted.shape[0] == 0:
        return features.new_zeros(features.shape[:-2])
    with torch.no_grad():
        # MSE(F, c_k) over B·d = mean_b ||F_b||²/d − 2 F̄·c_k/d + ||c_k||²/d, for all k at once
        mean_sq = features.pow(2).mean(dim=(-2, -1))  # [...]
        cross = features.mean(dim=-2) @ accepted.T / features.shape[-1]  # [..., K]
        mse = mean_sq.unsqueeze(-1) - 2 * cross + accepted.pow(2).mean(dim=-1)  # [..., K]
        pick = mse.argmax(dim=-1) if farthest else mse.argmin(dim=-1)  # [...]
    chosen = accepted[pick]  # [..., d]
    return -(features - chosen.unsqueeze(-2)).pow(2).mean(dim=(-2, -1))


def total_loss(dist: torch.Tensor, div: torch.Tensor, path: torch.Tensor, *, lambda_dist: float,
               lambda_div: float, lambda_path: float) -> torch.Tensor:
    """Return ``L = λ_D·L_D + λ_div·L_div + λ_P·L_P`` per loop (float [...])."""
    return lambda_dist * dist + lambda_div * div + lambda_path * path


__all__ = ["distance_loss", "diversity_loss", "path_loss", "total_loss"]
