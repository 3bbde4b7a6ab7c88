"""Read local .txt/.csv/.tsv/.jsonl files into lines or tables, with clear ``DataError``s.

Stdlib only (no torch, no transformers).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from lmsan.errors import DataError

SUFFIXES = (".txt", ".csv", ".tsv", ".jsonl")
TEXT_COLUMNS = ("text", "sentence", "sentence1", "text_a")
LABEL_COLUMNS = ("label", "labels", "class", "category")


def read_text(path: Path, *, fallback: str | None = None) -> str:
    """Read a whole file as UTF-8 (a leading BOM is dropped).

    Args:
        path: file to read.
        fallback: encoding to try when UTF-8 fails, only for sources known to use it
            (``"latin-1"`` for bbcnews); ``None`` makes invalid UTF-8 an error.

    Raises:
        DataError: missing file, a folder, unreadable, or not UTF-8 (with the byte offset).
    """
    if not path.exists():
        raise DataError(f"file not found: {path}")
    if not path.is_file():
        raise DataError(f"not a file: {path}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        if fallback is not None:
            return data.decode(fallback)
        byte = data[exc.start]
        raise DataError(
            f"{path} is not valid UTF-8 (byte 0x{byte:02x} at offset {exc.start}); re-encode it as UTF-8"
        ) from exc


def check_suffix(path: Path) -> str:
    """Return the lower-cased suffix of ``path`` if it is supported, else raise ``DataError``."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        expected = ", ".join(SUFFIXES)
        raise DataError(f"unsupported file type {suffix or '(none)'!r} for {path}; expected one of {expected}")
    return suffix


@dataclass(frozen=True)
class Table:
    """Rows of a CSV/TSV/JSONL file.

    Attributes:
        path: the file.
        columns: column names (CSV header, or JSONL keys in first-seen order).
        rows: ``(line number, {column: value})``; line numbers are 1-based file lines.
    """

    path: Path
    columns: tuple[str, ...]
    rows: tuple[tuple[int, dict[str, Any]], ...]


def read_table(path: Path) -> Table:
    """Read a .csv (comma, quoted), .tsv (tab, no quoting) or .jsonl file.

    CSV/TSV files must start with a header row; every row must have as many fields as the
    header. A JSONL file holds one JSON object per non-blank line.

    Raises:
        DataError: unsupported suffix, unreadable/non-UTF-8 file, malformed row (with its line
            number), or no data rows.
    """
    suffix = check_suffix(path)
    if suffix == ".txt":
        raise DataError(f"{path} is plain text, not a table; use .csv, .tsv or .jsonl")
    text = read_text(path)
    table = _read_jsonl(path, text) if suffix == ".jsonl" else _read_delimited(path, text, suffix)
    if not table.rows:
        raise DataError(f"{path} has no data rows")
    return table


def _read_delimited(path: Path, text: str, suffix: str) -> Table:
    if suffix == ".tsv":
        reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[tuple[int, dict[str, Any]]] = []
    header: list[str] | None = None
    try:
        for fields in reader:
            if not any(f.strip() for f in fields):
                continue  # blank line
            if header is None:
                header = [f.strip() for f in fields]
                continue
            if len(fields) != len(header):
                raise DataError(
                    f"{path}, line {reader.line_num}: {len(fields)} fields but the header has {len(header)}"
                )
            rows.append((reader.line_num, dict(zip(header, fields))))
    except csv.Error as exc:
        raise DataError(f"{path}, line {reader.line_num}: malformed {suffix[1:].upper()}: {exc}") from exc
    if header is None:
        raise DataError(f"{path} is empty")
    return Table(path=path, columns=tuple(header), rows=tuple(rows))


def _read_jsonl(path: Path, text: str) -> Table:
    rows: list[tuple[int, dict[str, Any]]] = []
    columns: dict[str, None] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}, line {number}: invalid JSON: {exc.msg}") from exc
        if not isinstance(row, dict):
            raise DataError(f"{path}, line {number}: expected a JSON object, got {type(row).__name__}")
        columns.update(dict.fromkeys(row))
        rows.append((number, row))
    return Table(path=path, columns=tuple(columns), rows=tuple(rows))


def pick_column(
    columns: Sequence[str],
    wanted: str | None,
    defaults: Sequence[str],
    *,
    origin: str,
    role: str,
    fallback_last: bool,
) -> str:
    """Choose a column: ``wanted`` if given, else the first of ``defaults`` present.

    Args:
        columns: the available column names.
        wanted: explicit column name, or ``None``.
        defaults: names tried in order when ``wanted`` is ``None``.
        origin: file path or dataset spec, for messages.
        role: ``"text"``/``"label"``, for messages.
        fallback_last: with no default present, use the only (or last) column.

    Raises:
        DataError: the column is missing (the message lists the available columns).
    """
    available = ", ".join(repr(c) for c in columns) or "(none)"
    if wanted is not None:
        if wanted not in columns:
            raise DataError(f"{origin}: no {role} column {wanted!r}; available columns: {available}")
        return wanted
    for name in defaults:
        if name in columns:
            return name
    if fallback_last and columns:
        return columns[-1]
    raise DataError(f"{origin}: no {role} column (tried {', '.join(defaults)}); available columns: {available}")


def column_values(table: Table, column: str, *, as_text: bool) -> list[Any]:
    """Return one column's values, in row order.

    Args:
        table: the parsed file.
        column: an existing column name.
        as_text: require strings (texts); otherwise str/int/float/bool are accepted (labels).

    Raises:
        DataError: a JSONL row lacks the field or holds the wrong type (with the line number).
    """
    allowed = (str,) if as_text else (str, int, float, bool)
    values = []
    for number, row in table.rows:
        if column not in row:
            raise DataError(f"{table.path}, line {number}: missing field {column!r}")
        value = row[column]
        if not isinstance(value, allowed):
            kind = "a string" if as_text else "a string or number"
            got = type(value).__name__
            raise DataError(f"{table.path}, line {number}: field {column!r} should be {kind}, got {got}")
        values.append(value)
    return values
