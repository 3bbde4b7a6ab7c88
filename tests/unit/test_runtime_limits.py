"""Bounded work (trial cap, time budget, fail closed / open), long inputs through the real window
splitting (overlapping windows, a 2-word trigger across a boundary), and a concurrency soak."""

from __future__ import annotations

import os

import numpy as np
import pytest
from test_export_guard import ANCHOR, tiny_guard

from lmsan.errors import ConfigError
from lmsan.runtime import Guard
from lmsan.runtime.removal import WORD


@pytest.fixture(scope="module")
def guard_dir():
    return tiny_guard()


def _count_rows(guard):
    """Wrap the guard's session calls; return the list their row counts go to."""
    rows, run = [], guard._run
    guard._run = lambda arrays, names: rows.append(arrays["input_ids"].shape[0]) or run(arrays, names)
    return rows


def test_the_trial_cap_fails_closed_with_a_reason(guard_dir):
    text = " ".join(f"w{i}" for i in range(60))  # at threshold 0 everything fires: nothing clears
    capped = Guard.load(guard_dir, threshold=0.0, max_trials=20)
    units = len(capped.encoder.windows(text, overlap=2))  # the tiny guard takes 38 tokens: a few windows
    rows = _count_rows(capped)
    result = capped.scan(text)
    assert result.triggered and result.rejected and result.sanitized is None
    assert result.reason.startswith("work cap") and 0 < sum(rows) - units <= 20  # detection, then <= 20 trials
    full = Guard.load(guard_dir, threshold=0.0, max_trials=None, max_window=1).scan(text)
    assert full.rejected and full.reason.startswith("no candidate")


def test_fail_open_passes_the_input_unsanitized(guard_dir):
    text = " ".join(f"w{i}" for i in range(60))
    result = Guard.load(guard_dir, threshold=0.0, max_trials=5, fail_open=True).scan(text)
    assert result.triggered and not result.rejected and result.sanitized == text and result.removed == ()
    assert "work cap" in result.reason and "fail open" in result.reason


def test_the_time_budget_stops_removal(guard_dir):
    text = " ".join(f"w{i}" for i in range(60))
    result = Guard.load(guard_dir, threshold=0.0, time_budget_s=1e-9).scan(text)
    assert result.rejected and result.reason.startswith("time budget")
    with pytest.raises(ConfigError, match="max_trials"):
        Guard.load(guard_dir, max_trials=0)
    with pytest.raises(ConfigError, match="time_budget_s"):
        Guard.load(guard_dir, time_budget_s=0)


def test_caps_change_nothing_within_them(guard_dir):
    texts = [ANCHOR, f"{ANCHOR} and some more words after it", "a clean sentence"]
    capped = Guard.load(guard_dir, threshold=0.95, time_budget_s=60.0).scan_batch(texts)
    free = Guard.load(guard_dir, threshold=0.95, max_trials=None).scan_batch(texts)
    assert capped == free and capped[0].removed and capped[0].reason is None


def test_a_hostile_long_input_is_bounded_per_input(guard_dir):
    """Every window fires and nothing clears (threshold 0): without a cap the removal of this
    ~190-window input sends tens of thousands of trials; with the default cap at most 1024."""
    text = " ".join(f"w{i % 500}x" for i in range(6000))
    guard = Guard.load(guard_dir, threshold=0.0)
    units = len(guard.encoder.windows(text, overlap=guard.max_window - 1))
    assert units > 100
    rows = _count_rows(guard)
    result = guard.scan(text)
    assert result.rejected and result.reason.startswith("work cap")
    assert sum(rows) - units <= guard.max_trials


def _fake_detector(guard, trigger):
    """Replace the graph by a detector that fires when ``trigger`` (words) appears in a unit."""
    def detect(units, encodings=None, *, saliency=False, logits=False, per_pv=False, deadline=None):
        hits = [any(tuple(words[i : i + len(trigger)]) == trigger for i in range(len(words)))
                for words in ([w for text in unit for w in text.split()] for unit in units)]
        match = np.array([1.0 if h else 0.5 for h in hits], np.float32)
        scores = match, np.array([0 if h else -1 for h in hits], np.int64), np.array(hits)
        return scores + ((match[:, None],) if per_pv else ())
    guard._detect = detect
    guard._saliency = False


