"""Check a dataclass's field values against their annotations (``MiningConfig``), so a config read
from JSON fails with one clear ``ConfigError`` instead of a ``TypeError`` deep inside a run.
Stdlib and lmsan.errors only.

Understood: ``bool`` (a real bool), ``int`` (not a bool), ``float`` (finite; an int is accepted),
``str``, ``Literal[...]``, unions with ``None`` (``X | None``, ``Optional[X]``), ``Any`` and plain
classes or generic aliases (checked by their origin class: ``tuple[str, ...]`` takes any tuple).
"""

from __future__ import annotations

import functools
import math
import types
import typing
from typing import Any, Literal

from lmsan.errors import ConfigError

_NAMES = {bool: "a bool", int: "an int", float: "a finite float", str: "a str", type(None): "None"}


def check_field_types(instance: Any) -> None:
    """Check every field of the dataclass ``instance`` against its annotation.

    Raises:
        ConfigError: ``<field> must be <expected>; got <value>`` for the first field that does not fit.
    """
    for name, annotation in _hints(type(instance)).items():
        value = getattr(instance, name)
        if not _fits(annotation, value):
            raise ConfigError(f"{name} must be {_describe(annotation)}; got {value!r}")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    fields = getattr(cls, "__dataclass_fields__", {})
    return {name: hint for name, hint in typing.get_type_hints(cls).items() if name in fields}


def _options(annotation: Any) -> tuple[Any, ...]:
    """The members of a union (``X | None``, ``Optional[X]``), else ``(annotation,)``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _fits(annotation: Any, value: Any) -> bool:
    for option in _options(annotation):
        origin = typing.get_origin(option)
        if option is type(None):
            ok = value is None
        elif origin is Literal:
            ok = any(type(value) is type(choice) and value == choice for choice in typing.get_args(option))
        elif option is bool:
            ok = isinstance(value, bool)
        elif option is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif option is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        elif option is Any:
            ok = True
        else:
            ok = isinstance(value, origin or option)
        if ok:
            return True
    return False


def _describe(annotation: Any) -> str:
    parts = []
    for option in _options(annotation):
        if typing.get_origin(option) is Literal:
            parts.append("one of " + ", ".join(map(str, typing.get_args(option))))
        else:
            parts.append(_NAMES.get(option, getattr(typing.get_origin(option) or option, "__name__", str(option))))
    return " or ".join(parts)


__all__ = ["check_field_types"]
