"""A command whose optional extra is missing says which extra to install: one line, exit 2.

Missing packages are simulated in a subprocess with ``sys.modules[name] = None`` (import raises
``ModuleNotFoundError``, ``find_spec`` returns None), so the main venv keeps its extras.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lmsan import extras

MINE = "this command needs the 'mine' extra ({}): pip install 'lmsan[mine]'"
ALL_MINE = MINE.format(", ".join(extras.EXTRAS["mine"]) + " are not installed")

# Stand-ins for subcommands written elsewhere: one imports its extra at the top, the others on use.
FAKE_COMMANDS = '''
import click

@click.command("serve")
def serve():
    import uvicorn  # noqa: F401

@click.command("scan-many")
def scan_many():
    import ray  # noqa: F401
    import torch  # noqa: F401

@click.command("broken")
def broken():
    import no_such_module_lmsan_test  # noqa: F401
'''


def _cli(blocked: tuple[str, ...], call: str, *, fakes: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``call`` (e.g. ``main.main([...])``) with ``blocked`` modules made unimportable."""
    code = textwrap.dedent(f"""
        import sys
        for name in {blocked!r}:
            sys.modules[name] = None
        if {str(fakes) if fakes else None!r}:
            sys.path.insert(0, {str(fakes) if fakes else ''!r})
        from lmsan.cli import main, mine, export
        main.SUBCOMMANDS.update({{"serve": ("fake_top", "serve"), "scan-many": ("fake_cmds", "scan_many"),
                                  "broken": ("fake_cmds", "broken")}} if {fakes is not None} else {{}})
        {call}
    """)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})


def _one_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.fixture(scope="module")
def fakes(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fake_cmds")
    (path / "fake_cmds.py").write_text(FAKE_COMMANDS)
    (path / "fake_top.py").write_text("import starlette  # noqa: F401\n" + FAKE_COMMANDS)
    return path


@pytest.fixture(scope="module")
def pvs(tmp_path_factory) -> Path:
    from lmsan.pvset import PVSet

    path = tmp_path_factory.mktemp("pvs") / "pvs.safetensors"
    PVSet.empty(32).save(path)
    return path


def test_lmsan_mine_without_mine_extra():
    done = _cli(extras.EXTRAS["mine"], 'mine.main(["some/model", "--data", "oanc", "-q"])')
    assert _one_line(done) == f"lmsan-mine: error: {ALL_MINE}"
    assert done.stdout == ""


def test_lmsan_mine_json_keeps_stdout_json():
    done = _cli(extras.EXTRAS["mine"], 'mine.main(["some/model", "--data", "oanc", "--json"])')
    _one_line(done)
    assert json.loads(done.stdout)["error"] == {"kind": "MissingExtraError", "message": ALL_MINE}


def test_lmsan_export_names_only_the_missing_package(pvs, tmp_path):
    done = _cli(("torch",), f'export.main(["some/model", "--pvs", {str(pvs)!r}, "--out", {str(tmp_path / "g")!r}])')
    assert _one_line(done) == "lmsan-export: error: " + MINE.format("torch is not installed")
    assert not (tmp_path / "g").exists()


def test_umbrella_mine_without_mine_extra():
    done = _cli(extras.EXTRAS["mine"], 'main.main(["mine", "some/model", "--data", "oanc"])')
    assert _one_line(done) == f"lmsan: error: {ALL_MINE}"


def test_help_still_works_and_marks_missing_extras():
    done = _cli(extras.EXTRAS["mine"], 'main.main(["--help"])')
    assert done.returncode == 0, done.stderr
    commands = done.stdout.split("Commands:")[1].strip().splitlines()
    listed = {line.split()[0]: line for line in commands}
    assert {"data", "attack", "mine", "export", "guard", "tune"} <= set(listed)
    for name in ("attack", "mine", "export", "tune"):
        assert listed[name].endswith("[needs lmsan[mine]]"), listed[name]
    assert "needs" not in listed["guard"] + listed["data"]
    assert _cli(extras.EXTRAS["mine"], 'mine.main(["--help"])').returncode == 0


def test_help_marks_nothing_when_everything_is_installed():
    done = _cli((), 'main.main(["--help"])')
    assert done.returncode == 0 and "needs lmsan" not in done.stdout, done.stdout


def test_subcommand_importing_its_extra_at_the_top(fakes):
    serve = MINE.replace("mine", "serve").format("starlette is not installed")
    assert _one_line(_cli(("starlette",), 'main.main(["serve"])', fakes=fakes)) == f"lmsan: error: {serve}"
    done = _cli(("starlette",), 'main.main(["--help"])', fakes=fakes)
    assert done.returncode == 0 and "serve" in done.stdout and "[needs lmsan[serve]]" in done.stdout


def test_subcommand_needing_two_extras_names_both(fakes):
    done = _cli(("ray", "torch"), 'main.main(["scan-many"])', fakes=fakes)
    assert _one_line(done) == ("lmsan: error: this command needs the 'ray' and 'mine' extras (ray, torch are not "
                               "installed): pip install 'lmsan[mine,ray]'")


def test_unknown_missing_module_is_not_blamed_on_an_extra(fakes):
    line = _one_line(_cli((), 'main.main(["broken"])', fakes=fakes))
    assert line == "lmsan: error: unexpected ModuleNotFoundError: No module named 'no_such_module_lmsan_test'"


def test_explain_ignores_submodules_of_installed_packages():
    pytest.importorskip("torch")
    assert extras.explain(ModuleNotFoundError("x", name="torch.no_such_submodule"), "mine") is None
    assert extras.explain(ModuleNotFoundError("x", name="numpy"), "mine") is None  # core, not an extra


def test_every_command_extra_is_declared():
    assert {e for needed in extras.COMMANDS.values() for e in needed} <= set(extras.EXTRAS)
    from lmsan.cli.main import SUBCOMMANDS

    assert set(extras.COMMANDS) <= set(SUBCOMMANDS)
