"""Inputs of the scanning commands (``lmsan-guard``, ``lmsan-calibrate``): TEXT arguments, a JSONL
``--file`` or stdin lines, each an ``Item`` that names where it came from; an unreadable one
carries its error instead of a value, so the caller reports it with its place."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

_UNDECODED = re.compile("[\udc80-\udcff]")  # how surrogateescape carries a byte that is not UTF-8


@dataclass(frozen=True)
class Item:
    """One input: ``value`` (a text or pair, None if unreadable), ``where`` it came from
    (``input N``, ``FILE:LINE``, ``<stdin>:LINE``) and why it is unreadable, if it is."""

    value: Any
    where: str
    error: str | None = None


def read_inputs(texts: tuple[str, ...], input_file: Path | None) -> Iterator[Item]:
    """Texts from arguments, else JSONL lines from --file, else stdin lines (blank ones skipped)."""
    if texts:
        for number, text in enumerate(texts):
            bad = _UNDECODED.search(text)  # os/click decode argv bytes with surrogateescape
            error = f"undecodable byte 0x{ord(bad.group()) & 0xFF:02X} at index {bad.start()} (not UTF-8)" if bad else None
            yield Item(None if bad else text, f"input {number}", error)
        return
    if input_file:
        with open(input_file, "rb") as handle:
            yield from _lines(handle, str(input_file), json_lines=True)
        return
    if sys.stdin is None or sys.stdin.isatty():
        return
    stream = getattr(sys.stdin, "buffer", None)
    yield from _lines(stream if stream is not None else sys.stdin, "<stdin>", json_lines=False)


def _lines(handle: Any, name: str, *, json_lines: bool) -> Iterator[Item]:
    """Non-blank lines of a binary (or, for tests, text) stream, each decoded as UTF-8 alone."""
    for number, line in enumerate(handle, 1):
        where = f"{name}:{number}"
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield Item(None, where, f"invalid UTF-8 (byte 0x{line[exc.start]:02X} at offset {exc.start})")
                continue
        if line.strip():
            yield _parse(line, where) if json_lines else Item(line.rstrip("\r\n"), where)


def _parse(line: str, where: str) -> Item:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        return Item(None, where, f"not JSON ({exc.msg})")
    if isinstance(value, dict):
        if "text" in value:
            return Item(value["text"], where)
        if "text_a" in value and "text_b" in value:
            return Item((value["text_a"], value["text_b"]), where)
        return Item(None, where, "an object needs 'text' or 'text_a' and 'text_b'")
    if isinstance(value, list) and len(value) == 2:
        return Item((value[0], value[1]), where)
    return Item(value, where)  # a string; anything else is refused by the guard's input check
