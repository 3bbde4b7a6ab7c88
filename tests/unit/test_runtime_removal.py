"""Batched trigger removal against the sequential reference of method.md §4 (fake detectors)."""

from __future__ import annotations

import zlib

from hypothesis import given, settings
from hypothesis import strategies as st

from lmsan.runtime import removal
from lmsan.runtime.removal import make_search, run_searches

VOCAB = ["the", "cat", "sat", "on", "mat", "cf", "mn", "a", "dog", "tq"]


def reference_purge(sentences, is_triggered, *, max_window=3, protect=None):
    """method.md §4 verbatim: (sanitized sentences, removed words or None, rejected)."""
    if not is_triggered(sentences):
        return sentences, None, False
    for w in range(1, max_window + 1):
        for sentence in sentences:
            words = sentence.split()
            for start in range(len(words) - w + 1):
                candidate = tuple(words[start : start + w])
                if protect and any(protect in word for word in candidate):
                    continue
                trial = tuple(_remove_all(s, candidate) for s in sentences)
                if not is_triggered(trial):
                    return trial, " ".join(candidate), False
    return sentences, None, True


def _remove_all(sentence, candidate):
    words, w, kept, i = sentence.split(), len(candidate), [], 0
    while i < len(words):
        if tuple(words[i : i + w]) == candidate:
            i += w
        else:
            kept.append(words[i])
            i += 1
    return " ".join(kept)


def presence_detector(triggers):
    """Monotone: triggered while all words of some trigger set are present (removal never adds).

    Word *sequences* would not do: removing words can make two words adjacent.
    """
    def is_triggered(unit):
        present = {word for sentence in unit for word in sentence.split()}
        return any(set(trigger) <= present for trigger in triggers)
    return is_triggered


def hash_detector(salt):
    """Arbitrary (non-monotone) but deterministic: about 2 in 3 trials stay triggered."""
    return lambda unit: zlib.crc32(("|".join(unit) + salt).encode()) % 3 != 0


def _scan(strategy, units, is_triggered, **kw):
    """Flag with the detector, then purge the triggered units in lockstep; count detector calls."""
    calls = []

    def detect(trials):
        calls.append(len(trials))
        return [is_triggered(t) for t in trials]

    triggered = [is_triggered(u) for u in units]
    searches = [make_search(strategy, u, **kw) for u, t in zip(units, triggered) if t]
    outcomes = iter(run_searches(searches, detect))
    results = []
    for unit, flag in zip(units, triggered):
        if not flag:
            results.append((unit, None, False))
        else:
            o = next(outcomes)
            results.append((tuple(" ".join(s.split()) for s in o.sentences), o.removed, o.rejected))
    return results, calls


def _scan_probe(units, is_triggered, **kw):
    """``probe`` with its 24-word minimum lifted, so that short random texts reach its halving,
    window, superset and fallback paths instead of plain ``bisect``."""
    saved, removal.PROBE_MIN_WORDS = removal.PROBE_MIN_WORDS, 0
    try:
        return _scan("probe", units, is_triggered, **kw)
    finally:
        removal.PROBE_MIN_WORDS = saved


sentence = st.lists(st.sampled_from(VOCAB), min_size=0, max_size=12).map(" ".join)
unit = st.one_of(st.tuples(sentence), st.tuples(sentence, sentence))
trigger_set = st.lists(st.sampled_from(VOCAB), min_size=1, max_size=2).map(tuple)


@settings(max_examples=150, deadline=None)
@given(units=st.lists(unit, min_size=1, max_size=4), salt=st.text(max_size=3),
       chunk=st.integers(1, 9), max_window=st.integers(1, 3))
def test_batched_equals_sequential_for_any_detector(units, salt, chunk, max_window):
    is_triggered = hash_detector(salt)
    expected = [reference_purge(u, is_triggered, max_window=max_window) for u in units]
    for strategy in ("sequential", "batched"):
        got, _ = _scan(strategy, units, is_triggered, max_window=max_window, chunk=chunk)
        assert got == expected, strategy


