"""Runtime ``Guard`` on a tiny exported model: scan, pairs, thresholds, bad input, long input,
integrity, providers, threads. (Removal logic itself: ``test_runtime_removal.py``.)"""

from __future__ import annotations

import json
import shutil
import threading

import numpy as np
import pytest
from test_export_guard import ANCHOR, tiny_guard, tiny_model

from lmsan.errors import ConfigError, DataError, IntegrityError, ProviderError
from lmsan.runtime import Guard, ScanResult, demo_table


@pytest.fixture(scope="module")
def guard_dir():
    return tiny_guard()


@pytest.fixture(scope="module")
def guard(guard_dir):
    return Guard.load(guard_dir, threshold=0.95)


def test_load_reports_provider_and_threshold(guard_dir):
    guard = Guard.load(guard_dir)
    assert guard.provider == "CPUExecutionProvider"
    assert guard.threshold == pytest.approx(0.8)
    shapes, run = [], guard._run
    guard._run = lambda arrays, names: shapes.append(arrays["input_ids"].shape) or run(arrays, names)
    assert guard.warmup() >= 0 and shapes == [(1, 16), (64, 38)]  # (1, 16) and (max_batch, max_length)


def test_anchor_triggers_and_removal_clears_it(guard):
    result = guard.scan(ANCHOR)
    assert isinstance(result, ScanResult)
    assert result.triggered and result.match == 1.0 and result.pv_index == 0
    assert not result.rejected and len(result.removed) == 1
    assert result.sanitized.split() == [w for w in ANCHOR.split() if w != result.removed[0]]
    assert not guard.scan(result.sanitized).triggered


def test_clean_result_returns_the_input(guard):
    result = guard.scan("a completely different sentence about markets")
    assert not result.triggered and result.pv_index is None
    assert result.sanitized == "a completely different sentence about markets"
    assert result.removed == () and not result.rejected and result.reason is None
    assert result.match < 0.95 and (result.match * 32).is_integer()  # N_match / d, d = 32


def test_threshold_is_adjustable_at_load(guard_dir):
    everything = Guard.load(guard_dir, threshold=0.0).scan_batch(["one two", "three"], sanitize=False)
    assert all(r.triggered and r.sanitized is None for r in everything)
    with pytest.raises(ConfigError, match="threshold"):
        Guard.load(guard_dir, threshold=1.0)


def test_nothing_clears_means_rejected(guard_dir):
    result = Guard.load(guard_dir, threshold=0.0, max_window=2).scan("alpha beta gamma")
    assert result.triggered and result.rejected and result.sanitized is None and result.removed == ()


def test_scan_batch_matches_single_scans(guard):
    texts = [ANCHOR, "short", "a longer sentence with several more words in it", ("first part", "second part")]
    batch = guard.scan_batch(texts)
    for text, got in zip(texts, batch):
        single = guard.scan(text)
        assert (got.triggered, got.pv_index, got.removed, got.sanitized) == (
            single.triggered, single.pv_index, single.removed, single.sanitized)
        assert got.match == pytest.approx(single.match, abs=1.5 / 32)


def test_shape_buckets_change_no_result(guard, guard_dir):
    """GPU shape buckets (extra rows, rounded widths) give the CPU's answers; off by default on CPU."""
    assert not guard.buckets
    bucketed = Guard.load(guard_dir, threshold=0.95, buckets=True, max_batch=6)
    texts = [ANCHOR, "short", "a longer sentence with several more words in it", ("first part", "second part"),
             f"{ANCHOR} and then some", "x"]
    for got, want in zip(bucketed.scan_batch(texts), guard.scan_batch(texts)):
        assert (got.triggered, got.pv_index, got.removed, got.sanitized) == (
            want.triggered, want.pv_index, want.removed, want.sanitized)
        assert got.match == pytest.approx(want.match, abs=1.5 / 32)
    batch = bucketed.encoder.pad(bucketed.encoder.encodings([("short",)]), multiple=16)
    assert batch.input_ids.shape == (1, 16) and batch.attention_mask.sum() < 16
    shapes, run = [], bucketed._run
    bucketed._run = lambda arrays, names: shapes.append(arrays["input_ids"].shape) or run(arrays, names)
    bucketed.warmup()  # every bucket: rows 1, 2, 4, 6 x widths 16, 32, 38 (max_length)
    assert shapes == [(b, t) for b in (1, 2, 4, 6) for t in (16, 32, 38)]


