"""The runtime and ``lmsan-guard`` never import torch or transformers; ``--help`` stays light."""

from __future__ import annotations

import subprocess
import sys

from test_export_guard import ANCHOR, tiny_guard

HEAVY = "assert not {'torch', 'transformers'} & set(sys.modules), sorted({'torch', 'transformers'} & set(sys.modules))"


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_runtime_loads_and_scans_without_torch():
    code = f"""
import sys
import lmsan.runtime
from lmsan.runtime import Guard
guard = Guard.load({str(tiny_guard())!r}, threshold=0.95)
guard.warmup()
result = guard.scan({ANCHOR!r})
assert result.triggered and result.removed, result
guard.scan(("a pair", "of texts"))
from lmsan.runtime import calibrate
assert len(calibrate(guard, ["a clean text", "another one"] * 60, cap=0.99).pv_thresholds) == 3
{HEAVY}
"""
    done = _python(code)
    assert done.returncode == 0, done.stderr


def test_guard_cli_runs_without_torch():
    code = f"""
import sys
from lmsan.cli import guard
try:
    guard.main([{str(tiny_guard())!r}, "hello there", "--threshold", "0.95", "-q"])
except SystemExit as exc:
    assert exc.code == 0, exc.code
else:
    raise AssertionError("lmsan-guard did not exit")
{HEAVY}
"""
    done = _python(code)
    assert done.returncode == 0, done.stderr


def test_help_imports_nothing_heavy():
    for module in ("guard", "calibrate", "export"):
        code = f"""
import sys
from lmsan.cli import {module}
try:
    {module}.main(["--help"])
except SystemExit as exc:
    assert exc.code == 0
else:
    raise AssertionError("--help did not exit")
{HEAVY}
"""
        done = _python(code)
        assert done.returncode == 0, done.stderr
