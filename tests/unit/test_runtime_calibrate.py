"""Per-PV thresholds calibrated on clean inputs (``lmsan.runtime.calibrate``, ``lmsan-calibrate``):
the thresholds are the clipped quantiles of the inputs' shares, the loaded guard flags by them,
the triggered anchor still flags and is cleaned, guard.json keeps its integrity, bad input
writes nothing."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from test_export_guard import ANCHOR, tiny_guard

from lmsan.errors import ConfigError, DataError, InputError, IntegrityError
from lmsan.files import json_digest, write_json
from lmsan.runtime import Guard, calibrate, write_calibration
from lmsan.runtime.calibrate import calibrated_scores, min_inputs

LOW = 0.6  # T_match at which the random-init tiny model flags many clean sentences
WORDS = ("markets rose sharply today while the committee debated new rules for banks and schools across "
         "the region after a long night of talks").split()


def clean_texts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 12)))) for _ in range(n)]


@pytest.fixture()
def guard_dir(tmp_path):
    return shutil.copytree(tiny_guard(), tmp_path / "guard")


def shares(guard: Guard, texts: list[str]) -> np.ndarray:
    """float32 [N, K]: each text's share of agreeing signs with every PV, from the graph."""
    return guard._detect([(t,) for t in texts], per_pv=True)[3]


def test_equal_thresholds_give_the_graphs_scores(guard_dir):
    guard = Guard.load(guard_dir, threshold=LOW)
    texts = clean_texts(40) + [ANCHOR]
    match, pv_index, triggered, per_pv = guard._detect([(t,) for t in texts], per_pv=True)
    got = calibrated_scores(per_pv, np.full(per_pv.shape[1], LOW, np.float32))
    np.testing.assert_array_equal(got[0], match)
    np.testing.assert_array_equal(got[1], pv_index)
    np.testing.assert_array_equal(got[2], triggered)


def test_calibrated_scores_follow_each_pvs_own_threshold():
    per_pv = np.array([[0.85, 0.70], [0.99, 0.65], [0.80, 0.75], [0.5, 0.5]], np.float32)
    match, pv_index, triggered = calibrated_scores(per_pv, np.array([0.9, 0.6], np.float32))
    assert triggered.tolist() == [True, True, True, False]
    assert pv_index.tolist() == [1, 0, 1, 1]  # the PV furthest past (or nearest to) its own threshold
    assert match.tolist() == pytest.approx([0.70, 0.99, 0.75, 0.5])


def test_thresholds_are_capped_quantiles_and_the_loaded_guard_flags_by_them(guard_dir):
    texts = clean_texts(300)
    guard = Guard.load(guard_dir, threshold=LOW)
    found = calibrate(guard, texts, quantile=0.95, cap=0.9)
    expected = np.minimum(np.quantile(shares(guard, texts), 0.95, axis=0, method="higher"), 0.9)
    assert found.pv_thresholds == pytest.approx(expected.tolist(), abs=1e-6)
    assert found.inputs == 300 and found.quantile == 0.95 and found.cap == 0.9
    assert found.flagged_after < found.flagged_before
    before = np.mean([r.triggered for r in guard.scan_batch(texts, sanitize=False)])
    assert found.flagged_before == pytest.approx(before, abs=1e-6)

    write_calibration(guard_dir, found)
    calibrated = Guard.load(guard_dir, threshold=LOW)
    assert calibrated.pv_thresholds == pytest.approx(np.maximum(LOW, expected).tolist(), abs=1e-6)
    after = [r.triggered for r in calibrated.scan_batch(texts, sanitize=False)]
    assert np.mean(after) == pytest.approx(found.flagged_after, abs=1e-6)
    held_out = [r.triggered for r in calibrated.scan_batch(clean_texts(300, seed=1), sanitize=False)]
    plain = [r.triggered for r in guard.scan_batch(clean_texts(300, seed=1), sanitize=False)]
    assert np.mean(held_out) < np.mean(plain)  # fewer false flags on inputs it was not calibrated on
    anchor = calibrated.scan(ANCHOR)  # the trigger still flags and is removed
    assert anchor.triggered and anchor.pv_index == 0 and not anchor.rejected and len(anchor.removed) == 1
    assert not calibrated.scan(anchor.sanitized).triggered


def test_a_pair_reads_as_its_nearer_sentence(guard_dir):
    guard = Guard.load(guard_dir)
    firsts, seconds = clean_texts(101), clean_texts(101, seed=2)
    found = calibrate(guard, list(zip(firsts, seconds)), quantile=0.99, cap=1.0)
    nearer = np.maximum(shares(guard, firsts), shares(guard, seconds))
    expected = np.quantile(nearer, 0.99, axis=0, method="higher")
    assert found.pv_thresholds == pytest.approx(expected.tolist(), abs=1e-6)


def test_the_cap_bounds_a_threshold_and_names_the_pv(guard_dir, caplog):
    guard = Guard.load(guard_dir)
    poisoned = clean_texts(100) + [ANCHOR] * 2  # triggered inputs in the calibration set
    found = calibrate(guard, poisoned, quantile=0.99, cap=0.9)
    assert found.pv_thresholds[0] == pytest.approx(0.9) and found.capped == (0,)
    assert "stay at the cap" in caplog.text
    write_calibration(guard_dir, found)
    assert Guard.load(guard_dir).scan(ANCHOR).triggered  # share 1.0 > the cap