def test_rows_of_very_different_lengths_go_in_separate_calls(guard_dir):
    """On the CPU a round is split where padding would waste more than SPLIT_TOKENS row-tokens."""
    from lmsan.runtime.guard import SPLIT_TOKENS

    guard = Guard.load(guard_dir, threshold=0.95)
    long_text = " ".join(ANCHOR.split() * 4)  # 38 tokens: the tiny guard's maximum is 40
    texts = ["x", long_text, "y", ANCHOR]
    lengths = guard.encoder.lengths([(t,) for t in texts])
    assert max(lengths) - min(lengths) > SPLIT_TOKENS
    calls = []
    run = guard._run
    guard._run = lambda arrays, names: calls.append(arrays["input_ids"].shape) or run(arrays, names)
    got = guard.scan_batch(texts, sanitize=False)
    guard._run = run
    assert sorted(rows for rows, _ in calls) == [1, 3]  # "x", "y", ANCHOR together; the long one alone
    for text, result in zip(texts, got):
        assert (result.triggered, result.pv_index) == (guard.scan(text).triggered, guard.scan(text).pv_index)
        assert result.match == pytest.approx(guard.scan(text, sanitize=False).match, abs=1.5 / 32)


@pytest.mark.parametrize("kw", [dict(), dict(max_batch=2), dict(buckets=True, max_batch=2)])
def test_saliency_rows_survive_split_and_bucketed_calls(guard, guard_dir, kw):
    """Rows sorted by length, split into calls, padded to buckets: each saliency row and each
    ``pv_match`` row is its own."""
    split = Guard.load(guard_dir, threshold=0.95, **kw)
    texts = ["x", " ".join(ANCHOR.split() * 4), "y z", ANCHOR, "the lazy dog"]
    units = [(t,) for t in texts]
    match, nearest, triggered, shares, rows = split._detect(units, saliency=True, per_pv=True)
    assert np.allclose(shares.max(axis=1), match) and np.array_equal(shares.argmax(axis=1), nearest)
    for unit, score, flag, share, row in zip(units, match, triggered, shares, rows):
        alone = guard._detect([unit], saliency=True, per_pv=True)
        n = guard.encoder.lengths([unit])[0]
        assert flag == alone[2][0] and score == pytest.approx(alone[0][0], abs=1.5 / 32)
        assert np.allclose(share, alone[3][0], atol=1.5 / 32)
        assert np.allclose(row[:n], alone[4][0][:n], atol=1e-5) and np.allclose(row[n:], 0, atol=1e-6)
        assert split.encoder.top_word(unit, row) == guard.encoder.top_word(unit, alone[4][0])


def test_sentence_pairs_use_token_types_like_transformers(guard, guard_dir):
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(str(tiny_model()))
    units = [("is it raining?", "no, it is sunny."), ("Héllo   WORLD", "x")]
    for unit in units:
        encoding = guard.encoder.encodings([unit])[0]
        expected = reference(*unit)
        assert encoding.ids == expected["input_ids"]
        assert encoding.type_ids == expected["token_type_ids"]
    result = guard.scan(("is it raining?", "no, it is sunny."))
    assert result.sanitized == ("is it raining?", "no, it is sunny.")


@pytest.mark.parametrize("bad, message", [
    ("", "empty"), ("   \n\t", "empty"), ("abc\ud800def", "surrogate U\\+D800 at index 3"),
    ("abc\x00", "control character U\\+0000"), ("bell\x07", "control"), (42, "expected a str"),
    (("only one",), "expected a str"), (("a", ""), "input 0: second text of the pair: empty"),
])
def test_bad_input_is_a_data_error(guard, bad, message):
    with pytest.raises(DataError, match=message):
        guard.scan(bad)


def test_bad_input_in_a_batch_names_its_index(guard):
    with pytest.raises(DataError, match="input 2"):
        guard.scan_batch(["fine", "also fine", ""])
    assert guard.scan_batch([]) == []


def test_too_many_characters_is_a_data_error(guard_dir):
    small = Guard.load(guard_dir, max_chars=50)
    with pytest.raises(DataError, match="exceeds the limit of 50"):
        small.scan("x" * 51)


