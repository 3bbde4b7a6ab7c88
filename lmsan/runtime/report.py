"""Render scan results for people (a markdown table) and machines (JSON-ready dicts). Stdlib only."""

from __future__ import annotations

from typing import Any, Sequence


def _cell(value: Any, width: int = 60) -> str:
    text = " / ".join(value) if isinstance(value, tuple) else ("" if value is None else str(value))
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def demo_table(guard: Any, texts: Sequence[Any], *, width: int = 60) -> str:
    """Scan ``texts`` with ``guard`` and return a markdown table of the verdicts.

    Columns: input, match (share of agreeing signs with the best PV), triggered (with the known
    triggers found), removed, sanitized (``rejected`` when no candidate clears the input), and for
    a task guard the answer (label and its probability) for the sanitized input.
    """
    task = getattr(guard, "labels", None) is not None
    rows = ["| input | match | triggered | removed | sanitized |" + (" answer |" if task else ""),
            "|---|---:|:---:|---|---|" + ("---|" if task else "")]
    for text, result in zip(texts, guard.scan_batch(list(texts))):
        sanitized = "*rejected*" if result.rejected else _cell(result.sanitized, width)
        answer = "–" if result.prediction is None else f"{result.prediction} ({max(result.scores):.2f})"
        known = f" (known: {', '.join(result.known_triggers)})" if result.known_triggers else ""
        flagged = f"yes{_cell(known, width)}" if result.triggered else "no"
        rows.append(f"| {_cell(text, width)} | {result.match:.3f} | {flagged} | "
                    f"{_cell(', '.join(result.removed), width)} | {sanitized} |" + (f" {answer} |" if task else ""))
    return "\n".join(rows) + "\n"
