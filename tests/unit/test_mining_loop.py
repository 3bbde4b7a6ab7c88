"""Fuzz loops on a small random encoder: Adam, the learning-rate switch, side-by-side loops,
batching, early stop rules, and ``mine`` with its report and resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmsan.errors import ConfigError, DataError, IntegrityError
from lmsan.mining import MiningConfig, mine
from lmsan.mining.features import Encoder, auxiliary_features, feature_scale
from lmsan.mining.loop import FuzzEngine, _Slot, grad_peak
from lmsan.mining.prompt import encode_corpus
from lmsan.mining.report import OUTCOMES, EpochStats

WORDS = ("river stone quiet market paper light window garden music city morning letter table "
         "yellow story engine winter voice bridge doctor forest summer number island").split()


def synthetic_sentences(count: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(5, 12)))) for _ in range(count)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random-init 1-layer BERT (d = 32) on disk, loaded: mechanics only, not detection."""
    from lmsan.models import load_model
    from lmsan.models.tiny import TinySpec, build_tiny

    model, tokenizer = build_tiny(TinySpec(arch="bert", hidden=32, layers=1, heads=2, intermediate=64))
    path = tmp_path_factory.mktemp("tiny-mining")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return load_model(path)


def make_engine(tiny, config, *, sentences=96, slots=1, t_l=-1e9, t_div=-1e9):
    encoder = Encoder.from_loaded(tiny)
    corpus = encode_corpus(tiny.tokenizer, synthetic_sentences(sentences), target=config.target, max_length=24,
                           max_insert_pos=config.max_insert_pos)
    aux = auxiliary_features(encoder, corpus)
    return FuzzEngine(encoder, corpus, aux, config, t_l=t_l, t_div=t_div, lr=1e-3,
                      div_scale=feature_scale(aux), slots=slots)


def run_engine(engine, seeds):
    finished = []
    engine.run(iter(seeds), lambda loop: finished.append(loop) or False)
    return {loop.seed: loop for loop in finished}


def test_adam_matches_torch_adam(tiny):
    engine = make_engine(tiny, MiningConfig(batch_size=8, epochs=1), slots=2)
    torch.manual_seed(0)
    start = torch.randn_like(engine.prompts)
    with torch.no_grad():
        engine.prompts.copy_(start)
    reference = start[1].clone().requires_grad_(True)
    optimizer = torch.optim.Adam([reference], lr=0.01)
    act = torch.tensor([1])
    for _ in range(4):
        grad = torch.randn(1, *start.shape[1:])
        engine._adam(act, grad, torch.tensor([0.01]))
        reference.grad = grad[0].clone()
        optimizer.step()
    assert torch.allclose(engine.prompts[1].detach(), reference.detach(), atol=1e-6)
    assert torch.equal(engine.prompts[0].detach(), start[0])  # an inactive slot is untouched


def test_grad_peak_abs_versus_signed():
    grad = torch.full((2, 3, 4), -1.0)
    grad[1, 0, 0] = 0.5
    assert grad_peak(grad, "abs").tolist() == [1.0, 1.0]
    assert grad_peak(grad, "signed").tolist() == [-1.0, 0.5]


@pytest.mark.parametrize("threshold, expected", [(0.0, 0), (1e9, None)])
def test_learning_rate_switch(tiny, threshold, expected):
    config = MiningConfig(batch_size=16, epochs=1, grad_threshold=threshold, abort_after_epoch=0,
                          early_abort_frac=0.0, early_accept=False)
    engine = make_engine(tiny, config)
    loop = run_engine(engine, [1])[1]
    assert loop.lr_switch_step == expected
    assert loop.steps == engine.batches


def test_switch_drops_the_rate_to_lr(tiny):
    config = MiningConfig(batch_size=16, epochs=1, grad_threshold=0.0, lr0_factor=100, abort_after_epoch=0,
                          early_abort_frac=0.0, early_accept=False)
    engine = make_engine(tiny, config)
    seeds = iter([3])
    slot = engine._start(0, seeds)
    assert slot.lr == pytest.approx(engine.lr * 100)
    engine._step([0], [slot], None)
    assert slot.switched_at == 0 and slot.lr == pytest.approx(engine.lr)


def test_loops_side_by_side_equal_loops_one_at_a_time(tiny):
    config = MiningConfig(batch_size=16, epochs=2, abort_after_epoch=0, early_abort_frac=0.0, early_accept=False)
    serial = run_engine(make_engine(tiny, config, slots=1), [1, 2, 3])
    parallel = run_engine(make_engine(tiny, config, slots=3), [1, 2, 3])
    for seed in (1, 2, 3):
        for a, b in zip(serial[seed].epochs, parallel[seed].epochs):
            assert a.dist == pytest.approx(b.dist, rel=1e-3, abs=1e-6)
            assert a.div == pytest.approx(b.div, rel=1e-4)
        assert torch.allclose(serial[seed].prompt, parallel[seed].prompt, atol=1e-4)


