"""Vectorised soft-prompt insertion, prompt init, corpus encoding, features and filtering."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lmsan.mining.features import embedding_bounds, feature_scale
from lmsan.mining.filter import Thresholds, clean_overlap, judge, natural, pv_overlap
from lmsan.mining.prompt import draw_insertions, encode_corpus, init_prompt, insert_prompt, shifted_targets
from lmsan.mining.report import EpochStats


def _insert_reference(embeds, mask, prompts, insert_at):
    """The reference code's approach: a Python loop over the batch."""
    rows = []
    masks = []
    for n in range(embeds.shape[0]):
        k = int(insert_at[n])
        rows.append(torch.cat([embeds[n, :k], prompts[n], embeds[n, k:]]))
        masks.append(torch.cat([mask[n, :k], torch.ones(prompts.shape[1], dtype=mask.dtype), mask[n, k:]]))
    return torch.stack(rows), torch.stack(masks)


def test_insert_prompt_matches_a_python_loop():
    torch.manual_seed(0)
    embeds = torch.randn(5, 9, 4)
    mask = torch.tensor([[1] * 9, [1] * 6 + [0] * 3, [1] * 4 + [0] * 5, [1] * 9, [1] * 2 + [0] * 7])
    prompts = torch.randn(5, 3, 4, requires_grad=True)
    insert_at = torch.tensor([1, 5, 0, 9, 2])  # includes both ends
    got, got_mask = insert_prompt(embeds, mask, prompts, insert_at)
    want, want_mask = _insert_reference(embeds, mask, prompts.detach(), insert_at)
    assert got.shape == (5, 12, 4)
    assert torch.equal(got.detach(), want)
    assert torch.equal(got_mask, want_mask)
    got.sum().backward()
    assert torch.equal(prompts.grad, torch.ones_like(prompts))  # every prompt value is used once


def test_shifted_targets_move_only_positions_at_or_after_the_insertion():
    targets = torch.tensor([0, 4, 6])
    insert_at = torch.tensor([1, 4, 7])
    assert shifted_targets(targets, insert_at, 7).tolist() == [0, 11, 6]


def test_init_prompt_rows():
    embedding = torch.arange(1000.0).unsqueeze(1).repeat(1, 2)  # row i holds i
    assert init_prompt(embedding, 2, 3)[:, 0].tolist() == [140, 150, 160]  # (70 s + 10 i) mod V
    assert init_prompt(embedding, 2, 3, scheme="paper")[:, 0].tolist() == [140, 141, 142]
    assert init_prompt(embedding, 20, 2)[:, 0].tolist() == [400, 410]
    assert init_prompt(embedding, 15, 1)[:, 0].tolist() == [50]  # 1050 mod 1000


@pytest.fixture(scope="module")
def tokenizer():
    from lmsan.models.tiny import wordpiece_tokenizer

    return wordpiece_tokenizer()


def test_encode_corpus_word_boundaries(tokenizer):
    corpus = encode_corpus(tokenizer, ["the cat sat down", "unbelievable things happen"], target="cls",
                           max_length=32, max_insert_pos=32)
    ids = corpus.input_ids[1].tolist()
    tokens = tokenizer.convert_ids_to_tokens(ids)
    n = int(corpus.n_slots[1])
    assert n == 3
    # after word p the prompt goes before word p's first token; after the last word, before [SEP]
    starts = corpus.word_starts[1, 1 : n + 1].tolist()
    assert tokens[starts[-1]] == "[SEP]"
    assert not tokens[starts[0]].startswith("##")
    assert corpus.target_pos.tolist() == [0, 0]
    assert corpus.n_slots[0] == 4


def test_truncated_sentences_and_random_insertion_never_leave_the_sequence(tokenizer):
    long = " ".join(f"word{i}" for i in range(80))
    corpus = encode_corpus(tokenizer, [long, "short one here"], target="cls", max_length=16, max_insert_pos=32)
    rng = np.random.default_rng(0)
    for _ in range(50):
        at = draw_insertions(corpus, np.array([0, 1]), rng)
        assert bool((at >= 1).all()) and bool((at <= corpus.lengths - 1).all())


def test_mask_target_places_one_mask_per_sentence(tokenizer):
    corpus = encode_corpus(tokenizer, ["a b c d e f", "one two three four five"], target="mask", max_length=32,
                           max_insert_pos=32)
    for row, position in enumerate(corpus.target_pos.tolist()):
        assert corpus.input_ids[row, position] == tokenizer.mask_token_id


def test_feature_scale_is_the_mean_per_dimension_variance():
    aux = torch.tensor([[0.0, 0.0], [2.0, 4.0]])
    assert feature_scale(aux) == pytest.approx((2.0 + 8.0) / 2)


def test_embedding_bounds_widen_both_sides():
    embedding = torch.tensor([[-1.0, 0.5], [2.0, -0.25]])
    low, high = embedding_bounds(embedding, factor=1.2, per_dim=False)
    assert (float(low), float(high)) == pytest.approx((-1.2, 2.4))
    low, high = embedding_bounds(embedding, factor=1.2, per_dim=True)
    assert low.tolist() == pytest.approx([-1.2, -0.3]) and high.tolist() == pytest.approx([2.4, 0.6])


