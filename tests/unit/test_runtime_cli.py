"""``lmsan-guard`` and ``lmsan-export``: exit codes, the one stderr error line, JSON on stdout."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from test_export_guard import ANCHOR, anchor_pvs, tiny_guard, tiny_model

from lmsan.cli import export as export_cli
from lmsan.cli import guard as guard_cli


@pytest.fixture(scope="module")
def guard_dir():
    return str(tiny_guard())


def _run(main, argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


def test_clean_inputs_exit_0(guard_dir, capsys):
    code, out, err = _run(guard_cli.main, [guard_dir, "a calm sentence", "another one", "--threshold", "0.95"], capsys)
    assert code == 0
    assert [line.split("\t")[0] for line in out.splitlines()] == ["clean", "clean"]
    assert "0 of 2 inputs triggered (CPUExecutionProvider)" in err


def test_triggered_input_exits_1_and_prints_the_removal(guard_dir, capsys):
    code, out, _ = _run(guard_cli.main, [guard_dir, ANCHOR, "calm", "--threshold", "0.95", "-q"], capsys)
    assert code == 1
    first = out.splitlines()[0].split("\t")
    assert first[0] == "TRIGGERED" and first[1] == "match=1.000" and first[3].startswith("removed=")


def test_json_output_and_jsonl_file(guard_dir, tmp_path, capsys):
    path = tmp_path / "in.jsonl"
    lines = [json.dumps(ANCHOR), json.dumps(["q?", "a."]), "", json.dumps({"text_a": "x", "text_b": "y"}),
             json.dumps({"text": "plain"})]
    path.write_text("\n".join(lines) + "\n")
    code, out, _ = _run(guard_cli.main, [guard_dir, "--file", str(path), "--json", "--threshold", "0.95", "-q"], capsys)
    assert code == 1
    results = json.loads(out)
    assert [r["input"] for r in results] == [ANCHOR, ["q?", "a."], ["x", "y"], "plain"]
    assert results[0]["triggered"] and results[0]["removed"] and results[1]["sanitized"] == ["q?", "a."]
    assert set(results[0]) == {"input", "where", "triggered", "match", "pv_index", "sanitized", "removed", "rejected",
                               "reason", "prediction", "scores", "known_triggers"}
    assert all(r["prediction"] is None and r["scores"] is None for r in results)  # a guard without a task
    assert [r["where"] for r in results] == [f"{path}:{n}" for n in (1, 2, 4, 5)]


def test_stdin_lines(guard_dir, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("first line\n\nsecond line\n"))
    code, out, _ = _run(guard_cli.main, [guard_dir, "--no-sanitize", "--threshold", "0.95", "-q"], capsys)
    assert code == 0 and len(out.splitlines()) == 2


def test_bad_input_is_one_error_line_and_exit_2(guard_dir, capsys):
    code, out, err = _run(guard_cli.main, [guard_dir, "fine", "   ", "-q"], capsys)
    assert code == 2 and out.splitlines()[0].startswith("clean\t")
    assert out.splitlines()[1] == "ERROR\tinput 1: empty or whitespace-only text"
    assert err.strip().splitlines() == ["lmsan-guard: error: input 1: empty or whitespace-only text"]
    code, out, _ = _run(guard_cli.main, [guard_dir, "\ud800", "--json", "-q"], capsys)
    assert code == 2 and json.loads(out) == [{"input": "\ud800", "where": "input 0",
                                              "error": "lone surrogate U+D800 at index 0"}]


def test_bad_jsonl_line_names_the_line(guard_dir, tmp_path, capsys):
    path = tmp_path / "in.jsonl"
    path.write_text('"ok"\n{not json\n')
    code, _, err = _run(guard_cli.main, [guard_dir, "--file", str(path), "-q"], capsys)
    assert code == 2 and "in.jsonl:2: not JSON" in err


def test_one_bad_line_among_many_loses_no_result(guard_dir, tmp_path, capsys):
    """Line 300 is bad: the 299 others (one of them triggered) are still reported, in order, and
    the error names line 300 (it said "input 43": its index within a 256-input chunk)."""
    path = tmp_path / "in.jsonl"
    lines = [json.dumps(f"calm sentence number {i}") for i in range(300)]
    lines[4], lines[299], lines[150] = json.dumps(ANCHOR), json.dumps("   "), json.dumps(["pair " * 40, "x"])
    path.write_text("\n".join(lines) + "\n")
    argv = [guard_dir, "--file", str(path), "--threshold", "0.95", "-q"]
    code, out, err = _run(guard_cli.main, argv, capsys)
    rows = out.splitlines()
    assert code == 2 and len(rows) == 300 and rows[4].startswith("TRIGGERED\t")
    assert rows[299] == f"ERROR\t{path}:300: empty or whitespace-only text"
    assert rows[150].startswith(f"ERROR\t{path}:151: sentence pair of") and rows[0].startswith("clean\t")
    assert err.splitlines() == [f"lmsan-guard: error: {path}:151: " + rows[150].split(": ", 1)[1],
                                f"lmsan-guard: error: {path}:300: empty or whitespace-only text"]
    code, out, _ = _run(guard_cli.main, argv + ["--json"], capsys)
    results = json.loads(out)
    assert code == 2 and len(results) == 300 and results[4]["triggered"] and results[4]["removed"]
    assert results[299] == {"input": "   ", "where": f"{path}:300", "error": "empty or whitespace-only text"}


def test_undecodable_bytes_are_named_as_such(guard_dir, tmp_path, capsys, monkeypatch):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'"ok"\n"caf\xe9"\n"fine"\n')
    code, out, err = _run(guard_cli.main, [guard_dir, "--file", str(path), "-q"], capsys)
    assert code == 2 and len(out.splitlines()) == 3
    assert err.strip() == f"lmsan-guard: error: {path}:2: invalid UTF-8 (byte 0xE9 at offset 4)"
    code, out, err = _run(guard_cli.main, [guard_dir, "ok", "caf\udce9", "-q"], capsys)  # argv via surrogateescape
    assert code == 2 and err.strip() == "lmsan-guard: error: input 1: undecodable byte 0xE9 at index 3 (not UTF-8)"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"first\n\xff\xfe\nthird\n")))
    code, out, err = _run(guard_cli.main, [guard_dir, "--threshold", "0.95", "-q"], capsys)
    assert code == 2 and [line.split("\t")[0] for line in out.splitlines()] == ["clean", "ERROR", "clean"]
    assert err.strip() == "lmsan-guard: error: <stdin>:2: invalid UTF-8 (byte 0xFF at offset 0)"


def test_expect_digest_and_work_cap_flags(guard_dir, capsys):
    digest = json.loads((Path(guard_dir) / "guard.json").read_text())["digest"]
    assert _run(guard_cli.main, [guard_dir, "calm", "--expect-digest", digest, "-q"], capsys)[0] == 0
    code, _, err = _run(guard_cli.main, [guard_dir, "calm", "--expect-digest", "0" * 64, "-q"], capsys)
    assert code == 2 and "not the expected" in err
    assert _run(guard_cli.main, [guard_dir, "calm", "--expect-digest", "xyz", "-q"], capsys)[0] == 4
    text = " ".join(f"w{i}" for i in range(20))
    code, out, _ = _run(guard_cli.main, [guard_dir, text, "--threshold", "0", "--max-trials", "3", "-q"], capsys)
    assert code == 1 and out.startswith("REJECTED\t") and "reason=work cap" in out
    code, out, _ = _run(guard_cli.main, [guard_dir, text, "--threshold", "0", "--max-trials", "3", "--fail-open",
                                         "--json", "-q"], capsys)
    result = json.loads(out)[0]
    assert code == 1 and not result["rejected"] and result["sanitized"] == text and "fail open" in result["reason"]


def test_no_peel_rejects_what_no_window_clears(guard_dir, capsys):
    code, out, _ = _run(guard_cli.main, [guard_dir, "alpha beta gamma", "--threshold", "0", "--json", "-q"], capsys)
    assert code == 1 and json.loads(out)[0]["reason"] == (
        "no candidate of up to 3 words clears it, nor one after peeling up to 2 words within the work caps")
    code, out, _ = _run(guard_cli.main, [guard_dir, "alpha beta gamma", "--threshold", "0", "--no-peel", "--json",
                                         "-q"], capsys)
    assert code == 1 and json.loads(out)[0]["reason"] == "no candidate of up to 3 words clears it"


def test_usage_errors_exit_4(guard_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert _run(guard_cli.main, [guard_dir, "-q"], capsys)[0] == 4
    assert _run(guard_cli.main, [str(tmp_path / "missing"), "x"], capsys)[0] == 4
    assert _run(guard_cli.main, [guard_dir, "x", "--threshold", "1.0"], capsys)[0] == 4


def test_tampered_guard_exits_2(guard_dir, tmp_path, capsys):
    import shutil

    target = tmp_path / "g"
    shutil.copytree(guard_dir, target)
    (target / "tokenizer.json").write_text("{}")
    code, _, err = _run(guard_cli.main, [str(target), "x", "-q"], capsys)
    assert code == 2 and "does not match guard.json" in err


def test_export_cli_writes_a_guard_and_reports_errors(tmp_path, capsys):
    pvs = anchor_pvs(tiny_model()).save(tmp_path / "pvs.safetensors")
    code, out, err = _run(export_cli.main, [str(tiny_model()), "--pvs", str(pvs), "--out", str(tmp_path / "g"),
                                            "--json", "-q"], capsys)
    assert code == 0 and json.loads(out)["pvs"]["size"] == 3 and json.loads(out)["pruned"]
    digest = json.loads(out)["digest"]
    assert f"digest: {digest} " in err and json.loads((tmp_path / "g" / "guard.json").read_text())["digest"] == digest
    code, out, _ = _run(export_cli.main, [str(tiny_model()), "--pvs", str(pvs), "--out", str(tmp_path / "full"),
                                          "--no-prune", "--json", "-q"], capsys)
    assert code == 0 and not json.loads(out)["pruned"] and "saliency" in json.loads(out)["outputs"]
    code, out, err = _run(export_cli.main, [str(tiny_model()), "--pvs", str(pvs), "--out", str(tmp_path / "g"), "-q"],
                          capsys)
    assert code == 2 and err.strip().startswith("lmsan-export: error: output directory exists")
    from lmsan.pvset import PVSet

    narrow = PVSet(np.ones((1, 8), np.float32)).save(tmp_path / "narrow.safetensors")
    code, _, err = _run(export_cli.main, [str(tiny_model()), "--pvs", str(narrow), "--out", str(tmp_path / "h"),
                                          "-q"], capsys)
    assert code == 2 and "PV width 8 != model hidden size 32" in err
    assert not (tmp_path / "h").exists()