def test_adam_reset_versus_kept(tiny):
    base = MiningConfig(batch_size=16, epochs=1, abort_after_epoch=0, early_abort_frac=0.0, early_accept=False)
    reset = make_engine(tiny, base)
    run_engine(reset, [1, 2])
    kept = make_engine(tiny, base.replace(reset_adam=False))
    run_engine(kept, [1, 2])
    assert int(reset.t[0]) == reset.batches  # the second loop restarted its step count
    assert int(kept.t[0]) == 2 * kept.batches  # moments and step count leaked across loops


@pytest.mark.parametrize("batching", ["bucketed", "random"])
def test_epoch_order_is_full_batches_without_repeats(tiny, batching):
    engine = make_engine(tiny, MiningConfig(batch_size=10, batching=batching), sentences=95)
    order = engine._epoch_order(np.random.default_rng(0))
    assert len(order) == 90 and len(set(order.tolist())) == 90
    if batching == "bucketed":
        lengths = engine._lengths[order].reshape(9, 10)
        random = engine._lengths[np.random.default_rng(0).permutation(95)[:90]].reshape(9, 10)
        assert (lengths.max(1) - lengths.min(1)).mean() <= (random.max(1) - random.min(1)).mean()


def _slot_after(engine, *epochs):
    slot = _Slot(1, np.random.default_rng(0), np.arange(4), 0.1, 0.0)
    slot.epochs = [EpochStats(*e) for e in epochs]
    slot.epoch = len(epochs)
    return slot


def test_stop_rules_at_epoch_ends(tiny):
    config = MiningConfig(epochs=4, abort_after_epoch=2, early_abort_frac=0.5, abort_div_margin=0.03,
                          early_accept=True)
    engine = make_engine(tiny, config, t_l=-1.0, t_div=-3.45)  # -log 32 = -3.466: abort above -3.436
    assert engine._loop_over(_slot_after(engine, (-0.3, -3.4, 0)))  # epoch 1: L_D above 0.5 T_L
    assert not engine._loop_over(_slot_after(engine, (-0.6, -3.4, 0)))
    assert not engine._loop_over(_slot_after(engine, (-1.5, -3.46, 0)))  # no accept before epoch 2
    assert engine._loop_over(_slot_after(engine, (-1.5, -3.46, 0), (-1.6, -3.46, 0)))  # early accept
    assert not engine._loop_over(_slot_after(engine, (-1.5, -3.46, 0), (-1.6, -3.46, 0), (-1.7, -3.4, 0)))
    assert engine._loop_over(_slot_after(engine, (-0.6, -3.4, 0), (-0.9, -3.4, 0)))  # epoch 2: not converged
    assert engine._loop_over(_slot_after(engine, (-0.6, -3.4, 0), (-1.9, -3.4, 0)))  # epoch 2: still diverse
    assert not engine._loop_over(_slot_after(engine, (-0.6, -3.4, 0), (-1.9, -3.44, 0)))  # close: train on
    reference = make_engine(tiny, MiningConfig.profile("reference"), t_l=-1.0, t_div=-3.45)
    assert not reference._loop_over(_slot_after(reference, (-0.3, -3.4, 0)))
    assert not reference._loop_over(_slot_after(reference, (-1.5, -3.46, 0)))
    assert not reference._loop_over(_slot_after(reference, (-0.6, -3.4, 0), (-1.9, -3.4, 0)))
    assert reference._loop_over(_slot_after(reference, (-0.6, -3.4, 0), (-0.9, -3.4, 0)))


# ---- mine(): the whole run -------------------------------------------------------------------
# The fuzz loops alone (no trigger sweep: on this random model every token "collapses" the output).
FAST = dict(batch_size=16, epochs=2, max_length=24, abort_after_epoch=0, early_abort_frac=0.0, sweep=False)


def test_mine_reports_every_loop(tiny):
    config = MiningConfig(mode="search", max_loops=3, **FAST)
    seen = []
    result = mine(tiny, synthetic_sentences(64), config, on_loop=seen.append)
    report = result.report
    assert [t.seed for t in report.loops] == [1, 2, 3] == [t.seed for t in seen]
    assert report.verdict == ("backdoored" if result.pvset.size else "clean")
    assert report.feature_scale > 0
    assert set(report.thresholds) >= {"T_L", "T_dedup", "T_div", "lr", "lr0", "prompt_low", "prompt_high"}
    assert report.timings_s["total"] >= report.timings_s["mining"] > 0
    for trace in report.loops:
        assert trace.outcome in OUTCOMES
        assert trace.reason
    data = report.to_dict()
    assert data["schema_version"] == 1 and data["config"]["max_loops"] == 3