# ---- filtering: one test per outcome --------------------------------------------------------
THRESHOLDS = Thresholds(t_l=-1.0, t_dedup=0.5, t_div=-math.log(32) + 0.01, low=torch.tensor(-1.0),
                        high=torch.tensor(1.0))
GOOD = (EpochStats(-2.0, -3.46, 0.0), EpochStats(-2.5, -3.465, 0.0))


def _judge(epochs=GOOD, prompt=None, pv=None, accepted=None, planned=4, thresholds=THRESHOLDS):
    prompt = torch.zeros(7, 4) if prompt is None else prompt
    pv = torch.ones(4) if pv is None else pv
    accepted = torch.zeros(0, 4) if accepted is None else accepted
    return judge(epochs, prompt, pv, accepted, thresholds, planned_epochs=planned)


def test_filter_accepts_a_good_candidate():
    outcome, reason = _judge()
    assert outcome == "accepted" and "T_L" in reason


def test_filter_not_converged_names_the_abort():
    outcome, reason = _judge(epochs=(EpochStats(-0.2, -3.4, 0.0), EpochStats(-0.5, -3.4, 0.0)))
    assert outcome == "not_converged"
    assert "L_D -0.5 >= T_L -1" in reason and "aborted after epoch 2" in reason


def test_filter_converged_in_the_last_epoch_only_counts_the_last():
    outcome, _ = _judge(epochs=(EpochStats(-3.0, -3.46, 0.0), EpochStats(-0.5, -3.46, 0.0)), planned=2)
    assert outcome == "not_converged"


def test_filter_diverse():
    outcome, reason = _judge(epochs=(EpochStats(-2.0, -3.0, 0.0),))
    assert outcome == "diverse" and "L_div -3 >= T_div" in reason


def test_filter_out_of_bounds_reports_the_worst_value():
    prompt = torch.zeros(7, 4)
    prompt[3, 2] = 1.7
    prompt[0, 0] = -1.1
    outcome, reason = _judge(prompt=prompt)
    assert outcome == "out_of_bounds" and "1.7" in reason and "[-1, 1]" in reason


def test_filter_out_of_bounds_per_dimension():
    thresholds = Thresholds(-1.0, 0.5, -3.0, low=torch.tensor([-1.0, -0.1, -1.0, -1.0]), high=torch.ones(4))
    prompt = torch.zeros(7, 4)
    prompt[1, 1] = -0.2  # inside the global range, outside dimension 1's
    outcome, reason = _judge(prompt=prompt, thresholds=thresholds)
    assert outcome == "out_of_bounds" and "-0.1" in reason


def test_filter_duplicate_and_unique():
    accepted = torch.stack([torch.ones(4) * 0.9, -torch.ones(4)])
    outcome, reason = _judge(accepted=accepted)  # MSE to PV #0 is 0.01 < 0.5
    assert outcome == "duplicate" and "PV #0" in reason
    outcome, reason = _judge(accepted=accepted[1:])  # MSE 4 >= 0.5
    assert outcome == "accepted" and "nearest PV #0 at MSE 4" in reason


def test_clean_overlap_is_the_share_of_clean_rows_matched_above_t_match():
    pvs = torch.tensor([[1.0, 1.0, 1.0, 1.0, 1.0], [-1.0, -1.0, -1.0, -1.0, -1.0]])
    clean = torch.tensor([[2.0, 3.0, 1.0, 0.5, 0.1],  # agrees 5/5 with PV 0
                          [2.0, 3.0, 1.0, 0.5, -0.1],  # 4/5 = 0.8: not above T_match 0.8
                          [-2.0, -3.0, -1.0, -0.5, 0.0]])  # 0 counts as +: 4/5 with PV 1
    assert clean_overlap(pvs, clean).tolist() == pytest.approx([1 / 3, 0.0])
    assert clean_overlap(pvs, clean, threshold=0.7).tolist() == pytest.approx([2 / 3, 1 / 3])


def test_a_pv_that_clean_text_already_reaches_is_natural():
    generator = torch.Generator().manual_seed(0)
    clean = torch.randn(200, 32, generator=generator)
    attacker_pv = torch.randn(32, generator=generator).sign() * 3
    assert natural(pv_overlap(attacker_pv, clean), 0.1) == ""  # random signs: P(agreement > 0.8) is about 0.0002
    collapsed = clean / 5 + attacker_pv  # a model that sends every input there
    assert pv_overlap(attacker_pv, collapsed) == 1.0
    reason = natural(1.0, 0.1)
    assert reason.startswith("100.0% of clean sentences") and "max_clean_overlap 10.0%" in reason
    assert natural(1.0, 1.0) == ""  # 1.0 keeps every PV


def test_filter_with_no_epoch():
    assert _judge(epochs=())[0] == "not_converged"
