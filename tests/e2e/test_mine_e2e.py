"""PV mining on tiny attacked models and their clean controls (detect and search mode).

Criteria (mining issue): detect mode flags POR-backdoored BERT and RoBERTa, NeuBA, a single-PV
attack and BToP (``--target mask``) as backdoored, and the found PV sign-agrees > 0.9 with an
attack PV; clean controls trained identically minus the trigger loss are called clean, and so
are the un-attacked distilled BERT and RoBERTa (the hardest clean cases: without trigger
confirmation both were called backdoored within 10 loops); a search with patience
recovers all 6 PVs of the POR BERT (recovered: sign agreement > T_match = 0.8, method.md
§7), and the soft-prompt path alone still convicts it. The trigger sweep or trigger confirmation
names a real trigger word.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lmsan.pvset import sign_agreement

# test_chain_e2e and test_mine_e2e share the POR BERT's search run and its clean control's default
# run: tests that use them run on one worker of a parallel run (tests/conftest.py)
POR_RUNS = pytest.mark.xdist_group("por-mining-runs")
pytestmark = [pytest.mark.e2e, pytest.mark.slow]
SPREAD_TESTS = True  # each mining run is its own test; the runs test_chain_e2e shares are marked POR_RUNS

SENTENCES = 1000  # defense sentences (the paper uses 2000; tiny models need fewer)
DETECT_LOOPS = 10  # L_max for detection on tiny models (backdoored ones stop at the first PV)
T_MATCH = 0.8


def attack_words(model: Path) -> set[str]:
    triggers = json.loads((model / "attack.json").read_text())["triggers"]
    return {word.lower() for trigger in triggers for word in trigger.split()}


def attack_signs(model: Path) -> np.ndarray:
    pvs = np.asarray(json.loads((model / "attack.json").read_text())["pvs"], np.float32)
    return np.where(pvs >= 0, 1, -1).astype(np.int8)


def run_mining(model: Path, sentences: list[str], **overrides):
    from lmsan.mining import MiningConfig, mine
    from lmsan.models import load_model

    config = MiningConfig.profile("default", **{"max_loops": DETECT_LOOPS, **overrides})
    return mine(load_model(model), sentences[:SENTENCES], config)


@pytest.mark.parametrize("fixture", ["bert_por", "roberta_por", "bert_neuba", "bert_single_pv"])
def test_detect_flags_backdoored_models(fixture, request, defense_sentences, record_property):
    model = request.getfixturevalue(fixture)
    result = run_mining(model, defense_sentences)
    report = result.report
    record_property("time_to_verdict_s", report.timings_s["to_verdict"])
    assert report.verdict == "backdoored", [(t.seed, t.outcome, t.reason) for t in report.loops]
    agreement = sign_agreement(result.pvset.vectors, attack_signs(model))
    record_property("agreement", float(agreement.max()))
    # With six triggers a soft prompt often mixes two of them (a superposed PV, paper Fig. 7,
    # agreeing 0.75-0.85 with each); the PV is taken from the confirmed real tokens, shrunk to one
    # trigger, so it is that trigger's PV.
    assert agreement.max() > 0.9, agreement.round(3)
    # the trigger sweep convicts before any fuzz loop (how fast: benchmarks/mining.py, not a timed test)
    assert report.loops == () and [source["method"] for source in report.pv_sources][:1] == ["sweep"]
    confirmed = [source["trigger"] for source in report.pv_sources]
    record_property("trigger_tokens", confirmed)
    assert any(word in attack_words(model) for text in confirmed for word in text.lower().split()), confirmed


def test_detect_flags_btop_at_the_mask_target(bert_btop, defense_sentences):
    result = run_mining(bert_btop, defense_sentences, target="mask")
    assert result.report.verdict == "backdoored"
    assert sign_agreement(result.pvset.vectors, attack_signs(bert_btop)).max() > 0.9


@pytest.mark.parametrize("fixture, args", [
    pytest.param("bert_por_clean", (), marks=POR_RUNS),
    ("roberta_por_clean", ()),  # seed 8 passed the soft-prompt filter: a false positive before
    ("bert_neuba_clean", ()),
    ("bert_btop_clean", ("--target", "mask")),
    # the hardest clean cases, at the full default budget (2000 sentences; the sweep, then L_max 10
    # loops): 6 (BERT) and 13 (RoBERTa) of 30 loops pass the soft-prompt filter, 1 and 5 of the
    # first 10; trigger confirmation must reject every one (0 false positives on the clean zoo:
    # benchmarks/mining.py)
    ("tiny_bert", ("--limit", "2000")),
    ("tiny_roberta", ("--limit", "2000")),
])
def test_clean_models_are_called_clean(fixture, args, request, mined, record_property):
    """``lmsan-mine`` at its defaults (bert_por_clean's run is also test_chain_e2e's clean chain)."""
    run = mined(request.getfixturevalue(fixture), *args)
    report = run.report
    loops = report["loops"]
    assert run.code == 0 and report["verdict"] == "clean", [(t["seed"], t["outcome"], t["reason"]) for t in loops
                                                             if t.get("trigger")]
    assert report["sweep"] is not None and len(loops) == DETECT_LOOPS  # the whole default budget was spent
    assert run.pvset.size == 0
    record_property("unconfirmed", [(t["trigger"]["trigger"], t["trigger"]["hit_rate"]) for t in loops
                                    if t["outcome"] == "unconfirmed"])


@POR_RUNS
def test_search_recovers_every_pv(bert_por, bert_por_search, record_property):
    """``lmsan-mine --mode search`` (6 loops, patience 2; the run test_chain_e2e guards with)."""
    run = bert_por_search
    assert run.code == 1
    agreement = sign_agreement(run.pvset.vectors, attack_signs(bert_por))  # [K_found, 6]
    recovered = int((agreement.max(axis=0) > T_MATCH).sum())
    record_property("recovered", recovered)
    record_property("loops", len(run.report["loops"]))
    assert recovered == 6, agreement.max(axis=0).round(3)  # every trigger: a missed PV always succeeds
    assert agreement.max() > 0.85, agreement.round(3)
    sources = run.report["pv_sources"]
    # PVs that match no attack PV are the model's other collapsing texts (superpositions, paper
    # Fig. 7): counted, not asserted
    record_property("pvs_matching_no_attack_pv", int((agreement.max(axis=1) <= T_MATCH).sum()))
    assert [source["pv_index"] for source in sources] == list(range(run.pvset.size))
    assert {source["method"] for source in sources} <= {"sweep", "soft_prompt"}
    # each PV carries its trigger where the hit rate reaches the confirmation rate (weaker sweep triggers: none)
    assert [(t.text, t.hit_rate) if t else None for t in run.pvset.triggers] == [
        (s["trigger"], round(s["hit_rate"], 4)) if s["hit_rate"] is not None and s["hit_rate"] >= 0.9 else None
        for s in sources]
    # the PV of each attack trigger is found with that trigger's text (or a piece of it: `q` of `qt`)
    triggers = json.loads((bert_por / "attack.json").read_text())["triggers"]
    for k, trigger in enumerate(triggers):
        named = [sources[i]["trigger"].lower() for i in range(len(sources)) if agreement[i, k] > T_MATCH]
        assert any(text in trigger or trigger in text for text in named), (trigger, named)


def test_detect_without_the_sweep_still_finds_a_backdoor(bert_por, defense_sentences):
    """The soft-prompt path alone (the reference's method, with confirmation) still convicts."""
    result = run_mining(bert_por, defense_sentences, sweep=False)
    assert result.report.verdict == "backdoored" and result.report.sweep is None
    assert [source["method"] for source in result.report.pv_sources] == ["soft_prompt"]
    assert sign_agreement(result.pvset.vectors, attack_signs(bert_por)).max() > 0.9
    (known,) = result.pvset.triggers  # the confirmed trigger goes with its PV, for the guard to remove
    assert known.text == result.report.pv_sources[0]["trigger"] and known.hit_rate >= 0.9


def test_cli_detects_and_writes_artifacts(bert_por, defense_sentences, tmp_path):
    from lmsan.cli import mine as mine_cli
    from lmsan.pvset import PVSet

    data = tmp_path / "defense.txt"
    data.write_text("\n".join(defense_sentences[:SENTENCES]) + "\n")
    out = tmp_path / "scan"
    with pytest.raises(SystemExit) as exit_info:
        mine_cli.main([str(bert_por), "--data", str(data), "--out", str(out), "--loops", str(DETECT_LOOPS), "-q"])
    assert exit_info.value.code == 1
    pvs = PVSet.load(out / "pvs.safetensors")
    report = json.loads((out / "report.json").read_text())
    assert pvs.size >= 1 and report["verdict"] == "backdoored"
    assert report["pv_sources"][0]["method"] == "sweep" and pvs.seeds[0] == -1  # convicted by the sweep
    assert pvs.prompts is None  # no soft prompt produced these PVs
    assert report["weight_sha256"] and pvs.model_sha256