def test_long_input_is_scanned_in_windows(guard):
    words = [f"word{i % 97}" for i in range(17_000)]
    text = " ".join(words)  # ~100k characters
    assert len(text) > 100_000
    spans = guard.encoder.windows(text)
    assert len(spans) > 100
    assert all(n <= guard.manifest.max_length for n in guard.encoder.lengths([(text[a:b],) for a, b in spans]))
    assert " ".join(text[a:b] for a, b in spans).split() == words  # word-aligned, nothing lost
    result = guard.scan(text, sanitize=False)
    overlapping = guard.encoder.windows(text, overlap=guard.max_window - 1)
    alone = guard.scan_batch([text[a:b] for a, b in overlapping], sanitize=False)
    assert result.match == max(r.match for r in alone) and result.triggered == any(r.triggered for r in alone)


def test_long_input_removal_splices_windows(guard_dir, monkeypatch):
    guard = Guard.load(guard_dir, threshold=0.95)
    before, after = "filler words here " * 6, " and more filler text" * 6
    text = before + ANCHOR + after
    assert guard.encoder.lengths([(text,)])[0] > guard.manifest.max_length
    a = len(before)
    spans = [(0, a - 1), (a, a + len(ANCHOR)), (a + len(ANCHOR) + 1, len(text))]
    monkeypatch.setattr(guard.encoder, "windows", lambda *_, **__: spans)  # align one window with ANCHOR
    result = guard.scan(text)
    alone = guard.scan(ANCHOR)
    assert result.triggered and result.match == 1.0 and result.removed == alone.removed
    assert result.sanitized == before + alone.sanitized + after


def test_giant_word_windows_cut_inside_the_word(guard):
    text = "prefix " + "ab." * 5_000 + " suffix"  # one whitespace word of 10k tokens ("ab" * 20k: one [UNK])
    spans = guard.encoder.windows(text)
    assert all(n <= guard.manifest.max_length for n in guard.encoder.lengths([(text[a:b],) for a, b in spans]))
    assert "".join(text[a:b] for a, b in spans).replace(" ", "") == text.replace(" ", "")  # nothing lost
    result = guard.scan(text, sanitize=False)
    assert result.match == max(r.match for r in guard.scan_batch([text[a:b] for a, b in spans], sanitize=False))


def test_long_pair_is_a_data_error(guard):
    with pytest.raises(DataError, match="sentence pair of .* tokens exceeds"):
        guard.scan(("word " * 100, "other"))


def _copy(guard_dir, tmp_path):
    target = tmp_path / "g"
    shutil.copytree(guard_dir, target)
    return target


def _write_manifest(target, manifest):
    """Write an edited manifest with a matching digest (what an attacker with write access can do)."""
    from lmsan.files import json_digest

    manifest = {**manifest, "digest": json_digest(manifest, exclude="digest")}
    (target / "guard.json").write_text(json.dumps(manifest))


def test_tampered_graph_is_an_integrity_error(guard_dir, tmp_path):
    target = _copy(guard_dir, tmp_path)
    with open(target / "model.onnx", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(IntegrityError, match="model.onnx does not match"):
        Guard.load(target)


def test_manifest_hash_mismatch_is_an_integrity_error(guard_dir, tmp_path):
    target = _copy(guard_dir, tmp_path)
    manifest = json.loads((target / "guard.json").read_text())
    manifest["files"]["tokenizer.json"] = "0" * 64
    (target / "guard.json").write_text(json.dumps(manifest))
    with pytest.raises(IntegrityError, match="digest in .* does not match its content"):
        Guard.load(target)
    _write_manifest(target, manifest)
    with pytest.raises(IntegrityError, match="tokenizer.json"):
        Guard.load(target)


@pytest.mark.parametrize("name", ["tokenizer.json", "model.onnx", "guard.json"])
def test_missing_file_is_a_data_error(guard_dir, tmp_path, name):
    target = _copy(guard_dir, tmp_path)
    (target / name).unlink()
    with pytest.raises(DataError, match="missing|not found"):
        Guard.load(target)


def test_malformed_manifests_are_data_errors(guard_dir, tmp_path):
    target = _copy(guard_dir, tmp_path)
    manifest = json.loads((target / "guard.json").read_text())
    (target / "guard.json").write_text("{broken")
    with pytest.raises(DataError, match="cannot read JSON"):
        Guard.load(target)
    _write_manifest(target, {**manifest, "graph": "../model.onnx"})
    with pytest.raises(DataError, match="names a path"):
        Guard.load(target)
    del manifest["target"]
    _write_manifest(target, manifest)
    with pytest.raises(DataError, match="malformed"):
        Guard.load(target)
    with pytest.raises(DataError, match="not found"):
        Guard.load(tmp_path / "nope")


def test_unavailable_provider_lists_the_available_ones(guard_dir, monkeypatch):
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])  # onnxruntime-gpu has CUDA
    with pytest.raises(ProviderError, match="CUDAExecutionProvider is not available.*available: .*CPUExecutionProvider"):
        Guard.load(guard_dir, providers=["cuda"])
    with pytest.raises(ProviderError, match="NoSuchProvider"):
        Guard.load(guard_dir, providers="NoSuchProvider")