@settings(max_examples=200, deadline=None)
@given(units=st.lists(unit, min_size=1, max_size=4), triggers=st.lists(trigger_set, min_size=1, max_size=3),
       block=st.one_of(st.none(), st.integers(2, 5)), chunk=st.integers(1, 9),
       guess=st.one_of(st.none(), st.sampled_from(VOCAB)))
def test_group_equals_sequential_for_monotone_detectors(units, triggers, block, chunk, guess):
    is_triggered = presence_detector(triggers)
    expected = [reference_purge(u, is_triggered) for u in units]
    got, _ = _scan("group", units, is_triggered, block=block, chunk=chunk)
    assert got == expected
    got, _ = _scan("bisect", units, is_triggered, chunk=chunk)
    assert got == expected
    got, _ = _scan("code", units, is_triggered, chunk=chunk)
    assert got == expected
    got, _ = _scan("probe", units, is_triggered, chunk=chunk)
    assert got == expected
    got, _ = _scan_probe(units, is_triggered, chunk=chunk)
    assert got == expected
    got, _ = _scan("probe", units, is_triggered, chunk=chunk, guess=guess)  # right, wrong or absent
    assert got == expected
    got, _ = _scan_probe(units, is_triggered, chunk=chunk, guess=guess)
    assert got == expected


long_text = st.lists(st.sampled_from(VOCAB + ["[MASK]", "x[MASK]"]), min_size=0, max_size=40).map(" ".join)


@settings(max_examples=150, deadline=None)
@given(texts=st.lists(long_text, min_size=1, max_size=2), triggers=st.lists(trigger_set, min_size=1, max_size=2),
       guess=st.one_of(st.none(), st.sampled_from(VOCAB + ["[MASK]", "x[MASK]", "absent"])),
       protect=st.sampled_from([None, "[MASK]"]))
def test_probe_with_guesses_equals_sequential_on_long_texts(texts, triggers, guess, protect):
    """Up to 40 words: several split rounds, repeated and protected words, any guess."""
    units = [tuple(texts)]
    is_triggered = presence_detector(triggers)
    expected = [reference_purge(u, is_triggered, protect=protect) for u in units]
    got, _ = _scan_probe(units, is_triggered, guess=guess, protect=protect)
    assert got == expected


@settings(max_examples=50, deadline=None)
@given(units=st.lists(unit, min_size=1, max_size=3), salt=st.text(max_size=3), guess=st.sampled_from(VOCAB))
def test_group_and_bisect_never_crash_on_non_monotone_detectors(units, salt, guess):
    for strategy in ("group", "bisect", "code", "probe", "probe, no minimum", "probe, guess"):
        if strategy == "probe, guess":
            got, _ = _scan_probe(units, hash_detector(salt), chunk=4, guess=guess)
        elif strategy == "probe, no minimum":
            got, _ = _scan_probe(units, hash_detector(salt), chunk=4)
        else:
            got, _ = _scan(strategy, units, hash_detector(salt), chunk=4)
        for (sentences, removed, rejected), original in zip(got, units):
            assert not (removed and rejected)
            assert len(sentences) == len(original)


def test_protected_words_are_never_candidates():
    unit = ("fill [MASK] cf in",)
    got = reference_purge(unit, presence_detector([("[MASK]",)]), protect="[MASK]")
    assert got == (unit, None, True)
    for strategy in ("sequential", "batched", "group", "bisect", "code", "probe"):
        results, _ = _scan(strategy, [unit], presence_detector([("[MASK]",)]), protect="[MASK]")
        assert results == [(unit, None, True)]
    results, _ = _scan_probe([unit], presence_detector([("[MASK]",)]), protect="[MASK]")
    assert results == [(unit, None, True)]
    masked = ("a b [MASK] c cf d e f g",)  # the mask word stays in every keep-only trial
    trials: list = []
    detector = presence_detector([("cf", "[MASK]")])
    saved, removal.PROBE_MIN_WORDS = removal.PROBE_MIN_WORDS, 0
    try:
        outcome = run_searches([make_search("probe", masked, protect="[MASK]")],
                               lambda batch: trials.extend(batch) or [detector(t) for t in batch])[0]
    finally:
        removal.PROBE_MIN_WORDS = saved
    assert outcome.removed == "cf" and all("[MASK]" in t[0] for t in trials)


