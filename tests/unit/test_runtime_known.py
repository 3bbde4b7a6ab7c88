"""Known triggers (``lmsan.runtime.known``): the mined PVs' confirmed trigger spans, matched by
token id, removed wherever they occur, and the text left scanned again; from the PV set through
``lmsan-export`` into ``guard.json`` and ``Guard.scan_batch``."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
from test_export_guard import ANCHOR, anchor_pvs, tiny_guard, tiny_model
from test_runtime_guard import _bpe_encoder, _write_manifest
from tokenizers import Tokenizer

from lmsan.errors import DataError, PVSetError
from lmsan.pvset import KnownTrigger
from lmsan.runtime import Guard
from lmsan.runtime.known import KnownSpan, KnownTriggers, Stripped, names, with_spellings
from lmsan.runtime.removal import drop_spans

CF, Q, ZEBRA, T_PIECE = 12935, 1053, 29145, 2102  # MiniLM WordPiece ids: "cf", "q", "zebra", "##t"
CLEAN = "a completely different sentence about markets"


@pytest.fixture(scope="module")
def known_dir(tmp_path_factory):
    """The tiny guard with two known triggers: "cf" (PV 1) and the word-start piece "q" (PV 2)."""
    target = tmp_path_factory.mktemp("known") / "guard"
    shutil.copytree(tiny_guard(), target)
    manifest = json.loads((target / "guard.json").read_text())
    _write_manifest(target, {**manifest, "known_triggers": [{"pv": 1, "text": "cf", "token_ids": [CF]},
                                                            {"pv": 2, "text": "q", "token_ids": [Q]}]})
    return target


@pytest.fixture(scope="module")
def guard(known_dir):
    return Guard.load(known_dir, threshold=0.95)


@pytest.fixture(scope="module")
def tokenizer():
    tokenizer = Tokenizer.from_file(str(tiny_guard() / "tokenizer.json"))
    tokenizer.no_truncation()
    return tokenizer


def test_spans_match_token_ids_not_characters(tokenizer):
    known = KnownTriggers([KnownSpan(0, "q", (Q,)), KnownSpan(1, "zebra s", (ZEBRA, 2015))])
    ids = lambda text: tokenizer.encode(text, add_special_tokens=False).ids  # noqa: E731
    assert known.first(ids("flights on Qantas")).text == "q"  # the word-start piece of a rare word
    assert known.first(ids("war in iraq and a quiet quay")) is None  # one token each: no "q" piece
    assert known.first(ids("two zebras")).text == "zebra s" and known.first(ids("one zebra")) is None
    assert [(s.text, a, b) for s, a, b in known.occurrences(ids("qt q"))] == [("q", 0, 1), ("q", 2, 3)]


def test_strip_removes_whole_words_under_each_occurrence_and_keeps_the_spacing(tokenizer):
    known = KnownTriggers([KnownSpan(0, "cf", (CF,)), KnownSpan(1, "q", (Q,))])
    encode = lambda texts: tokenizer.encode_batch(texts, add_special_tokens=False)  # noqa: E731
    stripped = known.strip(("Sign (cf) here,  then qt  and Qantas.",), encode)
    assert stripped.texts == ("Sign here,  then and",) and stripped.removed == ("(cf)", "qt", "Qantas.")
    assert [s.text for s in stripped.found] == ["cf", "q"] and not stripped.stuck
    assert drop_spans("[MASK]cf is cf", [(0, 8), (12, 14)], protect="[MASK]") == ("[MASK]cf is", ("cf",))


def test_strip_repeats_until_no_span_is_left_and_never_removes_the_mask_word(tokenizer):
    known = KnownTriggers([KnownSpan(0, "cf mn", (CF, 24098))])
    encode = lambda texts: tokenizer.encode_batch(texts, add_special_tokens=False)  # noqa: E731
    nested = known.strip(("the market rose cf cf mn mn today", "no trigger here"), encode)
    assert nested.texts == ("the market rose today", "no trigger here")  # the outer pair joined: removed too
    assert nested.removed == ("cf mn", "cf mn") and not nested.stuck
    broken = known.strip(("It was cf mn[MASK] .",), encode, "[MASK]")  # removing "cf" breaks the span
    assert broken.texts == ("It was mn[MASK] .",) and broken.removed == ("cf",) and not broken.stuck
    stuck = KnownTriggers([KnownSpan(0, "cf", (CF,))]).strip(("It was cf[MASK] .",), encode, "[MASK]")
    assert stuck.stuck and stuck.texts == ("It was cf[MASK] .",) and stuck.found


def test_a_bpe_trigger_is_also_matched_where_it_has_no_leading_space(tmp_path, tokenizer):
    """Byte-level BPE spells a word otherwise at a text's start, after a newline or punctuation
    (no leading-space mark): that spelling is added, and counts only as a whole word."""
    encode = _bpe_encoder(tmp_path).alone
    mined = tuple(encode([" market"])[0].ids)
    spans = with_spellings([KnownSpan(3, "market", mined)], encode)
    assert spans[0] == KnownSpan(3, "market", mined) and len(spans) == 2
    added = spans[1]
    assert added.whole_word and added.pv == 3 and added.token_ids != mined and names(spans) == ("market",)
    known = KnownTriggers(spans)
    stripped = known.strip(("market rose (market) and\nmarket fell, the market held",), encode)
    assert stripped.texts == ("rose and\nfell, the held",) and len(stripped.removed) == 4
    assert [s.whole_word for s in stripped.found] == [False, True]  # this tokenizer adds a prefix space
    inside = "the supermarkets rose"  # the bare spelling's ids inside a longer word: no trigger
    assert known.first(encode([inside])[0].ids) == added  # the detection pass's id-only check passes it on
    assert known.found_in((inside,), encode) == () and known.strip((inside,), encode) == Stripped((inside,), (), ())
    wordpiece = lambda texts: tokenizer.encode_batch(texts, add_special_tokens=False)  # noqa: E731
    assert with_spellings([KnownSpan(0, "cf", (CF,))], wordpiece) == (KnownSpan(0, "cf", (CF,)),)  # alike everywhere


def test_an_unflagged_input_holding_a_known_trigger_loses_it_and_is_scanned_again(guard, known_dir):
    plain = Guard.load(known_dir, threshold=0.95, known_triggers=False)
    text = "the market rose cf today"
    assert not plain.scan(text).triggered  # the features alone do not flag it
    result = guard.scan(text)
    assert result.triggered and result.pv_index == 1 and not result.rejected
    assert result.sanitized == "the market rose today" and result.removed == ("cf",)
    assert result.known_triggers == ("cf",) and result.match == plain.scan(text).match
    assert result.to_dict()["known_triggers"] == ["cf"]
    unsanitized = guard.scan(text, sanitize=False)
    assert unsanitized.triggered and unsanitized.sanitized is None and unsanitized.known_triggers == ("cf",)


def test_what_the_removal_search_leaves_is_stripped_too(guard):
    first = guard.scan(ANCHOR)  # the features flag the anchor; its search removes one word
    result = guard.scan(f"{ANCHOR} cf")
    assert result.triggered and result.pv_index == first.pv_index == 0
    assert set(result.removed) >= {first.removed[0], "cf"} and "cf" not in result.sanitized.split()
    assert result.known_triggers == ("cf",) and not guard.scan(result.sanitized).triggered


def test_pairs_windows_and_batches(guard):
    pair = guard.scan(("alpha beta", "gamma qt delta"))
    assert pair.sanitized == ("alpha beta", "gamma delta") and pair.pv_index == 2 and pair.removed == ("qt",)
    long = " ".join(["word"] * 80 + ["cf"] + ["word"] * 80)  # windows: the 40-position model
    assert guard.scan(long).sanitized == " ".join(["word"] * 160)
    texts = [CLEAN, "the market rose cf today", ("one", "two"), "cf", ANCHOR]
    batch = guard.scan_batch(texts)
    assert [r.known_triggers for r in batch] == [(), ("cf",), (), ("cf",), ()]
    for text, got in zip(texts, batch):  # one batch gives what one input at a time gives
        single = guard.scan(text)
        assert (got.triggered, got.pv_index, got.removed, got.sanitized, got.rejected) == (
            single.triggered, single.pv_index, single.removed, single.sanitized, single.rejected)


def test_a_trigger_the_second_scans_removal_joins_again_is_rejected(guard, monkeypatch):
    """Removing words in the scan of the text left can join two pieces of a known trigger again
    (faked here: that scan's removal is made to leave "cf" behind); it fails closed."""
    from lmsan.runtime import guard as guard_module

    original, calls = guard_module.Guard._scan, []

    def second_scan_joins(self, inputs, sanitize):
        results, held = original(self, inputs, sanitize)
        calls.append(inputs)
        if len(calls) == 2:
            results = [replace(r, triggered=True, removed=("x",), sanitized=f"{r.sanitized} cf") for r in results]
        return results, held

    monkeypatch.setattr(guard_module.Guard, "_scan", second_scan_joins)
    result = guard.scan("the market rose cf today")
    assert len(calls) == 2 and result.rejected and result.sanitized is None
    assert result.reason == "a known trigger is left after removing the words around it"
    assert result.triggered and result.known_triggers == ("cf",) and result.removed == ("cf", "x")


def test_a_known_trigger_inside_the_mask_word_is_a_rejection(tmp_path):
    """A guard at target mask keeps the word holding the mask token: a trigger glued to it cannot
    go, so the input is rejected rather than passed with the trigger in it."""
    from lmsan.export import export_guard
    from lmsan.pvset import PVSet

    model = tiny_model()
    pvs = anchor_pvs(model)
    pvs = PVSet(pvs.vectors, target="mask", triggers=(KnownTrigger("cf", (CF,), 1.0), None, None))
    mask = Guard.load(export_guard(model, pvs, tmp_path / "guard").path, threshold=0.99)
    glued = mask.scan("the market rose today . It was cf[MASK] .")
    assert glued.triggered and glued.rejected and glued.removed == () and glued.known_triggers == ("cf",)
    assert glued.reason == "a known trigger lies inside a word holding the mask token"
    apart = mask.scan("the market rose cf today . It was [MASK] .")
    assert not apart.rejected and apart.sanitized == "the market rose today . It was [MASK] ."


def test_nothing_left_is_a_rejection(guard):
    result = guard.scan("cf qt")
    assert result.triggered and result.rejected and result.sanitized is None
    assert result.reason == "nothing is left after removing its known triggers"
    assert result.known_triggers == ("cf", "q") and result.removed == ("cf qt",)


def test_inputs_without_known_triggers_scan_as_without_them(guard, known_dir):
    plain = Guard.load(known_dir, threshold=0.95, known_triggers=False)
    texts = [CLEAN, ANCHOR, ("first part", "second part"), "Iraq and a quiet quay"]
    assert guard.scan_batch(texts) == plain.scan_batch(texts)


def test_lmsan_guard_prints_the_known_triggers_and_can_ignore_them(known_dir, capsys):
    from lmsan.cli import guard as guard_cli

    def run(*extra):
        with pytest.raises(SystemExit) as exit_info:
            guard_cli.main([str(known_dir), "the market rose cf today", "--threshold", "0.95", "-q", *extra])
        return exit_info.value.code, capsys.readouterr().out.rstrip("\n").split("\t")

    code, fields = run()
    assert code == 1 and fields[0] == "TRIGGERED" and fields[2] == "pv=1"
    assert fields[3:] == ["removed=cf", "known=cf", "the market rose today"]
    code, fields = run("--no-known-triggers")
    assert code == 0 and fields[0] == "clean"


def test_demo_table_names_the_known_triggers(guard):
    from lmsan.runtime import demo_table

    lines = demo_table(guard, ["the market rose cf today", CLEAN]).strip().splitlines()
    assert "| yes (known: cf) | cf | the market rose today |" in lines[2] and "| no |" in lines[3]


@pytest.mark.parametrize("entry, message", [
    ("cf", "known_triggers must be a list"),
    (["cf"], r"known_triggers\[0\] must be an object"),
    ([{"pv": 3, "text": "cf", "token_ids": [CF]}], r"known_triggers\[0\]\.pv must be an integer >= 0 < 3"),
    ([{"pv": 0, "text": "cf", "token_ids": []}], r"known_triggers\[0\]\.token_ids must be a non-empty list"),
    ([{"pv": 0, "text": "cf", "token_ids": [-1]}], "must be non-negative integers"),
    ([{"pv": 0, "token_ids": [CF]}], r"missing field known_triggers\[0\]\.text"),
    ([{"pv": 0, "text": "cf", "token_ids": [10 ** 7]}], "outside the tokenizer's vocabulary"),
    ([{"pv": 0, "text": "sep", "token_ids": [102]}], "holds a special token"),  # [SEP]: in every input
])
def test_malformed_known_triggers_are_data_errors(tmp_path, entry, message):
    target = tmp_path / "g"
    shutil.copytree(tiny_guard(), target)
    manifest = json.loads((target / "guard.json").read_text())
    _write_manifest(target, {**manifest, "known_triggers": entry})
    with pytest.raises(DataError, match=message):
        Guard.load(target)


def test_export_writes_the_pv_sets_known_triggers(tmp_path):
    from lmsan.export import export_guard

    model = tiny_model()
    pvs = anchor_pvs(model)
    pvs = type(pvs)(pvs.vectors, target="cls", triggers=(None, KnownTrigger("cf", (CF,), 0.98), None))
    result = export_guard(model, pvs, tmp_path / "guard")
    assert result.manifest["known_triggers"] == [{"pv": 1, "text": "cf", "token_ids": [CF]}]
    loaded = Guard.load(result.path, threshold=0.95)
    assert loaded.known.spans == (KnownSpan(1, "cf", (CF,)),)
    assert loaded.scan("prices fell cf sharply").sanitized == "prices fell sharply"
    assert np.isclose(loaded.scan(CLEAN).match, Guard.load(tiny_guard(), threshold=0.95).scan(CLEAN).match)
    bad = type(pvs)(pvs.vectors, target="cls", triggers=(None, KnownTrigger("cf", (10 ** 7,), 0.98), None))
    with pytest.raises(PVSetError, match="outside the vocabulary"):
        export_guard(model, bad, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