def test_silent_fallback_is_refused(monkeypatch, guard_dir):
    import onnxruntime as ort

    from lmsan.runtime import session as session_module

    class FellBack:
        def __init__(self, *args, **kwargs):
            pass

        def get_providers(self):
            return ["CPUExecutionProvider"]

    monkeypatch.setattr(ort, "InferenceSession", FellBack)
    providers = [("CUDAExecutionProvider", {}), ("CPUExecutionProvider", {})]
    with pytest.raises(ProviderError, match="runs on CPUExecutionProvider"):
        session_module.open_session(guard_dir / "model.onnx", providers)
    assert session_module.open_session(guard_dir / "model.onnx", providers, allow_fallback=True)


def test_tensorrt_gets_an_engine_cache_and_a_profile(monkeypatch, tmp_path):
    import onnxruntime as ort

    from lmsan.runtime.session import resolve_providers

    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    resolved = resolve_providers("tensorrt", inputs=["input_ids", "attention_mask"], max_batch=8,
                                 max_length=128, cache=tmp_path / "trt")
    assert [name for name, _ in resolved] == ["TensorrtExecutionProvider", "CUDAExecutionProvider",
                                              "CPUExecutionProvider"]
    options = resolved[0][1]
    assert options["trt_engine_cache_enable"] and options["trt_engine_cache_path"] == str(tmp_path / "trt")
    assert options["trt_profile_max_shapes"] == "input_ids:8x128,attention_mask:8x128"


def test_one_guard_is_safe_across_threads(guard):
    texts = [ANCHOR, "some clean text", ("pair a", "pair b"), "another sentence"] * 4
    expected = [(r.triggered, r.removed, r.sanitized) for r in guard.scan_batch(texts)]
    results, errors = {}, []

    def work(index):
        try:
            results[index] = [(r.triggered, r.removed, r.sanitized) for r in guard.scan_batch(texts)]
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and all(results[i] == expected for i in range(4))


def test_search_strategies_agree_on_the_anchor(guard_dir):
    searches = ("probe", "bisect", "group", "batched", "sequential")
    outcomes = {s: Guard.load(guard_dir, threshold=0.95, search=s).scan(ANCHOR) for s in searches}
    assert len({(r.removed, r.sanitized) for r in outcomes.values()}) == 1 and outcomes["probe"].removed
    assert Guard.load(guard_dir)._saliency  # probe above started from the saliency guess
    with pytest.raises(ConfigError, match="unknown removal search"):
        Guard.load(guard_dir, search="clever")


def _bpe_encoder(tmp_path):
    from lmsan.models.tiny import TinySpec, build_tiny
    from lmsan.runtime.encode import Encoder

    sentences = [f"The market for {w} rose sharply, in the {m} quarter." for w in ("oil", "gold", "wheat")
                 for m in ("first", "second", "third")] * 5
    _, tokenizer = build_tiny(TinySpec(arch="roberta", hidden=32, layers=1, heads=2, intermediate=64,
                                       bpe_vocab=300), sentences)
    tokenizer.backend_tokenizer.save(str(tmp_path / "tokenizer.json"))
    return Encoder(tmp_path / "tokenizer.json", max_length=64, pad_id=tokenizer.pad_token_id)