def test_digest_changes_and_reset_restores_it(guard_dir):
    original = Guard.load(guard_dir).digest
    digest = write_calibration(guard_dir, calibrate(Guard.load(guard_dir, threshold=LOW), clean_texts(120)))
    assert digest != original and Guard.load(guard_dir, expect_digest=digest).pv_thresholds is not None
    with pytest.raises(IntegrityError):
        Guard.load(guard_dir, expect_digest=original)
    assert write_calibration(guard_dir, None) == original
    assert Guard.load(guard_dir, expect_digest=original).pv_thresholds is None


def test_edited_or_malformed_thresholds_are_refused(guard_dir):
    write_calibration(guard_dir, calibrate(Guard.load(guard_dir, threshold=LOW), clean_texts(120)))
    path = guard_dir / "guard.json"
    raw = json.loads(path.read_text())
    raw["calibration"]["pv_thresholds"][0] = 0.99
    write_json(path, raw)
    with pytest.raises(IntegrityError, match="edited"):
        Guard.load(guard_dir)
    for bad in ([0.9, 0.9], [0.9, 0.9, 1.5], [0.9, 0.9, "x"]):
        raw["calibration"]["pv_thresholds"] = bad
        raw["digest"] = json_digest(raw, exclude="digest")
        write_json(path, raw)
        with pytest.raises(DataError, match="pv_thresholds"):
            Guard.load(guard_dir)


def test_bad_calibration_requests(guard_dir):
    guard = Guard.load(guard_dir)
    with pytest.raises(ConfigError, match="quantile"):
        calibrate(guard, clean_texts(120), quantile=1.0)
    with pytest.raises(ConfigError, match="cap"):
        calibrate(guard, clean_texts(120), cap=0.8)
    assert min_inputs(0.99) == 101 and min_inputs(0.9) == 11 and min_inputs(0.995) == 201
    with pytest.raises(InputError, match="at least 101"):
        calibrate(guard, clean_texts(100))
    with pytest.raises(InputError) as bad:
        calibrate(guard, clean_texts(50) + [""] + clean_texts(60))
    assert bad.value.index == 50
    long_pair = (" ".join(["word"] * 30), " ".join(["another"] * 30))  # too long joined: found while reading
    with pytest.raises(InputError) as bad:
        calibrate(guard, clean_texts(290) + [long_pair] + clean_texts(20))
    assert bad.value.index == 290  # numbered in the whole list, not in its chunk of 256


def run_cli(args, capsys):
    from lmsan.cli import calibrate as cli

    with pytest.raises(SystemExit) as done:
        cli.main(args)
    out, err = capsys.readouterr()
    return done.value.code, out, err


def test_cli_dry_run_json_and_bad_lines_write_nothing(guard_dir, tmp_path, capsys):
    manifest = (guard_dir / "guard.json").read_bytes()
    clean = tmp_path / "clean.jsonl"
    clean.write_text("".join(json.dumps(t) + "\n" for t in clean_texts(120)))
    code, out, err = run_cli([str(guard_dir), "--file", str(clean), "--dry-run", "--json", "-q"], capsys)
    assert code == 0 and json.loads(out)["digest"] is None and len(json.loads(out)["calibration"]["pv_thresholds"]) == 3
    assert (guard_dir / "guard.json").read_bytes() == manifest

    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(t) + "\n" for t in clean_texts(120)) + '{"oops": 1}\n')
    code, out, err = run_cli([str(guard_dir), "--file", str(bad)], capsys)
    assert code == 2 and "bad.jsonl:121" in err and "nothing written" in err and "Traceback" not in err
    code, out, err = run_cli([str(guard_dir), "one", "two"], capsys)
    assert code == 2 and "at least 101" in err
    assert (guard_dir / "guard.json").read_bytes() == manifest

    code, out, err = run_cli([str(guard_dir), "--file", str(clean), "-q"], capsys)
    assert code == 0 and Guard.load(guard_dir, expect_digest=out.strip()).pv_thresholds is not None
    code, out, err = run_cli([str(guard_dir), "--reset", "--json"], capsys)
    assert code == 0 and json.loads(out)["calibration"] is None and Guard.load(guard_dir).pv_thresholds is None


def test_a_triggered_input_reports_its_flagging_pvs_share(guard_dir):
    """With per-PV thresholds the unit nearest a PV need not be the one that flags: a pair whose
    first sentence sits at 0.88 under a raised threshold and whose second flags at 0.82 reports
    the second's PV and share."""
    guard = Guard.load(guard_dir)
    owners = [(0, (0, 1)), (0, (0, 1))]
    result = guard._verdict(("first", "second"), [0, 1], owners, [0.88, 0.82], [0, 1], [False, True], {},
                            sanitize=False)
    assert result.triggered and (result.match, result.pv_index) == (0.82, 1)
