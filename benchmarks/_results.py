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


def carried_over(name: str, rows: list[dict], key: tuple[str, ...] = ("backbone", "task")) -> list[dict]:
    """The settings of ``<name>.json`` that ``rows`` do not hold (the same ``key`` fields), each
    marked ``carried_over`` (a run with ``--merge`` keeps them); none without that file."""
    path = RESULTS / f"{name}.json"
    if not path.is_file():
        return []
    done = {tuple(r.get(k) for k in key) for r in rows}
    old = json.loads(path.read_text())["settings"]
    return [{**r, "carried_over": True} for r in old if tuple(r.get(k) for k in key) not in done]
