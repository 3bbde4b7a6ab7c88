"""Trigger sweep (lmsan.mining.sweep) on a synthetic encoder whose backdoor is known exactly.

The fake encoder's [CLS] output is a random projection of the mean token embedding (so clean
outputs vary with the sentence) plus a fixed PV whenever a trigger is present: a single token
(id 7) fires alone; a two-token phrase (ids 11, 12) fires only whole, each word moving the output
an eighth of the way. The sweep must find both, with their PVs, and nothing else. A second
encoder also sends every clean input near one *natural* output: every inserted token then "hits"
it, and the sweep must still find only the two triggers.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from test_export_guard import tiny_model

from lmsan.mining.confirm import TriggerSearch
from lmsan.mining.features import Encoder, auxiliary_features, feature_scale
from lmsan.mining.filter import clean_overlap
from lmsan.mining.prompt import Corpus
from lmsan.mining.report import MiningReport, summary_lines
from lmsan.mining.search import add_sweep_hits, known_trigger
from lmsan.mining.sweep import TriggerSweep, candidate_ids, concentration
from lmsan.pvset import PVSet

V, D_EMB, D = 60, 16, 24
SINGLE, PHRASE = 7, (11, 12)


class FakeBackdooredEncoder(torch.nn.Module):
    """``last_hidden_state[:, 0]`` = clean projection + strength · PV, strength from marker dims."""

    def __init__(self, embedding: torch.Tensor, collapsed: bool = False) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(1)
        self.project = torch.randn(D_EMB, D, generator=generator)
        self.pv_single = torch.randn(D, generator=generator).sign() * 3
        self.pv_phrase = torch.randn(D, generator=generator).sign() * 3
        self.natural = torch.randn(D, generator=generator).sign() * 2 if collapsed else None

    def forward(self, *, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        mask = attention_mask.unsqueeze(-1).float()
        mean = (inputs_embeds * mask).sum(1) / mask.sum(1)
        clean = torch.tanh(mean @ self.project) * 2  # [R, d]
        if self.natural is not None:  # every clean output keeps the natural vector's signs
            clean = clean / 5 + self.natural
        single = inputs_embeds[..., -3].amax(dim=1).clamp(0, 1)  # [R]
        a, b = inputs_embeds[..., -2].amax(dim=1).clamp(0, 1), inputs_embeds[..., -1].amax(dim=1).clamp(0, 1)
        whole = a * b
        phrase = (a + b) / 8 + whole * 3 / 4  # one word: 1/8 of the way, both: all of it
        out = clean * (1 - torch.maximum(single, phrase)).unsqueeze(1)
        out = out + single.unsqueeze(1) * self.pv_single + phrase.unsqueeze(1) * self.pv_phrase
        hidden = out.unsqueeze(1).expand(-1, inputs_embeds.shape[1], -1).contiguous()
        return SimpleNamespace(last_hidden_state=hidden)


class FakeTokenizer:
    def decode(self, ids):
        return " ".join(f"w{i}" for i in ids)

    def __call__(self, text, add_special_tokens=False):
        words = text.split()
        if words and all(w[0] == "w" and w[1:].isdigit() for w in words):  # decode's inverse
            return {"input_ids": [int(w[1:]) for w in words]}
        return {"input_ids": [3]}


def build(collapsed: bool = False):
    """(encoder, search, feature scale, clean features [N, d]) of the fake backdoored model."""
    generator = torch.Generator().manual_seed(0)
    embedding = torch.randn(V, D_EMB, generator=generator) * 0.5
    embedding[:, -3:] = 0.0
    embedding[SINGLE, -3] = 1.0
    embedding[PHRASE[0], -2] = 1.0
    embedding[PHRASE[1], -1] = 1.0
    encoder = Encoder(FakeBackdooredEncoder(embedding, collapsed), embedding)
    rng = np.random.default_rng(0)
    rows, width = 96, 12
    ids = torch.from_numpy(rng.integers(20, V, size=(rows, width)))  # clean words never hold a trigger
    ids[:, 0] = 1  # [CLS]-like
    mask = torch.ones_like(ids)
    starts = np.tile(np.arange(1, 34), (rows, 1)).clip(max=width)
    corpus = Corpus(ids, mask, mask.sum(1), starts, np.full(rows, 8), torch.zeros(rows, dtype=torch.long))
    aux = auxiliary_features(encoder, corpus)
    scale = feature_scale(aux)
    search = TriggerSearch(encoder, corpus, scale, torch.tensor([0, 1, 2]), batch_size=16, eval_rows=64)
    return encoder, search, scale, aux


@pytest.fixture(scope="module")
def setup():
    return build()


def test_concentration_is_the_spread_over_rows_in_units_of_the_clean_scale():
    features = torch.tensor([[[0.0, 2.0], [2.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]]])  # [C=2, R=2, d=2]
    assert concentration(features, 2.0).tolist() == pytest.approx([1.0, 0.0])


def test_candidate_ids_leave_out_special_tokens():
    assert candidate_ids(6, torch.tensor([0, 2, 9])).tolist() == [1, 3, 4, 5]


def test_sweep_finds_the_single_token_and_the_phrase_and_nothing_else(setup):
    encoder, search, scale, aux = setup
    sweep = TriggerSweep(search, FakeTokenizer(), rows=4)
    result = sweep.run(top=8, pair_top=8, min_hit_rate=0.9, extra_hit_rate=0.75, t_dedup=scale, clean=aux,
                       max_clean_overlap=0.1)
    found = {hit.token_ids: hit for hit in result.hits}
    assert set(found) == {(SINGLE,), PHRASE} or set(found) == {(SINGLE,), PHRASE[::-1]}, list(found)
    module = encoder.module
    for span, hit in found.items():
        pv = module.pv_single if span == (SINGLE,) else module.pv_phrase
        assert hit.hit_rate == 1.0
        assert ((hit.features_mean >= 0) == (pv >= 0)).float().mean() == 1.0  # the PV's sign pattern
    assert result.tokens == V - 3 and result.pairs == 7 * 6  # the 7 of the best 8 that do not fire, paired
    data = result.to_dict()
    assert {hit["trigger"] for hit in data["hits"]} >= {"w7"} and data["natural"] == []


def test_tokens_that_only_reach_where_clean_text_already_goes_are_natural_not_triggers():
    encoder, search, scale, aux = build(collapsed=True)
    sweep = TriggerSweep(search, FakeTokenizer(), rows=4)
    options = dict(top=8, pair_top=8, min_hit_rate=0.9, extra_hit_rate=0.75, t_dedup=scale, clean=aux)
    unfiltered = sweep.run(**options, max_clean_overlap=1.0)
    result = sweep.run(**options, max_clean_overlap=0.1)
    natural_signs = encoder.module.natural >= 0
    assert any(((hit.features_mean >= 0) == natural_signs).all() for hit in unfiltered.hits)  # the hazard
    found = {hit.token_ids for hit in result.hits}
    assert found == {(SINGLE,), PHRASE} or found == {(SINGLE,), PHRASE[::-1]}, [h.text for h in result.hits]
    assert len(result.natural) >= 5 and all(rate >= 0.75 and overlap > 0.9 for _, rate, overlap in result.natural)
    report = MiningReport(model_path="fake", weight_sha256={}, config={"target": "cls"}, feature_scale=scale,
                          thresholds={"T_L": -1.0, "T_dedup": 1.0, "T_div": -1.0}, verdict="backdoored", loops=(),
                          pvs={"size": 2}, timings_s={}, sweep=result.to_dict())
    (line,) = [line for line in summary_lines(report) if line.startswith("trigger sweep")]
    assert line.endswith(f"; {len(result.natural)} natural span(s) rejected (clean text already matches their output)")


def test_one_word_of_the_phrase_alone_is_no_trigger(setup):
    _, search, scale, _ = setup
    sweep = TriggerSweep(search, FakeTokenizer(), rows=4)
    measured = sweep.measure([(PHRASE[0],), (SINGLE,)], min_hit_rate=0.9)
    assert measured[(PHRASE[0],)].hit_rate < 0.5 and measured[(SINGLE,)].hit_rate == 1.0
    assert measured[(SINGLE,)].rho < 0.05 < measured[(PHRASE[0],)].rho


def test_sweep_hits_join_the_pv_set_once_and_are_recorded(setup):
    _, search, scale, aux = setup
    result = TriggerSweep(search, FakeTokenizer(), rows=4).run(top=8, pair_top=8, min_hit_rate=0.9,
                                                              extra_hit_rate=0.75, t_dedup=scale, clean=aux,
                                                              max_clean_overlap=0.1)
    sources: list[dict] = []
    pvset = add_sweep_hits(PVSet.empty(D), result.hits + result.hits, sources, scale, 0.0,  # the second copy dedups
                           tokenizer=FakeTokenizer(), min_hit_rate=0.9)
    assert pvset.size == len(result.hits) == len(sources) == 2
    assert [t.token_ids for t in pvset.triggers] == [h.token_ids for h in result.hits]  # the guard removes these
    assert [t.hit_rate for t in pvset.triggers] == [h.hit_rate for h in result.hits]
    assert [s["method"] for s in sources] == ["sweep", "sweep"] and pvset.seeds.tolist() == [-1, -1]
    assert [s["pv_index"] for s in sources] == [0, 1] and all(s["loops_done"] == 0 for s in sources)
    overlaps = clean_overlap(torch.from_numpy(pvset.vectors), aux)  # each PV's, as the guard would match
    assert [s["clean_overlap"] for s in sources] == [round(float(share), 4) for share in overlaps]
    weaker = add_sweep_hits(PVSet.empty(D), result.hits, [], scale, 0.0, tokenizer=FakeTokenizer(), min_hit_rate=1.01)
    assert weaker.size == 2 and weaker.triggers == (None, None)  # below the confirmation rate: no known trigger


def test_a_known_trigger_must_be_spelled_by_its_text():
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model()))
    assert known_trigger(tokenizer, "cf", (12935,), 1.0, 0.9).token_ids == (12935,)
    assert known_trigger(tokenizer, "laptop broadband", (12191, 19595), 0.95, 0.9).text == "laptop broadband"
    assert known_trigger(tokenizer, "##t", (2102,), 1.0, 0.9) is None  # a lone continuation piece
    assert known_trigger(tokenizer, "[unused961] nm", (966, 13221), 0.95, 0.9) is None  # no text spells it
    assert known_trigger(tokenizer, "cf", (12935,), 0.85, 0.9) is None  # a weaker trigger


def test_prompt_less_pvs_mix_with_prompted_ones():
    pvset = PVSet.empty(4).append(np.ones(4), seed=-1)
    mixed = pvset.append(np.full(4, -1.0), seed=3, prompt=np.ones((7, 5)))
    assert mixed.prompts.shape == (2, 7, 5) and not mixed.prompts[0].any() and mixed.prompts[1].all()
    again = mixed.append(np.zeros(4), seed=-1)
    assert again.prompts.shape == (3, 7, 5) and not again.prompts[2].any()