def test_a_two_word_trigger_across_a_window_boundary_is_found_and_removed(guard_dir):
    guard = Guard.load(guard_dir)
    filler = [f"f{i}" for i in range(400)]
    for position in range(5, 60):  # put "cf mn" across the first boundary of non-overlapping windows
        words = filler[:position] + ["cf", "mn"] + filler[position:]
        text = " ".join(words)
        first = guard.encoder.windows(text, overlap=0)[0]
        if text[: first[1]].split()[-1] == "cf":
            break
    else:
        pytest.fail("no placement puts the trigger across a window boundary")
    _fake_detector(guard, ("cf", "mn"))
    result = guard.scan(text)
    assert result.triggered and not result.rejected and result.removed == ("cf",)
    assert result.sanitized == " ".join(filler[:position] + ["mn"] + filler[position:])
    assert not guard.scan(result.sanitized).triggered


def test_windows_overlap_by_max_window_minus_one_words(guard_dir):
    guard = Guard.load(guard_dir)
    text = " ".join(f"word{i % 97}, x{i}." for i in range(3000))
    for overlap in (0, 2, 4):
        spans = guard.encoder.windows(text, overlap=overlap)
        assert all(n <= guard.manifest.max_length for n in guard.encoder.lengths([(text[a:b],) for a, b in spans]))
        words = [m.span() for m in WORD.finditer(text)]
        covered = set()
        for a, b in spans:
            inside = [i for i, (x, y) in enumerate(words) if a <= x and y <= b]
            covered.update(zip(inside, inside[overlap:]))  # runs of overlap + 1 words held whole
        assert covered == {(i, i + overlap) for i in range(len(words) - overlap)}
        assert len(spans) < (len(words) / 5 if overlap < 4 else len(words) / 3)  # windows still advance


def test_a_trigger_in_every_window_is_removed_everywhere(guard_dir):
    guard = Guard.load(guard_dir)
    text = " ".join(f"f{i} cf" if i % 7 == 0 else f"f{i}" for i in range(300))
    _fake_detector(guard, ("cf",))
    result = guard.scan(text)
    assert result.removed == ("cf",) and result.sanitized == " ".join(f"f{i}" for i in range(300))


SOAK = """
import ctypes, gc, json, os, sys
from concurrent.futures import ThreadPoolExecutor
from lmsan.runtime import Guard

def rss_mb():  # resident memory, after returning freed heap to the OS (glibc keeps per-thread arenas)
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

guard = Guard.load(sys.argv[1], threshold=0.95)
texts = json.loads(sys.argv[2])
texts = [tuple(t) if isinstance(t, list) else t for t in texts]
serial = [guard.scan(t) for t in texts]
jobs = [i % len(texts) for i in range(int(sys.argv[3]))]
same = lambda _: all(guard.scan(texts[i]) == serial[i] for i in jobs)
rounds = int(sys.argv[4])
with ThreadPoolExecutor(16) as pool:
    equal, rss = True, []
    for _ in range(rounds):  # the first rounds grow thread arenas and tokenizers; a leak grows every round
        equal = all(pool.map(same, range(16))) and equal
        rss.append(rss_mb())
print(json.dumps({"equal": equal, "rss": rss, "triggered": sum(r.triggered for r in serial)}))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
def test_concurrency_soak_16_threads(guard_dir):
    """16 threads x 100 scans on one Guard, six rounds, equal the serial results; RSS stays flat
    after two warm-up rounds (glibc gives each thread its own malloc arena, ~60 MB here, and under
    CPU contention the arenas still grew by up to 37 MB in the second round; later rounds grew
    < 0.3 MB). In a fresh interpreter: the heap of earlier tests makes RSS noisy."""
    import json
    import subprocess
    import sys

    texts = [ANCHOR, "some clean text", ["pair a", "pair b"], f"{ANCHOR} with a tail", "another sentence",
             " ".join(["long"] * 60), "x"]
    done = subprocess.run([sys.executable, "-c", SOAK, str(guard_dir), json.dumps(texts), "100", "6"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["equal"] and report["triggered"] >= 1
    rss = report["rss"]  # MB after each round of 16 x 100 scans
    assert rss[-1] - rss[1] < 8, f"RSS grew {rss[-1] - rss[1]:.1f} MB over {len(rss) - 2} rounds after warm-up: {rss}"
