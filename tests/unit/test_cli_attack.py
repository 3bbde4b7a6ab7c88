"""``lmsan-attack`` and ``lmsan``: exit codes and the single stderr error line."""

from __future__ import annotations

import json

import pytest

from lmsan.cli import attack as attack_cli
from lmsan.cli import main as main_cli


def run_cli(module, argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        module.main(argv)
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def test_help_exits_zero(capsys):
    code, out, _ = run_cli(attack_cli, ["--help"], capsys)
    assert code == 0 and "POR" in out


def test_missing_model_is_a_usage_error(capsys, tmp_path):
    code, out, err = run_cli(attack_cli, ["verify", str(tmp_path / "nope")], capsys)
    assert code == 4
    assert err.startswith("lmsan-attack: error:") and len(err.strip().splitlines()) == 1
    assert out == ""


def test_verify_without_attack_json_is_exit_2_and_json_stays_valid(capsys, tmp_path):
    code, out, err = run_cli(attack_cli, ["verify", str(tmp_path), "--json"], capsys)
    assert code == 2
    assert "attack.json" in err and "Traceback" not in err
    assert json.loads(out)["error"]["kind"] == "DataError"


def test_given_pv_design_needs_a_pv_file(capsys, tmp_path):
    code, _, err = run_cli(attack_cli, ["run", str(tmp_path), "--out", str(tmp_path / "o"), "--pv-design", "given"], capsys)
    assert code == 4 and "--pvs" in err


def test_umbrella_lists_subcommands(capsys):
    code, out, _ = run_cli(main_cli, ["--help"], capsys)
    assert code == 0
    for name in ("data", "attack"):
        assert name in out


def test_an_existing_out_is_never_overwritten_silently(capsys, tmp_path):
    """``--out`` must be new or empty; ``--force`` replaces only a directory lmsan-attack wrote."""
    precious = tmp_path / "mine"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    for extra in ([], ["--force"]):
        code, _, err = run_cli(attack_cli, ["build-tiny", "--out", str(precious), "-q", *extra], capsys)
        assert code in (2, 4) and ("--force" in err or "refusing" in err)
        code, _, err = run_cli(attack_cli, ["run", str(tmp_path), "--out", str(precious), "-q", *extra], capsys)
        assert code in (2, 4) and "Traceback" not in err
    assert [p.name for p in precious.iterdir()] == ["notes.txt"] and (precious / "notes.txt").read_text() == "keep me"
    built = tmp_path / "tiny"
    assert run_cli(attack_cli, ["build-tiny", "--out", str(built), "-q"], capsys)[0] == 0
    assert run_cli(attack_cli, ["build-tiny", "--out", str(built), "-q"], capsys)[0] in (2, 4)
    assert run_cli(attack_cli, ["build-tiny", "--out", str(built), "-q", "--force"], capsys)[0] == 0
    assert (built / "config.json").is_file() and not list(tmp_path.glob(".tiny.*"))
