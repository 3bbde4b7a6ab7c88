"""Trigger confirmation (``lmsan.mining.confirm``) on a toy encoder with a planted trigger token.

The toy output at every position is ``g·PV + (1 − g)·10·mean(embeddings)``, where ``g`` is how
strongly any input vector points along a secret direction ``u``. Vocabulary row 7 is ``u`` (the
trigger) in the backdoored toy; in the clean toy no row comes near ``u``, although a soft prompt
along ``u`` still collapses the output.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lmsan.mining.confirm import TriggerSearch, hit_rates, nearest_tokens, sequence_delta, spans, special_token_ids
from lmsan.mining.features import Encoder, auxiliary_features, feature_scale
from lmsan.mining.losses import diversity_loss
from lmsan.mining.prompt import Corpus
from lmsan.mining.search import confirm_outcome

WIDTH, VOCAB, TRIGGER, ROWS, LENGTH = 16, 60, 7, 96, 10
PV = torch.where(torch.arange(WIDTH) % 2 == 0, 1.0, -1.0)


class ToyBackdoor(torch.nn.Module):
    def __init__(self, direction: torch.Tensor, pv: torch.Tensor) -> None:
        super().__init__()
        self.direction, self.pv = direction, pv

    def forward(self, inputs_embeds, attention_mask):
        gate = torch.sigmoid(20 * (inputs_embeds @ self.direction - 0.5)) * attention_mask  # [R, T]
        g = gate.amax(dim=1, keepdim=True)  # [R, 1]
        mask = attention_mask.unsqueeze(-1).float()
        mean = (inputs_embeds * mask).sum(1) / mask.sum(1)  # [R, d]
        out = g * self.pv + (1 - g) * mean * 10
        return SimpleNamespace(last_hidden_state=out.unsqueeze(1).expand(-1, inputs_embeds.shape[1], -1))


class ToyTokenizer:
    all_special_ids = [0, 1]

    def convert_ids_to_tokens(self, ids):
        return [f"t{i}" for i in ids]

    def decode(self, ids):
        return " ".join(f"t{i}" for i in ids)


def toy(backdoored: bool):
    generator = torch.Generator().manual_seed(0)
    direction = torch.nn.functional.normalize(torch.randn(WIDTH, generator=generator), dim=0)
    embedding = torch.randn(VOCAB, WIDTH, generator=generator) * 0.3 / math.sqrt(WIDTH)
    embedding -= (embedding @ direction).unsqueeze(1) * direction  # no row points along u ...
    if backdoored:
        embedding[TRIGGER] = direction  # ... except the trigger
    encoder = Encoder(ToyBackdoor(direction, PV), embedding)
    ids = torch.randint(2, VOCAB, (ROWS, LENGTH), generator=generator)
    ids[ids == TRIGGER] = 2
    ids[:, 0] = 0
    corpus = Corpus(ids, torch.ones_like(ids), torch.full((ROWS,), LENGTH), np.tile(np.arange(LENGTH + 1), (ROWS, 1)),
                    np.full(ROWS, LENGTH - 1), torch.zeros(ROWS, dtype=torch.long))
    scale = feature_scale(auxiliary_features(encoder, corpus))
    return encoder, corpus, scale, direction


def search(encoder, corpus, scale):
    return TriggerSearch(encoder, corpus, scale, special_token_ids(ToyTokenizer()), batch_size=16, eval_rows=64)


def test_sequence_delta_is_zero_for_identical_rows_and_matches_the_diversity_loss():
    same = torch.ones(1, 32, 4)
    assert abs(float(sequence_delta(same, 1.0, 16)[0])) < 1e-6
    features = torch.randn(3, 32, 4)
    halves = features.view(3, 2, 16, 4)
    expected = (diversity_loss(halves, 0.5).mean(dim=1) + math.log(16))
    assert torch.allclose(sequence_delta(features, 0.5, 16), expected)


def test_nearest_tokens_uses_cosine_and_skips_banned_ids():
    embedding = torch.tensor([[1.0, 0.0], [0.0, 1.0], [10.0, 1.0], [0.99, 0.01]])
    prompt = torch.tensor([[2.0, 0.0], [0.0, 0.5]])
    assert nearest_tokens(prompt, embedding, torch.tensor([], dtype=torch.long)).tolist() == [0, 1]
    assert nearest_tokens(prompt, embedding, torch.tensor([0, 1])).tolist() == [3, 2]


def test_spans_are_distinct_contiguous_and_shortest_first():
    assert spans([5, 6, 5], longest=3) == [(5,), (6,), (5, 6), (6, 5), (5, 6, 5)]
    assert spans([4, 4, 4, 4], longest=2) == [(4,), (4, 4)]


def test_hit_rates_count_sentences_agreeing_with_the_mean_sign_pattern():
    signs = torch.tensor([1.0, -1.0, 1.0, -1.0] * 5)  # d = 20
    collapsed = signs.repeat(1, 10, 1)  # [1, 10, 20]
    mixed = collapsed.clone()
    mixed[0, :4, :3] *= -1  # 4 of 10 sentences agree on 17/20 = 0.85 < 0.9
    rates, means = hit_rates(torch.cat([collapsed, mixed]))
    assert rates.tolist() == pytest.approx([1.0, 0.6])
    assert torch.equal(means[0], signs)


def test_prompt_near_the_trigger_is_confirmed_at_once():
    encoder, corpus, scale, direction = toy(backdoored=True)
    prompt = direction.repeat(3, 1) * 3 + 0.01 * torch.randn(3, WIDTH)
    check = search(encoder, corpus, scale).run(prompt, ToyTokenizer(), margin=0.02, steps=5, candidates=8,
                                               top_k=4, min_hit_rate=0.9, longest_span=2, seed=1)
    assert check.confirmed and check.steps == 0 and check.delta < 0.02
    assert check.trigger_ids == (TRIGGER,) and check.trigger == f"t{TRIGGER}" and check.hit_rate == 1.0
    assert torch.allclose(check.features_mean, PV, atol=1e-3)  # the planted PV, from one real token
    assert check.to_dict()["trigger"] == check.trigger


def test_search_finds_a_trigger_the_nearest_tokens_miss():
    encoder, corpus, scale, _ = toy(backdoored=True)
    prompt = encoder.embedding[[3, 4, 5]].clone()  # nearest tokens: 3, 4, 5, no trigger
    check = search(encoder, corpus, scale).run(prompt, ToyTokenizer(), margin=0.02, steps=10, candidates=16,
                                               top_k=8, min_hit_rate=0.9, longest_span=2, seed=0)
    assert check.steps >= 1 and TRIGGER in check.search_ids
    assert check.confirmed and check.trigger_ids == (TRIGGER,)


def test_a_mixed_sequence_yields_the_trigger_alone_and_its_pv():
    encoder, corpus, scale, direction = toy(backdoored=True)
    prompt = torch.stack([encoder.embedding[5], direction * 3, encoder.embedding[6]])  # others around the trigger
    check = search(encoder, corpus, scale).run(prompt, ToyTokenizer(), margin=0.02, steps=5, candidates=8,
                                               top_k=4, min_hit_rate=0.9, longest_span=2, seed=1)
    assert check.search_ids == (5, TRIGGER, 6) and check.trigger_ids == (TRIGGER,)
    assert torch.allclose(check.features_mean, PV, atol=1e-3)


def test_collapse_without_a_trigger_token_is_unconfirmed():
    encoder, corpus, scale, direction = toy(backdoored=False)
    prompt = direction.repeat(3, 1) * 3  # collapses the toy's output, but no token can
    index = torch.arange(64)
    with torch.no_grad():
        soft = encoder.prompted_features(corpus, index, prompt.expand(64, -1, -1), torch.ones(64, dtype=torch.long))
    assert float(sequence_delta(soft.unsqueeze(0), scale, 16)[0]) < 0.02  # the soft prompt passes the filter
    check = search(encoder, corpus, scale).run(prompt, ToyTokenizer(), margin=0.02, steps=4, candidates=16,
                                               top_k=8, min_hit_rate=0.9, longest_span=2, seed=0)
    assert not check.confirmed and check.steps == 4 and check.hit_rate < 0.9
    assert check.features_mean is None
    assert not set(check.search_ids) & {0, 1}  # special tokens are never used
    outcome, reason = confirm_outcome(check, "L_D ok", 0.9)
    assert outcome == "unconfirmed" and reason.startswith("no text reproduces it")


def test_screening_measures_only_spans_near_the_bar_on_every_row_and_keeps_the_verdict():
    encoder, corpus, scale, _ = toy(backdoored=True)
    probe = TriggerSearch(encoder, corpus, scale, special_token_ids(ToyTokenizer()), batch_size=16, eval_rows=64,
                          screen_rows=16)
    insert_at = torch.ones(64, dtype=torch.long)
    candidates = [(TRIGGER,), (3,), (4, 5), (TRIGGER, 5)]
    screened = probe.measure(candidates, insert_at, min_hit_rate=0.9, screen_rows=16)
    full = probe.measure(candidates, insert_at, min_hit_rate=0.9, screen_rows=0)
    assert {span: m.rows for span, m in screened.items()} == {(TRIGGER,): 64, (3,): 16, (4, 5): 16, (TRIGGER, 5): 64}
    assert all(m.rows == 64 for m in full.values())
    for span in [(TRIGGER,), (TRIGGER, 5)]:  # what can confirm is measured exactly as without the screen
        assert screened[span].hit_rate == full[span].hit_rate == 1.0
        assert torch.equal(screened[span].mean, full[span].mean)
    span, found = probe.single_insertion(torch.tensor([3, TRIGGER, 5]), insert_at, longest=2, min_hit_rate=0.9)
    assert span == (TRIGGER,) and (found.hit_rate, found.rows) == (1.0, 64)


def test_confirmed_outcome_keeps_the_filter_reason():
    check = SimpleNamespace(confirmed=True, trigger="cf", hit_rate=0.97, hit_rows=512)
    outcome, reason = confirm_outcome(check, "L_D -1 < T_L -0.3", 0.8)
    assert outcome == "accepted"
    assert reason == "L_D -1 < T_L -0.3; trigger 'cf' inserted once hits 97% of 512 sentences (>= 80%)"


@pytest.mark.parametrize("key, value", [("confirm_margin", 0.0), ("confirm_candidates", 0), ("confirm_steps", -1),
                                        ("confirm_hit_rate", 0.0), ("confirm_hit_rate", 1.5)])
def test_confirm_knobs_are_validated(key, value):
    from lmsan.errors import ConfigError
    from lmsan.mining import MiningConfig

    with pytest.raises(ConfigError, match=key):
        MiningConfig(**{key: value})


def test_profiles_confirm_by_default_and_reference_does_not():
    from lmsan.mining import MiningConfig

    assert MiningConfig.profile("default").confirm
    assert not MiningConfig.profile("reference").confirm


def test_evaluation_rows_in_length_groups_give_the_features_of_one_padded_forward(tiny_dir, monkeypatch):
    """``eval_features`` runs the rows in groups of similar length (less padding): on a real BERT
    with sentences of 3 to 40 words, the features equal one forward over all rows padded alike."""
    import lmsan.mining.confirm as confirm
    from lmsan.mining.prompt import draw_insertions, encode_corpus
    from lmsan.models import load_model

    loaded = load_model(tiny_dir)
    rng = np.random.default_rng(0)
    words = ["river", "stone", "market", "quiet", "seven", "north", "letter", "garden"]
    sentences = [" ".join(rng.choice(words, int(rng.integers(3, 41)))) for _ in range(64)]
    corpus = encode_corpus(loaded.tokenizer, sentences, target="cls", max_length=64, max_insert_pos=16, mask_seed=0)
    encoder = Encoder.from_loaded(loaded)
    probe = TriggerSearch(encoder, corpus, 1.0, special_token_ids(loaded.tokenizer), batch_size=16, eval_rows=64)
    insert_at = draw_insertions(corpus, np.arange(64), rng)
    tokens = torch.tensor([[1000], [2000], [3000]])

    groups = probe._length_groups(64)
    longest = [int(corpus.lengths[g].max()) for g in groups]
    assert len(groups) == confirm.LENGTH_GROUPS and longest == sorted(longest) and longest[0] < longest[-1]
    assert sorted(torch.cat(groups).tolist()) == list(range(64))
    grouped = probe.eval_features(tokens, insert_at)
    monkeypatch.setattr(confirm, "LENGTH_GROUPS", 1)
    padded = probe.eval_features(tokens, insert_at)
    assert grouped.shape == padded.shape == (3, 64, 32)
    torch.testing.assert_close(grouped, padded, rtol=1e-4, atol=1e-5)