def test_detect_stops_at_the_first_pv_and_search_collects(tiny):
    # an absurdly lax T_L and T_div accept everything that converges: a stand-in for a backdoor
    # (the random-init model sends every input near one output, so no PV is checked for that)
    lax = dict(converge_abs=1e-9, div_abs=0.0, dedup_abs=0.0, confirm=False, max_clean_overlap=1.0, **FAST)
    detect = mine(tiny, synthetic_sentences(64), MiningConfig(mode="detect", max_loops=4, **lax))
    assert detect.report.verdict == "backdoored" and detect.pvset.size == 1
    assert len(detect.report.loops) == 1 and detect.report.stop_reason == "first_pv"
    assert detect.report.timings_s["to_verdict"] <= detect.report.timings_s["total"]
    search = mine(tiny, synthetic_sentences(64), MiningConfig(mode="search", max_loops=3, **lax))
    assert search.pvset.size == 3 and search.pvset.prompts.shape == (3, 7, 32)
    assert search.pvset.seeds.tolist() == [1, 2, 3]


def test_a_pv_that_clean_text_already_matches_is_rejected_as_natural(tiny):
    # the random-init model sends every input near one output: what a loop converges to is natural
    lax = dict(converge_abs=1e-9, div_abs=0.0, dedup_abs=0.0, confirm=False, **FAST)
    result = mine(tiny, synthetic_sentences(64), MiningConfig(mode="search", max_loops=2, **lax))
    assert [trace.outcome for trace in result.report.loops] == ["natural", "natural"]
    assert "of clean sentences already match it" in result.report.loops[0].reason
    assert result.report.verdict == "clean" and result.pvset.size == 0
    assert all(trace.basin is not None for trace in result.report.loops)  # still repels later loops


def test_trigger_confirmation_decides_and_is_recorded(tiny):
    lax = dict(converge_abs=1e-9, div_abs=0.0, dedup_abs=0.0, max_clean_overlap=1.0, **FAST)
    config = MiningConfig(mode="detect", max_loops=1, confirm_margin=10.0, confirm_rows=32, **lax)
    result = mine(tiny, synthetic_sentences(64), config)
    (trace,) = result.report.loops
    check = trace.trigger
    assert check["steps"] == 0  # margin 10: the nearest tokens already end the search
    assert check["trigger"] and len(check["search_text"].split()) >= 1 and 0 <= check["hit_rate"] <= 1
    assert tiny.tokenizer.decode(check["token_ids"]).strip() == check["trigger"]  # the ids it inserted
    assert trace.outcome == ("accepted" if check["hit_rate"] >= config.confirm_hit_rate else "unconfirmed")
    assert check["confirmed"] == trace.accepted == result.report.backdoored
    assert result.report.to_dict()["loops"][0]["trigger"] == check


def test_patience_stops_a_search(tiny):
    strict = dict(converge_abs=1e9, **FAST)  # nothing converges
    result = mine(tiny, synthetic_sentences(64), MiningConfig(mode="search", max_loops=10, patience=2, **strict))
    assert len(result.report.loops) == 2 and result.report.stop_reason == "patience"


def test_resume_skips_finished_loops(tiny):
    config = MiningConfig(mode="search", max_loops=2, **FAST)
    first = mine(tiny, synthetic_sentences(64), config)
    more = config.replace(max_loops=4)
    resumed = mine(tiny, synthetic_sentences(64), more, resume=(first.report, first.pvset))
    assert [t.seed for t in resumed.report.loops] == [1, 2, 3, 4]
    assert resumed.report.loops[:2] == first.report.loops
    with pytest.raises(ConfigError, match="lr_rel"):
        mine(tiny, synthetic_sentences(64), more.replace(lr_rel=0.1), resume=(first.report, first.pvset))
    from dataclasses import replace

    before_filter = replace(first.report, config={k: v for k, v in first.report.config.items()
                                                  if k != "max_clean_overlap"})  # it kept every PV
    with pytest.raises(ConfigError, match="max_clean_overlap"):
        mine(tiny, synthetic_sentences(64), more, resume=(before_filter, first.pvset))
    kept_all = mine(tiny, synthetic_sentences(64), more.replace(max_clean_overlap=1.0),
                    resume=(before_filter, first.pvset))
    assert kept_all.report.loops[:2] == first.report.loops
    foreign = replace(first.pvset, model_sha256="0" * 64)
    with pytest.raises(IntegrityError):
        mine(tiny, synthetic_sentences(64), more, resume=(first.report, foreign))


def test_too_few_sentences_is_a_data_error(tiny):
    with pytest.raises(DataError, match="one batch"):
        mine(tiny, synthetic_sentences(10), MiningConfig(**FAST))