def test_smarter_searches_use_fewer_calls_or_trials():
    words = [f"w{i}" for i in range(40)]
    words.insert(29, "cf")
    unit = (" ".join(words),)
    detector = presence_detector([("cf",)])
    expected = reference_purge(unit, detector)
    assert expected[1] == "cf"
    sizes = {}
    for strategy in ("sequential", "batched", "group", "bisect", "code"):
        results, calls = _scan(strategy, [unit], detector)
        assert results[0] == expected
        sizes[strategy] = (len(calls), sum(calls))
    assert sizes["sequential"] == (30, 30)
    assert sizes["batched"] == (1, 41)
    assert sizes["group"][1] < 15
    assert sizes["bisect"][1] <= 7 and sizes["bisect"][0] == sizes["bisect"][1]
    assert sizes["code"] == (2, 8)  # 41 candidates: 6 coded trials in one call, then c_k alone and c_0..c_k-1


def test_probe_sends_fewer_words_than_bisect():
    """Keep-only trials are short: probe's trials hold about 3 inputs' words, bisect's ~log2 n;
    and 4-way splitting takes 65 words to a window in 2-3 calls (at most 5 calls in all)."""
    words = [f"w{i}" for i in range(64)]
    sent, calls = {}, {}
    for position in (0, 13, 40, 64):
        unit = (" ".join(words[:position] + ["cf"] + words[position:]),)
        detector = presence_detector([("cf",)])
        for strategy in ("bisect", "probe"):
            trials: list = []
            search = make_search(strategy, unit)
            rounds: list = []
            outcome = run_searches([search], lambda batch: rounds.append(batch) or trials.extend(batch)
                                   or [detector(t) for t in batch])[0]
            assert outcome.removed == "cf" and "cf" not in outcome.sentences[0].split()
            sent[strategy, position] = sum(len(t[0].split()) for t in trials)
            calls[strategy, position] = len(rounds)
    for position in (0, 13, 40, 64):
        assert sent["probe", position] <= 3 * 65 < sent["bisect", position]
        assert calls["probe", position] <= 5 < calls["bisect", position]


def test_a_right_guess_takes_one_round():
    """The saliency guess: removed alone and (via a short superset) confirmed in one call."""
    words = [f"w{i}" for i in range(64)]
    words.insert(40, "cf")
    unit = (" ".join(words),)
    detector = presence_detector([("cf",)])
    expected = reference_purge(unit, detector)
    for guess, most_calls in (("cf", 1), ("w3", 6), ("absent", 5)):
        results, calls = _scan("probe", [unit], detector, guess=guess)
        assert results[0] == expected
        assert len(calls) <= most_calls and (guess != "cf" or calls == [2])


def test_probe_falls_back_to_bisect_for_context_triggers():
    """A trigger that needs company (two words, or any 5 words) is still found exactly."""
    unit = ("a b c d e f cf g h mn i",)
    for detector in (presence_detector([("cf", "mn")]), lambda u: "cf" in u[0].split() and len(u[0].split()) > 5):
        expected = reference_purge(unit, detector)
        results, calls = _scan_probe([unit], detector)
        assert results[0] == expected and expected[1] is not None
        assert len(calls) > 4  # probe's halving and window rounds ran before bisect took over


def test_removal_keeps_spacing_of_kept_words():
    from lmsan.runtime.removal import _Text

    text = _Text("Hello,\n cf  world  cf\tagain")
    assert text.without([("cf",)]) == "Hello,\n world  again"
    assert text.without([]) == "Hello,\n cf  world  cf\tagain"


