"""The ``POST /v1/scan`` request body: parse and validate it before anything is queued.

Request: ``{"inputs": ["text", ["text a", "text b"], ...], "sanitize": true}`` (``sanitize``
optional, default true). Each input is checked with ``lmsan.runtime.encode.check_input``, so one
bad input is answered at once and never reaches a batch shared with other requests. Stdlib and
``lmsan.runtime.encode`` only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from lmsan.errors import InputError, LmsanError
from lmsan.runtime.encode import check_input

BAD_REQUEST, TOO_LARGE, UNPROCESSABLE = 400, 413, 422
FIELDS = ("inputs", "sanitize")


class RequestError(LmsanError):
    """A request the service refuses; ``status`` is the HTTP code, the message its ``error``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ScanRequest:
    """A validated scan request: ``inputs`` (str or (str, str) each) and the ``sanitize`` flag."""

    inputs: tuple[str | tuple[str, str], ...]
    sanitize: bool = True


def parse_scan_request(body: bytes, *, max_items: int, max_chars: int) -> ScanRequest:
    """Parse a ``POST /v1/scan`` body.

    Args:
        body: the raw request body (UTF-8 JSON).
        max_items: most inputs per request.
        max_chars: longest accepted text, in characters (the guard's ``max_chars``).

    Raises:
        RequestError: 400 for a body that is not a JSON object with a list ``inputs`` (or has an
            unknown key, or a non-boolean ``sanitize``); 413 for more than ``max_items`` inputs;
            422 for an input ``check_input`` refuses (named by its index), e.g. an empty text.
    """
    try:
        payload: Any = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError(BAD_REQUEST, f"body is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise RequestError(BAD_REQUEST, f"body must be a JSON object, got {_kind(payload)}")
    unknown = sorted(set(payload) - set(FIELDS))
    if unknown:
        raise RequestError(BAD_REQUEST, f"unknown field(s) {', '.join(map(repr, unknown))}; "
                                        f"expected {', '.join(map(repr, FIELDS))}")
    if "inputs" not in payload:
        raise RequestError(BAD_REQUEST, 'missing field "inputs": a list of texts or [text_a, text_b] pairs')
    inputs, sanitize = payload["inputs"], payload.get("sanitize", True)
    if not isinstance(inputs, list):
        raise RequestError(BAD_REQUEST, f'"inputs" must be a list, got {_kind(inputs)}')
    if not inputs:
        raise RequestError(BAD_REQUEST, '"inputs" is empty')
    if len(inputs) > max_items:
        raise RequestError(TOO_LARGE, f'{len(inputs)} inputs exceed the limit of {max_items} per request')
    if not isinstance(sanitize, bool):
        raise RequestError(BAD_REQUEST, f'"sanitize" must be true or false, got {_kind(sanitize)}')
    checked = []
    for index, value in enumerate(inputs):
        try:
            texts = check_input(value, max_chars=max_chars, index=index)
        except InputError as exc:
            status = BAD_REQUEST if exc.reason.startswith("expected a str") else UNPROCESSABLE
            raise RequestError(status, f"inputs[{index}]: {exc.reason}") from exc
        checked.append(texts[0] if len(texts) == 1 else texts)
    return ScanRequest(tuple(checked), sanitize)


def _kind(value: Any) -> str:
    """The JSON name of a parsed value's type."""
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list",
            dict: "an object"}.get(type(value), type(value).__name__)
