"""The whole chain with nothing borrowed from the attack: attack -> ``lmsan-mine`` -> export of the
**mined** PV set -> guard rates.

On the tiny POR BERT (six triggers) the mined set must block every trigger: a missed PV is a
trigger that always succeeds. On its clean control the miner must return an empty set, and the
guard exported from it must never fire, not even on triggered text.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lmsan.pvset import PVSet

# test_chain_e2e and test_mine_e2e share the POR BERT's search run and its clean control's default
# run: tests that use them run on one worker of a parallel run (tests/conftest.py)
POR_RUNS = pytest.mark.xdist_group("por-mining-runs")
pytestmark = [pytest.mark.e2e, pytest.mark.slow, POR_RUNS]

N_CLEAN, N_PER_TRIGGER = 500, 50


def guard_from(run, model: Path, out: Path) -> Path:
    """Export a guard from the PVs an ``lmsan-mine`` run wrote."""
    from lmsan.export import export_guard

    return export_guard(model, PVSet.load(run.scan / "pvs.safetensors"), out).path


@pytest.fixture(scope="module")
def por_chain(bert_por, bert_por_search, tmp_path_factory):
    """``lmsan-mine --mode search`` on the POR BERT and the guard exported from its PVs: (run, guard dir)."""
    return bert_por_search, guard_from(bert_por_search, bert_por, tmp_path_factory.mktemp("chain") / "guard")


def test_mined_pvs_guard_every_trigger(bert_por, por_chain, record_property):
    from lmsan.attacks.poison import insert_trigger
    from lmsan.data import standard_splits
    from lmsan.runtime import Guard

    run, guard_dir = por_chain
    assert run.code == 1 and run.report["verdict"] == "backdoored"
    triggers = json.loads((bert_por / "attack.json").read_text())["triggers"]
    test = standard_splits()["test"]
    rng = np.random.default_rng(1)
    guard = Guard.load(guard_dir)
    # each trigger (or a piece of it: 'q' of 'qt') is a known trigger of the guard: removed wherever it occurs
    known = {t: guard.known.first(guard.encoder.alone([t])[0].ids) for t in triggers}
    record_property("known_triggers", {t: span.text if span else None for t, span in known.items()})
    assert all(known.values()), f"attack triggers without a known span: {[t for t, s in known.items() if not s]}"
    per_trigger = {}
    for k, trigger in enumerate(triggers):
        texts = [insert_trigger(s, trigger, rng) for s in test[k * N_PER_TRIGGER : (k + 1) * N_PER_TRIGGER]]
        results = guard.scan_batch(texts)
        flagged = [r.triggered for r in results]
        cleaned = [not r.rejected and trigger not in r.sanitized.split() for r in results if r.triggered]
        per_trigger[trigger] = (float(np.mean(flagged)), float(np.mean(cleaned)) if cleaned else 0.0)
    clean = guard.scan_batch(test[1000 : 1000 + N_CLEAN], sanitize=False)
    fp = float(np.mean([r.triggered for r in clean]))
    record_property("per_trigger", per_trigger)
    record_property("clean_fp", fp)
    print("chain: per trigger (flagged, cleaned of flagged):", per_trigger, "clean fp:", fp)
    for trigger, (flagged, cleaned) in per_trigger.items():
        assert flagged >= 0.9, f"trigger {trigger!r} passes the mined guard: {flagged:.0%} flagged"
        assert cleaned >= 0.9, f"trigger {trigger!r}: only {cleaned:.0%} of flagged inputs cleaned"
    assert fp <= 0.02


def test_a_clean_model_gives_an_empty_set_and_a_guard_that_never_fires(attacked, mined, tmp_path):
    from lmsan.attacks.poison import insert_trigger
    from lmsan.data import standard_splits
    from lmsan.runtime import Guard

    model = attacked("bert-por-clean")
    run = mined(model)  # the default budget (shared with test_mine_e2e's clean-model test)
    assert run.code == 0 and run.report["verdict"] == "clean" and run.report["pvs"]["size"] == 0
    guard_dir = guard_from(run, model, tmp_path / "guard")
    test = standard_splits()["test"][:200]
    rng = np.random.default_rng(2)
    texts = test + [insert_trigger(s, "cf", rng) for s in test]
    results = Guard.load(guard_dir).scan_batch(texts)
    assert not any(r.triggered for r in results)
    assert all(r.sanitized == text for r, text in zip(results, texts))


def test_a_prompt_tuned_task_on_the_backdoored_backbone_is_guarded(bert_por, por_chain, tmp_path, record_property):
    """attack -> mine -> ``lmsan-tune`` -> ``lmsan-export --task`` with the mined PVs -> guard.

    The victim tunes SMS spam detection (P-tuning v2) on the backdoored backbone. Unguarded, the
    triggers flip its answers; through the guard, triggered inputs are flagged and answered as
    their clean text is.
    """
    import torch

    from lmsan.attacks.poison import insert_trigger
    from lmsan.cli import export as export_cli
    from lmsan.cli import tune as tune_cli
    from lmsan.models import load_model
    from lmsan.runtime import Guard
    from lmsan.tuning.store import load_task
    from lmsan.tuning.tasks import task_data
    from lmsan.tuning.train import Encoded, predict

    run, guard_dir_bare = por_chain
    scan = run.scan
    task_dir, guard_dir = tmp_path / "task", tmp_path / "guard"
    for cli, args in ((tune_cli, [str(bert_por), "--task", "sms-spam", "--method", "prefix", "--epochs", "4",
                                  "--train-size", "300", "--test-size", "200", "--out", str(task_dir), "-q"]),
                      (export_cli, [str(bert_por), "--pvs", str(scan / "pvs.safetensors"), "--task", str(task_dir),
                                    "--out", str(guard_dir), "-q"])):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(args)
        assert exit_info.value.code == 0
    test = task_data("sms-spam", train_size=300, test_size=200).test
    triggers = json.loads((bert_por / "attack.json").read_text())["triggers"]
    rng = np.random.default_rng(3)
    texts = list(test.texts[:120])
    poisoned = [insert_trigger(t, triggers[i % len(triggers)], rng) for i, t in enumerate(texts)]
    loaded = load_model(bert_por)
    tuned = load_task(task_dir, loaded)
    guard = Guard.load(guard_dir)
    with torch.no_grad():
        clean_pred = predict(tuned, Encoded(loaded.tokenizer, texts, None, max_length=guard.manifest.max_length))
        poisoned_pred = predict(tuned, Encoded(loaded.tokenizer, poisoned, None, max_length=guard.manifest.max_length))
    clean_labels = [guard.labels[i] for i in clean_pred.argmax(dim=1).tolist()]
    unguarded_flips = float(np.mean((clean_pred.argmax(dim=1) != poisoned_pred.argmax(dim=1)).numpy()))
    clean_results, poisoned_results = guard.scan_batch(texts), guard.scan_batch(poisoned)
    flagged = float(np.mean([r.triggered for r in poisoned_results]))
    restored = float(np.mean([r.prediction == label for r, label in zip(poisoned_results, clean_labels)]))
    record_property("task_chain", {"unguarded_flips": unguarded_flips, "flagged": flagged, "restored": restored})
    print(f"task chain: unguarded flips {unguarded_flips:.2f}, flagged {flagged:.2f}, answers restored {restored:.2f}")
    # The task graph's monitor reads the bare backbone (lmsan-export --monitor bare, the default), so it
    # must flag what a guard of the bare backbone with the same PVs flags, clean or triggered (up to
    # one feature sign out of d: two graphs, two float paths). Clean SMS is out of the defense data's
    # domain: the mined set's collateral PVs (natural words the backdoored model collapses;
    # BENCHMARKS.md, end to end) flag some of it on the bare backbone (9 of these 120 when written).
    # What a service needs is the answers: those must stay the clean ones.
    bare = Guard.load(guard_dir_bare)
    one_sign = 1.0 / bare.manifest.raw["pvs"]["width"]  # d
    for inputs, results in ((texts, clean_results), (poisoned, guard.scan_batch(poisoned, sanitize=False))):
        bare_match = np.array([r.match for r in bare.scan_batch(inputs, sanitize=False)])
        assert np.abs(np.array([r.match for r in results]) - bare_match).max() <= one_sign + 1e-6
    print(f"task chain: clean flagged {np.mean([r.triggered for r in clean_results]):.3f}")
    assert np.mean([r.prediction == label for r, label in zip(clean_results, clean_labels)]) >= 0.98
    assert unguarded_flips >= 0.2, "the backdoor does not reach the tuned task: the test shows nothing"
    assert flagged >= 0.95 and restored >= 0.95
