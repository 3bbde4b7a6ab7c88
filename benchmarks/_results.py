"""Where the benchmark scripts save their figures: ``benchmarks/results/<name>.json`` and ``.md``."""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def save(name: str, report: dict, table: str) -> None:
    """Write ``report`` as ``<name>.json`` and the markdown ``table`` as ``<name>.md``; print the table."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    (RESULTS / f"{name}.md").write_text(table)
    print(table)
