"""The module map of style.md, checked on the source: who may import whom."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "lmsan"
SHARED = {"lmsan", "lmsan.errors", "lmsan.files", "lmsan.pvset"}
THIRD_PARTY_HEAVY = {"torch", "transformers", "safetensors.torch", "onnx", "optimum"}

# subsystem -> lmsan subsystems it must never import
FORBIDDEN = {
    "data": {"models", "attacks", "mining", "export", "runtime", "cli"},
    "models": {"attacks", "mining", "export", "runtime", "cli"},
    "attacks": {"mining", "export", "runtime", "cli"},
    "mining": {"attacks", "export", "runtime", "cli"},
    "export": {"mining", "attacks", "runtime", "cli"},
    "runtime": {"data", "models", "attacks", "mining", "export", "cli"},
    "serve": {"data", "models", "attacks", "mining", "export", "cli"},
}
NO_HEAVY = {"data", "runtime", "serve", "errors", "files", "pvset", "extras"}


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-local imports included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def subsystem(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


SOURCES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_map(path: Path):
    own = subsystem(path)
    imports = imported_modules(path)
    lmsan_parts = {name.split(".")[1] for name in imports if name.startswith("lmsan.") and name not in SHARED}
    bad = lmsan_parts & FORBIDDEN.get(own, set())
    assert not bad, f"{path.name} ({own}) imports lmsan.{sorted(bad)}"
    if own in NO_HEAVY:
        heavy = {name for name in imports if name.split(".")[0] in {"torch", "transformers"} or name in THIRD_PARTY_HEAVY}
        assert not heavy, f"{path.name} ({own}) imports {sorted(heavy)}"


def test_importing_the_package_and_cli_help_loads_no_torch():
    code = ("import sys, lmsan, lmsan.data, lmsan.pvset, lmsan.cli.main, lmsan.cli.attack; "
            "print(' '.join(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""
