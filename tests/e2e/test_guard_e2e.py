"""Attack -> export -> guard on the tiny POR BERT, with the attack's own PVs as the PV set.

Targets (issue): >= 95 % of triggered test sentences flagged; of those, >= 95 % get their trigger
removed and are no longer flagged; <= 2 % of clean test sentences flagged at T_match = 0.8.
Rates are printed (run with -s) and attached to the JUnit report as properties.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from lmsan.pvset import PVSet

TRIGGERS = ("cf", "mn", "tq", "qt", "mm", "pt")
N_CLEAN, N_POISONED, N_LONG = 1000, 300, 100

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from lmsan.attacks import AttackConfig, attacked_model
    from lmsan.attacks.poison import insert_trigger
    from lmsan.data import standard_splits
    from lmsan.export import export_guard
    from lmsan.models.zoo import default_tiny

    splits = standard_splits()
    model = attacked_model(default_tiny("bert").path, AttackConfig(kind="por", triggers=TRIGGERS),
                           splits["attack"][:2000])
    attack = json.loads((model / "attack.json").read_text())
    pvs = PVSet(np.asarray(attack["pvs"], np.float32), target=attack["target"])
    guard_dir = export_guard(model, pvs, tmp_path_factory.mktemp("e2e") / "guard").path
    test = splits["test"]
    rng = np.random.default_rng(0)
    poisoned = [insert_trigger(s, TRIGGERS[i % len(TRIGGERS)], rng) for i, s in enumerate(test[:N_POISONED])]
    paragraphs = [" ".join(test[i : i + 3]) for i in range(N_CLEAN, N_CLEAN + 3 * N_LONG, 3)]
    long_poisoned = [insert_trigger(s, TRIGGERS[i % len(TRIGGERS)], rng) for i, s in enumerate(paragraphs)]
    return guard_dir, test[:N_CLEAN], poisoned, long_poisoned


def test_triggered_sentences_are_flagged_and_cleaned(setup, record_property):
    from lmsan.runtime import Guard

    guard_dir, _, poisoned, _ = setup
    guard = Guard.load(guard_dir)
    results = guard.scan_batch(poisoned)
    flagged = [r.triggered for r in results]
    sanitized = [r.sanitized for r in results if r.triggered and not r.rejected]
    still = iter(r.triggered for r in guard.scan_batch(sanitized, sanitize=False)) if sanitized else iter(())
    cleaned = []
    for i, r in enumerate(results):
        if not r.triggered:
            continue
        ok = not r.rejected and TRIGGERS[i % len(TRIGGERS)] not in r.sanitized.split()
        rescanned_clean = not next(still) if not r.rejected else False
        cleaned.append(ok and rescanned_clean)
    rates = {"flagged": float(np.mean(flagged)), "cleaned_of_flagged": float(np.mean(cleaned)),
             "rejected": int(sum(r.rejected for r in results)), "n": len(results)}
    print("e2e poisoned:", rates)
    for key, value in rates.items():
        record_property(key, value)
    assert rates["flagged"] >= 0.95
    assert rates["cleaned_of_flagged"] >= 0.95


def test_smart_searches_remove_the_same_trigger_as_batched(setup, record_property):
    """probe, bisect, code and group are kept only because they remove what the exact search removes."""
    from lmsan.runtime import Guard

    guard_dir, _, poisoned, _ = setup
    outcomes = {}
    for search in ("probe", "probe without guess", "bisect", "code", "group", "batched"):
        guard = Guard.load(guard_dir, search=search.split()[0], saliency=search == "probe")
        results = guard.scan_batch(poisoned)
        outcomes[search] = [(r.removed, r.sanitized, r.rejected) for r in results]
    for search in ("probe", "probe without guess", "bisect", "code", "group"):
        same = float(np.mean([a == b for a, b in zip(outcomes[search], outcomes["batched"])]))
        print(f"e2e {search} == batched:", same)
        record_property(f"{search}_equals_batched", same)
        assert same >= 0.99, search


def test_probe_removes_the_trigger_from_paragraphs(setup, record_property):
    """Three test sentences and one trigger (40-90 words: probe's keep-only halving runs)."""
    from lmsan.runtime import Guard

    guard_dir, _, _, long_poisoned = setup
    assert min(len(t.split()) for t in long_poisoned) >= 24  # PROBE_MIN_WORDS
    rates = {}
    for search in ("probe", "bisect", "batched"):
        results = Guard.load(guard_dir, search=search).scan_batch(long_poisoned)
        hit = [r.removed == (TRIGGERS[i % len(TRIGGERS)],) for i, r in enumerate(results) if r.triggered]
        rates[search] = float(np.mean(hit))
        rates[f"{search}_flagged"] = float(np.mean([r.triggered for r in results]))
    print("e2e paragraphs, trigger removed (of flagged):", rates)
    for key, value in rates.items():
        record_property(f"paragraphs_{key}", value)
    assert rates["probe_flagged"] >= 0.95
    assert rates["probe_flagged"] == rates["bisect_flagged"] == rates["batched_flagged"]  # one detection pass
    assert rates["probe"] >= 0.95 and rates["bisect"] >= 0.95 and rates["batched"] >= 0.95


def test_the_saliency_guess_saves_session_calls(setup, record_property):
    """The last-layer attention from [CLS] names the trigger often enough to pay for itself."""
    from lmsan.runtime import Guard

    guard_dir, _, poisoned, long_poisoned = setup
    guard = Guard.load(guard_dir)
    fits = guard.encoder.lengths([(t,) for t in long_poisoned])
    texts = poisoned[:100] + [t for t, n in zip(long_poisoned, fits) if n <= guard.manifest.max_length][:50]
    units = [(t,) for t in texts]
    saliency = guard._detect(units, saliency=True)[3]
    guesses = [guard.encoder.top_word(u, row) for u, row in zip(units, saliency)]
    calls, outcomes = {}, {}
    for use in (True, False):
        guard = Guard.load(guard_dir, saliency=use)
        sessions, run = [], guard._run
        guard._run = lambda arrays, names, run=run, sessions=sessions: sessions.append(names) or run(arrays, names)
        outcomes[use] = [(r.removed, r.sanitized) for r in (guard.scan(t) for t in texts)]
        calls[use] = len(sessions)
    right = [guess == removed[0] for guess, (removed, _) in zip(guesses, outcomes[True]) if removed]
    rates = {"guess_right": float(np.mean(right)), "calls_with_guess": calls[True], "calls_without": calls[False]}
    print("e2e saliency guess:", rates)
    for key, value in rates.items():
        record_property(key, value)
    assert outcomes[True] == outcomes[False]
    assert calls[True] < calls[False]
    assert rates["guess_right"] >= 0.9  # docs/runtime.md: 100 % on the POR BERT


def test_clean_false_positive_rate_at_paper_threshold(setup, record_property):
    from lmsan.runtime import Guard

    guard_dir, clean, _, _ = setup
    results = Guard.load(guard_dir).scan_batch(clean, sanitize=False)
    matches = np.array([r.match for r in results])
    fp = float(np.mean([r.triggered for r in results]))
    print("e2e clean: fp@0.8 =", fp, "match quantiles 50/90/99 =", np.quantile(matches, [0.5, 0.9, 0.99]).round(3))
    record_property("clean_fp", fp)
    assert fp <= 0.02, f"{fp:.1%} of clean test sentences flagged at T_match = 0.8 (not loosened)"
