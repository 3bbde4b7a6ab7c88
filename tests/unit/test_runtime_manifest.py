"""``guard.json``: its own digest, pinning (``expect_digest``), legacy guards, and validation of
every field with a ``DataError`` naming the file."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
from test_export_guard import ANCHOR, tiny_guard

from lmsan.errors import ConfigError, DataError, IntegrityError
from lmsan.files import json_digest
from lmsan.runtime import Guard


@pytest.fixture(scope="module")
def guard_dir():
    return tiny_guard()


def _copy(guard_dir, tmp_path, edit=None, *, redigest=True):
    """Copy the guard, apply ``edit`` to its manifest and (``redigest``) write a matching digest,
    as a buggy exporter or an attacker who can write the directory would."""
    target = tmp_path / "g"
    shutil.copytree(guard_dir, target)
    manifest = json.loads((target / "guard.json").read_text())
    if edit:
        edit(manifest)
    if redigest and "digest" in manifest:
        manifest["digest"] = json_digest(manifest, exclude="digest")
    (target / "guard.json").write_text(json.dumps(manifest))
    return target


def test_the_exporter_writes_the_manifest_digest(guard_dir):
    manifest = json.loads((guard_dir / "guard.json").read_text())
    assert manifest["digest"] == json_digest(manifest, exclude="digest")
    guard = Guard.load(guard_dir, expect_digest=manifest["digest"].upper())
    assert guard.digest == manifest["digest"] and guard.scan(ANCHOR, sanitize=False).match > 0.8


@pytest.mark.parametrize("key, value", [("threshold", 0.999), ("inputs", ["input_ids", "attention_mask", "threshold"]),
                                        ("max_length", 20), ("target", "last")])
def test_an_edited_manifest_is_an_integrity_error(guard_dir, tmp_path, key, value):
    """Today's file hashes do not cover guard.json itself: an edited threshold turned the guard off."""
    target = _copy(guard_dir, tmp_path, lambda m: m.update({key: value}), redigest=False)
    with pytest.raises(IntegrityError, match="digest in .*guard.json does not match its content"):
        Guard.load(target)
    edited = _copy(guard_dir, tmp_path / "pvs", lambda m: m["pvs"].update(size=7), redigest=False)
    with pytest.raises(IntegrityError, match="manifest was edited"):
        Guard.load(edited)


def test_expect_digest_pins_one_guard(guard_dir, tmp_path):
    other = _copy(guard_dir, tmp_path, lambda m: m.update(threshold=0.9))  # re-digested: a different guard
    pinned = json.loads((guard_dir / "guard.json").read_text())["digest"]
    assert Guard.load(other).threshold == pytest.approx(0.9)
    with pytest.raises(IntegrityError, match="not the expected"):
        Guard.load(other, expect_digest=pinned)
    with pytest.raises(ConfigError, match="64 hex digits"):
        Guard.load(guard_dir, expect_digest="abc")
    with pytest.raises(ConfigError, match="needs verify"):
        Guard.load(guard_dir, expect_digest=pinned, verify=False)


def test_a_guard_without_digest_loads_with_a_warning_unless_pinned(guard_dir, tmp_path, caplog):
    legacy = _copy(guard_dir, tmp_path, lambda m: m.pop("digest"))
    with caplog.at_level(logging.WARNING, logger="lmsan"):
        guard = Guard.load(legacy)
    assert guard.digest is None and guard.scan(ANCHOR, sanitize=False).match > 0.8
    assert any(r.levelno == logging.WARNING and "has no digest" in r.getMessage() for r in caplog.records)
    with pytest.raises(IntegrityError, match="has no digest"):
        Guard.load(legacy, expect_digest="0" * 64)


def _set(path, value):
    def edit(manifest):
        *parents, key = path.split(".")
        node = manifest
        for parent in parents:
            node = node[parent]
        node[key] = value
    return edit


@pytest.mark.parametrize("path, value, message", [
    ("inputs", ["foo"], "inputs must be distinct names"),
    ("inputs", ["input_ids", "attention_mask", "threshold"], "disagree on the graph inputs"),
    ("inputs", ["input_ids", "attention_mask", "token_type_ids"], "inputs must be"),
    ("max_length", 0, "max_length must be an integer >= 2"),
    ("max_length", 3, "leaves no room for text"),
    ("max_length", "38", "max_length must be an integer"),
    ("max_length", True, "max_length must be an integer"),
    ("tokenizer.pad_id", 1e9, "tokenizer.pad_id must be an integer"),
    ("tokenizer.pad_id", 10**9, "pad_id 1000000000 is outside the tokenizer's vocabulary"),
    ("tokenizer.pad_id", -1, "tokenizer.pad_id must be an integer >= 0"),
    ("tokenizer.mask_id", 10**6, "mask_id 1000000 is outside"),
    ("tokenizer.mask_id", 5, "mask_token '\\[MASK\\]' is id 103 in tokenizer.json, not mask_id 5"),
    ("tokenizer", "tokenizer.json", "tokenizer must be an object"),
    ("threshold", "0.8", "threshold must be a finite number"),
    ("threshold", 1.5, "threshold must be a finite number >= 0.0 < 1.0"),
    ("threshold", float("nan"), "cannot compute the manifest digest"),
    ("pvs.size", 0, "disagree on the number of PVs"),
    ("pvs.size", -2, "pvs.size must be an integer >= 0"),
    ("pvs", None, "missing field pvs|pvs must be an object"),
    ("outputs", ["match", "pv_index"], "disagree on the graph outputs"),
    ("files.model.onnx", "0" * 63, "files\\['model.onnx'\\] must be a SHA-256"),
    ("target", "mask", "target 'mask' needs|no room|mask token"),
    ("graph", 7, "graph must be a string"),
    ("graph", "../model.onnx", "names a path"),
])
def test_invalid_fields_are_data_errors_naming_the_file(guard_dir, tmp_path, path, value, message):
    """Each of these ended in a KeyError/IndexError at scan time, a raw onnxruntime error, or a
    guard that ran with nonsense (``pad_id: 1e9`` was accepted as an int)."""
    if path == "files.model.onnx":
        edit = lambda m: m["files"].update({"model.onnx": value})  # noqa: E731
    else:
        edit = _set(path, value)
    target = _copy(guard_dir, tmp_path, edit, redigest=value == value)  # NaN: no digest can be computed
    if path == "target":  # mask target without a mask id
        target = _copy(guard_dir, tmp_path / "m", lambda m: (m.update(target="mask"), m["tokenizer"].update(mask_id=None)))
    with pytest.raises(DataError, match=message) as info:
        Guard.load(target)
    assert "guard.json" in str(info.value) or "model.onnx" in str(info.value)


def test_a_graph_that_fails_on_its_feed_is_a_data_error(guard_dir, tmp_path):
    """A graph that is not the exporter's (hashes re-done): refused at load, not on the first scan."""
    target = _copy(guard_dir, tmp_path)
    onnx_bytes = (target / "model.onnx").read_bytes()
    (target / "model.onnx").write_bytes(onnx_bytes[: len(onnx_bytes) // 2])
    from lmsan.files import sha256_file

    manifest = json.loads((target / "guard.json").read_text())
    manifest["files"]["model.onnx"] = sha256_file(target / "model.onnx")
    manifest["digest"] = json_digest(manifest, exclude="digest")
    (target / "guard.json").write_text(json.dumps(manifest))
    with pytest.raises(Exception) as info:
        Guard.load(target)
    assert type(info.value).__name__ in ("ProviderError", "DataError") and "model.onnx" in str(info.value)
