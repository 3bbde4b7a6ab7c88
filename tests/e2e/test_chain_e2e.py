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

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

N_CLEAN, N_PER_TRIGGER = 500, 50


def mined_guard(model: Path, defense: list[str], out: Path, *extra: str) -> tuple[int, Path, dict]:
    """Run ``lmsan-mine`` (the CLI, in-process) and export a guard from the PVs it wrote."""
    from lmsan.cli import mine as mine_cli
    from lmsan.export import export_guard

    data = out / "defense.txt"
    data.write_text("\n".join(defense) + "\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info:
        mine_cli.main([str(model), "--data", str(data), "--out", str(out / "scan"), "--device", "cpu", "-q",
                       *extra])
    pvs = PVSet.load(out / "scan" / "pvs.safetensors")
    guard = export_guard(model, pvs, out / "guard").path
    return int(exit_info.value.code), guard, json.loads((out / "scan" / "report.json").read_text())


def test_mined_pvs_guard_every_trigger(bert_por, defense_sentences, tmp_path, record_property):
    from lmsan.attacks.poison import insert_trigger
    from lmsan.data import standard_splits
    from lmsan.runtime import Guard

    code, guard_dir, report = mined_guard(bert_por, defense_sentences[:1000], tmp_path, "--mode", "search",
                                          "--loops", "6", "--patience", "2")
    assert code == 1 and report["verdict"] == "backdoored"
    triggers = json.loads((bert_por / "attack.json").read_text())["triggers"]
    test = standard_splits()["test"]
    rng = np.random.default_rng(1)
    guard = Guard.load(guard_dir)
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


def test_a_clean_model_gives_an_empty_set_and_a_guard_that_never_fires(attacked, defense_sentences, tmp_path):
    from lmsan.attacks.poison import insert_trigger
    from lmsan.data import standard_splits
    from lmsan.runtime import Guard

    model = attacked("bert-por-clean")
    code, guard_dir, report = mined_guard(model, defense_sentences[:1000], tmp_path)
    assert code == 0 and report["verdict"] == "clean" and report["pvs"]["size"] == 0
    test = standard_splits()["test"][:200]
    rng = np.random.default_rng(2)
    texts = test + [insert_trigger(s, "cf", rng) for s in test]
    results = Guard.load(guard_dir).scan_batch(texts)
    assert not any(r.triggered for r in results)
    assert all(r.sanitized == text for r, text in zip(results, texts))
