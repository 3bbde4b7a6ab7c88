"""The three mining losses against hand-computed values (method.md §1)."""

from __future__ import annotations

import math

import pytest
import torch

from lmsan.mining.losses import distance_loss, diversity_loss, path_loss, total_loss


def test_distance_is_minus_mse_over_batch_and_dims():
    features = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    aux = torch.tensor([[1.0, 0.0], [0.0, 4.0]])
    # squared errors 0, 4, 9, 0 -> mean 13/4
    assert distance_loss(features, aux).item() == pytest.approx(-13 / 4)


def test_diversity_of_identical_rows_is_minus_log_b():
    features = torch.tensor([[0.3, -1.0, 2.0]]).repeat(8, 1)  # B = 8
    assert diversity_loss(features).item() == pytest.approx(-math.log(8), abs=1e-6)


def test_diversity_hand_computed_softmax_entropy():
    # one dimension, B = 2: softmax([0, ln 3]) = [1/4, 3/4]
    features = torch.tensor([[0.0], [math.log(3.0)]])
    entropy = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert diversity_loss(features).item() == pytest.approx(-entropy, abs=1e-6)
    # averaged over dimensions: a second, constant dimension has entropy log 2
    two = torch.cat([features, torch.zeros(2, 1)], dim=1)
    assert diversity_loss(two).item() == pytest.approx(-(entropy + math.log(2)) / 2, abs=1e-6)


def test_scaled_diversity_divides_by_the_feature_std():
    features = torch.tensor([[0.0], [2 * math.log(3.0)]])
    # scale 4 -> features / 2 -> the hand-computed case above
    entropy = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert diversity_loss(features, 4.0).item() == pytest.approx(-entropy, abs=1e-6)


def test_diversity_stays_within_its_range():
    features = torch.randn(32, 16) * 5
    value = diversity_loss(features).item()
    assert -math.log(32) - 1e-6 <= value <= 0


def test_path_loss_is_zero_without_accepted_pvs():
    features = torch.randn(4, 3)
    assert path_loss(features, None).item() == 0.0
    assert path_loss(features, torch.zeros(0, 3)).item() == 0.0


def test_path_loss_uses_the_nearest_pv_and_the_farthest_on_request():
    features = torch.tensor([[0.0, 0.0], [2.0, 2.0]], requires_grad=True)
    accepted = torch.tensor([[1.0, 1.0], [5.0, 5.0]])
    # MSE to [1, 1]: (1 + 1 + 1 + 1) / 4 = 1; to [5, 5]: (25 + 25 + 9 + 9) / 4 = 17
    assert path_loss(features, accepted).item() == pytest.approx(-1.0)
    assert path_loss(features, accepted, farthest=True).item() == pytest.approx(-17.0)
    path_loss(features, accepted).backward()
    # d/dF of -mean((F - c)^2) = -2 (F - c) / (B d)
    expected = -2 * (features.detach() - accepted[0]) / 4
    assert torch.allclose(features.grad, expected)


def test_losses_batch_over_leading_loop_axes():
    features = torch.randn(3, 8, 5)  # [S, B, d]
    aux = torch.randn(3, 8, 5)
    accepted = torch.randn(2, 5)
    batched = (distance_loss(features, aux), diversity_loss(features), path_loss(features, accepted))
    for s in range(3):
        single = (distance_loss(features[s], aux[s]), diversity_loss(features[s]), path_loss(features[s], accepted))
        for got, want in zip(batched, single):
            assert got.shape == (3,)
            assert got[s].item() == pytest.approx(want.item(), rel=1e-5, abs=1e-6)


def test_total_loss_weights():
    value = total_loss(torch.tensor(-2.0), torch.tensor(-3.0), torch.tensor(-4.0),
                       lambda_dist=1.0, lambda_div=1.0, lambda_path=0.5)
    assert value.item() == pytest.approx(-2 - 3 - 2)
