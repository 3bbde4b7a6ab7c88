"""``lmsan-guard`` and ``lmsan-export``: exit codes, the one stderr error line, JSON on stdout."""

from __future__ import annotations

import io
import json
import sys

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
    assert set(results[0]) == {"input", "triggered", "match", "pv_index", "sanitized", "removed", "rejected"}


def test_stdin_lines(guard_dir, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("first line\n\nsecond line\n"))
    code, out, _ = _run(guard_cli.main, [guard_dir, "--no-sanitize", "--threshold", "0.95", "-q"], capsys)
    assert code == 0 and len(out.splitlines()) == 2


def test_bad_input_is_one_error_line_and_exit_2(guard_dir, capsys):
    code, out, err = _run(guard_cli.main, [guard_dir, "fine", "   ", "-q"], capsys)
    assert code == 2 and out == ""
    assert err.strip().splitlines() == ["lmsan-guard: error: input 1: empty or whitespace-only text"]
    code, out, _ = _run(guard_cli.main, [guard_dir, "\ud800", "--json", "-q"], capsys)
    assert code == 2 and json.loads(out)["error"]["kind"] == "DataError"


def test_bad_jsonl_line_names_the_line(guard_dir, tmp_path, capsys):
    path = tmp_path / "in.jsonl"
    path.write_text('"ok"\n{not json\n')
    code, _, err = _run(guard_cli.main, [guard_dir, "--file", str(path), "-q"], capsys)
    assert code == 2 and "in.jsonl:2: not JSON" in err


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
    code, out, _ = _run(export_cli.main, [str(tiny_model()), "--pvs", str(pvs), "--out", str(tmp_path / "g"),
                                          "--json", "-q"], capsys)
    assert code == 0 and json.loads(out)["pvs"]["size"] == 3 and json.loads(out)["pruned"]
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