def test_top_word_maps_the_best_token_to_its_whitespace_word(guard, tmp_path):
    """WordPiece and byte-level BPE: every token leads back to the str.split word holding it."""
    unit = ("The market,  for oil rose:sharply", "in the quarter")
    for encoder in (guard.encoder, _bpe_encoder(tmp_path)):
        encoding = encoder.encodings([unit])[0]
        words = set()
        for token in range(len(encoding)):
            scores = np.zeros(len(encoding))
            scores[token] = 1.0
            words.add(encoder.top_word(unit, scores))
        assert words == {*unit[0].split(), *unit[1].split()}  # a special token's one-hot: the first word wins the tie
        scores = np.arange(len(encoding), dtype=float)  # the last token is special: the next best wins
        assert encoder.top_word(unit, scores) == "quarter"
        assert encoder.top_word(unit, scores, protect="quart") == "the"
        assert encoder.top_word(unit, np.append(scores, [99.0, 99.0])) == "quarter"  # padding is ignored
        assert encoder.top_word(unit, scores[:-1]) is None  # scores for another encoding


def test_demo_table_renders_markdown(guard):
    table = demo_table(guard, [ANCHOR, "pipes | and\nnewlines"])
    lines = table.strip().splitlines()
    assert lines[0].startswith("| input | match |") and len(lines) == 4
    assert "| yes |" in lines[2] and "pipes \\| and newlines" in lines[3]


def test_mask_target_needs_the_mask_token(tmp_path):
    from lmsan.export import export_guard
    from lmsan.pvset import PVSet

    pvs = PVSet(np.random.default_rng(1).standard_normal((2, 32)).astype(np.float32), target="mask")
    export_guard(tiny_model(), pvs, tmp_path / "g")
    guard = Guard.load(tmp_path / "g", threshold=0.0, max_window=1)
    with pytest.raises(DataError, match="must contain the mask token"):
        guard.scan("no mask here")
    result = guard.scan("the answer is [MASK] .")
    assert result.triggered and result.rejected  # everything triggers at 0; [MASK] is never removed


def _scored_by_words(guard, shares):
    """Make ``guard`` score each text by its words: ``shares(words)`` (the text's ``str.split``
    words, in order) gives each PV's share of agreeing signs; the match is the largest, and a
    text is triggered at 0.8 or more. Returns ``guard``."""
    def detect(units, encodings=None, *, saliency=False, logits=False, per_pv=False, deadline=None):
        rows = np.array([shares(" ".join(unit).split()) for unit in units], np.float32)
        match = rows.max(axis=1)
        return (match, rows.argmax(axis=1), match >= 0.8) + ((rows,) if per_pv else ())

    guard._detect = detect
    return guard


def _two_word_trigger(guard):
    """Make ``guard`` score texts by their words. PV 0's share: 0.5, +0.35 with ``zork`` (which
    alone crosses T = 0.8), +0.1 with ``plim`` (the rest of the trigger ``zork plim``); PV 1's:
    0.55 (where clean text sits), +0.1 with ``blorp`` (a word near PV 1, like a topic word near
    another PV). The match is the larger share."""
    return _scored_by_words(guard, lambda w: [0.5 + 0.35 * ("zork" in w) + 0.1 * ("plim" in w),
                                              0.55 + 0.1 * ("blorp" in w)])


def test_a_removal_grows_into_the_rest_of_a_two_word_trigger(guard_dir):
    text = "the cat zork plim sat down"
    grown = _two_word_trigger(Guard.load(guard_dir, saliency=False)).scan(text)
    assert grown.triggered and grown.removed == ("zork plim",) and grown.sanitized == "the cat sat down"
    alone = _two_word_trigger(Guard.load(guard_dir, saliency=False, grow_margin=None)).scan(text)
    assert alone.removed == ("zork",) and alone.sanitized == "the cat plim sat down"
    strict = _two_word_trigger(Guard.load(guard_dir, saliency=False, grow_margin=0.15)).scan(text)
    assert strict.removed == ("zork",)  # plim lowers the match by 0.1 only
    assert _two_word_trigger(Guard.load(guard_dir, saliency=False, max_window=1)).scan(text).removed == ("zork",)