def test_work_caps_stop_a_group_and_spare_the_others():
    """A group whose next round would pass ``max_trials`` stops (rejected, with the reason); other
    groups finish; a detector raising ``BudgetExceeded`` stops every pending search."""
    from lmsan.runtime.removal import BudgetExceeded

    long_unit = (" ".join(f"w{i}" for i in range(40)),)
    short_unit = ("a b cf d",)
    detector = presence_detector([("nothing clears this",), ("cf",)])
    always = lambda unit: True  # noqa: E731  (nothing clears: the search would try every candidate)
    searches = [make_search("sequential", long_unit), make_search("sequential", long_unit),
                make_search("bisect", short_unit)]
    sent = []
    outcomes = run_searches(searches, lambda batch: sent.append(len(batch)) or
                            [always(t) if "w0" in t[0] or "w1" in t[0] else detector(t) for t in batch],
                            groups=[0, 0, 1], max_trials=10)
    assert [o.reason for o in outcomes[:2]] == ["work cap: removal needs more than 10 trials"] * 2
    assert outcomes[0].rejected and outcomes[0].trials == 5 and outcomes[2].removed == "cf"
    assert sum(sent) <= 10 + outcomes[2].trials

    def out_of_time(batch):
        raise BudgetExceeded("time budget of 1 s exceeded")

    stopped = run_searches([make_search("probe", short_unit)], out_of_time)
    assert stopped[0].rejected and stopped[0].reason == "time budget of 1 s exceeded" and stopped[0].sentences == ()


def test_grow_adds_each_neighbour_of_each_removed_run():
    from lmsan.runtime.removal import grow

    growths = grow(("a cf b  c cf",), "cf")  # cf at words 1 and 4; kept words keep their spacing
    assert [(g.sentences, g.phrase) for g in growths] == [
        (("b  c",), "a cf"), (("a c",), "cf b"), (("a b",), "c cf")]
    assert growths[1].drops == (frozenset({1, 2, 4}),)
    again = grow(("a cf b  c cf",), "cf", growths[1].drops)  # the grown run grows again; one trial each
    assert [(g.sentences, g.phrase) for g in again] == [(("c",), "a cf b"), (("a",), "cf b c")]


def test_grow_spares_protected_words_and_the_other_sentence():
    from lmsan.runtime.removal import grow

    growths = grow(("[MASK] cf b", "x cf"), "cf", protect="[MASK]")
    assert [(g.sentences, g.phrase) for g in growths] == [(("[MASK]", "x"), "cf b"), (("[MASK] b", ""), "x cf")]
    assert grow(("cf",), "cf") == []  # nothing next to it


def test_peel_lists_the_input_without_each_distinct_word():
    from lmsan.runtime.removal import peel

    trials = peel(("a cf b  cf", "x a"), protect=None)  # every occurrence, in both sentences; spacing kept
    assert trials == [(("cf b  cf", "x"), "a"), (("a b", "x a"), "cf"), (("a cf cf", "x a"), "b"),
                      (("a cf b  cf", "a"), "x")]
    assert [word for _, word in peel(("[MASK] is cf",), protect="[MASK]")] == ["is", "cf"]
    assert peel(("",)) == []


def test_trials_spent_before_count_against_the_cap():
    """A peeled text's search starts with the trials its input already sent: they count against
    ``max_trials`` and in the outcome."""
    unit = ("a b cf d",)
    detector = presence_detector([("cf",)])
    fresh = run_searches([make_search("sequential", unit)], lambda batch: [detector(t) for t in batch])[0]
    assert fresh.removed == "cf" and fresh.trials == 3
    later = run_searches([make_search("sequential", unit)], lambda batch: [detector(t) for t in batch],
                         max_trials=10, spent=[7])[0]
    assert later.removed == "cf" and later.trials == 10
    over = run_searches([make_search("sequential", unit)], lambda batch: [detector(t) for t in batch],
                        max_trials=10, spent=[8])[0]
    assert over.rejected and over.reason == "work cap: removal needs more than 10 trials"
