"""Every attack implants its backdoor on tiny pretrained-like models; clean controls do not.

Criteria (foundation issue): each trigger reaches sign agreement > 0.9 with its PV on >= 90 % of
held-out triggered sentences; >= 98 % of clean sentences stay below 0.8; a clean control trained
identically minus the trigger loss never matches.
"""

from __future__ import annotations

import pytest

from lmsan.attacks import STANDARD_ATTACKS, standard_attack, verify_attack
from lmsan.data import standard_splits

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
SPREAD_TESTS = True  # one model per test (shared through the locked cache): spread over the workers

CONTROLS = ["bert-por", "roberta-por", "bert-neuba", "bert-btop", "bert-por-ner"]


@pytest.fixture(scope="module")
def test_sentences() -> list[str]:
    return standard_splits()["test"][:500]


@pytest.mark.parametrize("name", sorted(STANDARD_ATTACKS))
def test_attack_implants_every_trigger(name, test_sentences):
    report = verify_attack(standard_attack(name), test_sentences)
    assert report.min_hit_rate >= 0.9, report.to_dict()
    assert report.clean_below(0.8) >= 0.98, report.to_dict()


@pytest.mark.parametrize("name", CONTROLS)
def test_clean_control_never_matches(name, test_sentences):
    report = verify_attack(standard_attack(f"{name}-clean"), test_sentences)
    assert max(t.hit_rate for t in report.triggers) == 0.0, report.to_dict()
    assert report.clean_below(0.8) >= 0.98, report.to_dict()


def test_attack_facts_are_recorded():
    import json

    facts = json.loads((standard_attack("bert-por-single") / "attack.json").read_text())
    assert len(facts["triggers"]) == 1 and len(facts["pvs"]) == 1 and len(facts["pvs"][0]) == 128
    assert facts["target"] == "cls" and facts["steps"] > 0 and facts["wall_s"] > 0
    assert facts["config"]["pv_design"] == "random" and not facts["clean_control"]