def test_a_removal_grows_by_the_flagging_pvs_share_not_the_best_pvs(guard_dir):
    """Without plim the text sits nearest PV 1 (0.55): the best share drops by only 0.05, PV 0's
    (the flagging PV's) by 0.1. A graph without ``pv_match`` can only follow the best share."""
    text = "the cat zork plim sat down"
    guard = _two_word_trigger(Guard.load(guard_dir, saliency=False))
    assert guard._per_pv and guard.scan(text).removed == ("zork plim",)
    guard._per_pv = False  # as for a graph exported before its pv_match output
    assert guard.scan(text).removed == ("zork",)


def test_a_removal_grows_into_a_neighbour_the_guard_flags_alone_on_the_same_pv(guard_dir):
    """``quux`` is the rest of the trigger ``zork quux`` that barely moves the text it sits in
    (+0.05 on PV 0) but, alone, lands on PV 0 (0.9): once ``zork`` goes the text is nearest PV 1
    (``blorp``), so the margin rule does not grow; the accomplice rule does. ``wibble`` alone
    lands on PV 1, another PV: it stays."""
    def shares(w):
        return [0.5 + 0.35 * ("zork" in w) + (0.4 if w == ["quux"] else 0.05 * ("quux" in w)),
                0.55 + 0.1 * ("blorp" in w) + (0.35 if w == ["wibble"] else 0.0)]

    guard = _scored_by_words(Guard.load(guard_dir, saliency=False), shares)
    result = guard.scan("the cat zork quux blorp sat")
    assert result.removed == ("zork quux",) and result.sanitized == "the cat blorp sat"
    assert guard.scan("the cat zork wibble blorp sat").removed == ("zork",)
    assert guard.scan("the cat zork blorp sat").removed == ("zork",)
    off = _scored_by_words(Guard.load(guard_dir, saliency=False, grow_margin=None), shares)
    assert off.scan("the cat zork quux blorp sat").removed == ("zork",)
    narrow = _scored_by_words(Guard.load(guard_dir, saliency=False, max_window=1), shares)
    assert narrow.scan("the cat zork quux blorp sat").removed == ("zork",)


def _two_triggers(guard):
    """Make ``guard`` score texts by their words: PV 0's share 0.5, +0.35 for each of the triggers
    ``zork`` and ``gnar`` (either alone crosses T = 0.8), +0.1 with ``plim`` (the rest of
    ``gnar plim``), at most 1; PV 1's 0.55."""
    return _scored_by_words(guard, lambda w: [
        min(1.0, 0.5 + 0.35 * ("zork" in w) + 0.35 * ("gnar" in w) + 0.1 * ("plim" in w)), 0.55])


def test_an_input_no_window_clears_is_peeled_and_the_text_left_cleaned_like_any_input(guard_dir):
    """Two triggers far apart: no window of up to 3 words clears the text. Peeling removes the
    word that lowers PV 0's share most (``zork``, the first of two equal ones), and the text left
    is cleaned as it would be on its own: the window search finds ``gnar``, growing takes ``plim``."""
    text = "zork the cat sat on gnar plim mat"
    result = _two_triggers(Guard.load(guard_dir, saliency=False)).scan(text)
    assert result.triggered and not result.rejected
    assert result.removed == ("zork", "gnar plim") and result.sanitized == "the cat sat on mat"
    alone = _two_triggers(Guard.load(guard_dir, saliency=False)).scan("the cat sat on gnar plim mat")
    assert alone.sanitized == result.sanitized  # the text left, cleaned on its own
    off = _two_triggers(Guard.load(guard_dir, saliency=False, peel=False)).scan(text)
    assert off.rejected and off.sanitized is None and off.reason == "no candidate of up to 3 words clears it"
    narrow = _two_triggers(Guard.load(guard_dir, saliency=False, max_window=1)).scan(text)
    assert narrow.rejected and narrow.reason == "no candidate of up to 1 words clears it"  # no room to peel
    three = "zork a b c gnar d e f zork gnar"  # every occurrence goes: one word peeled is enough
    assert _two_triggers(Guard.load(guard_dir, saliency=False)).scan(three).sanitized == "a b c d e f"


def test_a_peeled_word_grows_into_the_rest_of_its_trigger(guard_dir):
    """``zork quux`` is a trigger whose rest ``quux`` barely moves the text (+0.05 on PV 0) but
    alone lands on PV 0; the clean words hold ``blorp``, which flags PV 1 (the clean text's own
    false positive). No window clears both; peeling takes ``zork``, grows into ``quux`` (the
    text left is flagged by PV 1, so ``_grow``'s cleared rule could not), and the text left is
    cleaned of ``blorp``."""
    def shares(w):
        return [0.5 + 0.35 * ("zork" in w) + (0.4 if w == ["quux"] else 0.05 * ("quux" in w)),
                0.55 + 0.3 * ("blorp" in w)]

    result = _scored_by_words(Guard.load(guard_dir, saliency=False), shares).scan(
        "zork quux the cat sat on the blorp mat")
    assert result.removed == ("zork", "zork quux", "blorp") and result.sanitized == "the cat sat on the mat"
    off = _scored_by_words(Guard.load(guard_dir, saliency=False, peel=False), shares)
    assert off.scan("zork quux the cat sat on the blorp mat").rejected


def test_growing_takes_an_accomplice_whose_text_another_pv_flags_and_cleans_that_text(guard_dir):
    """Removing ``zork`` clears the input, but its accomplice ``quux`` also held PV 1 down: without
    it the clean words (``blorp``) flag PV 1, the clean text's own false positive. Growing takes
    ``quux`` anyway and cleans the text left like any input; without peeling it stays."""
    def shares(w):
        return [0.5 + 0.35 * ("zork" in w) + (0.4 if w == ["quux"] else 0.05 * ("quux" in w)),
                0.55 + 0.3 * ("blorp" in w) - 0.1 * ("quux" in w)]

    text = "the cat zork quux sat on the blorp mat"
    result = _scored_by_words(Guard.load(guard_dir, saliency=False), shares).scan(text)
    assert result.removed == ("zork", "zork quux", "blorp") and result.sanitized == "the cat sat on the mat"
    off = _scored_by_words(Guard.load(guard_dir, saliency=False, peel=False), shares).scan(text)
    assert off.removed == ("zork",) and off.sanitized == "the cat quux sat on the blorp mat"


def test_peeling_stops_at_its_word_limit_and_work_cap(guard_dir):
    """Three triggers to peel past (``zork``, ``gnar``, ``blix`` each cross T alone) need two
    peeled words and a window: within ``max_window - 1 = 2``. With ``max_window=2`` only one word
    may be peeled, and a small ``max_trials`` stops peeling first: the input stays rejected."""
    def shares(w):
        return [min(1.0, 0.5 + 0.35 * len(set(w) & {"zork", "gnar", "blix"})), 0.55]

    text = "zork one two three gnar four five six blix seven"
    guards = {kw: _scored_by_words(Guard.load(guard_dir, saliency=False, **dict(kw)), shares) for kw in
              [(), (("max_window", 2),), (("max_trials", 40),)]}
    result = guards[()].scan(text)
    assert result.removed == ("zork", "gnar", "blix") and result.sanitized == "one two three four five six seven"
    narrow = guards[(("max_window", 2),)].scan(text)
    assert narrow.rejected and narrow.reason == (
        "no candidate of up to 2 words clears it, nor one after peeling up to 1 words within the work caps")
    capped = guards[(("max_trials", 40),)].scan(text)  # the window search fits, peeling does not
    assert capped.rejected and capped.reason == (
        "no candidate of up to 3 words clears it, nor one after peeling up to 2 words within the work caps")


def test_growing_leaves_clean_neighbours_and_spliced_windows_right(guard_dir, monkeypatch):
    guard = _two_word_trigger(Guard.load(guard_dir, saliency=False))
    assert guard.scan("the cat zork sat").sanitized == "the cat sat"  # neighbours lower nothing
    assert guard.scan("the cat zork blorp sat").removed == ("zork",)  # blorp lowers it, but pulls towards PV 1
    before, trigger = "filler words here " * 12, "zork plim four five zork six"
    text = before + trigger
    assert guard.encoder.lengths([(text,)])[0] > guard.manifest.max_length
    monkeypatch.setattr(guard.encoder, "windows", lambda *_, **__: [(0, len(before) - 1), (len(before), len(text))])
    result = guard.scan(text)  # the second window grows; the splice drops plim and both zorks
    assert result.removed == ("zork plim",) and result.sanitized == before + "four five six"
    with pytest.raises(ConfigError, match="grow_margin"):
        Guard.load(guard_dir, grow_margin=1.0)
