"""Hugging Face ``datasets`` sources, spelled ``hf:NAME[:CONFIG][@SPLIT]``.

``datasets`` is optional and imported only when such a source is loaded. Examples:
``hf:imdb`` (train split), ``hf:glue:sst2@validation``, ``hf:stanfordnlp/sst2@test``.
Columns are chosen with the loaders' ``column``/``text_column``/``label_column`` options.
No torch, no transformers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lmsan.errors import DataError

PREFIX = "hf:"


@dataclass(frozen=True)
class HFSpec:
    """A parsed ``hf:`` source: dataset ``name``, optional ``config``, and ``split``."""

    name: str
    config: str | None = None
    split: str = "train"

    def __str__(self) -> str:
        config = f":{self.config}" if self.config else ""
        return f"{PREFIX}{self.name}{config}@{self.split}"


def is_hf(source: str) -> bool:
    """Say whether ``source`` names a Hugging Face dataset (starts with ``hf:``)."""
    return source.startswith(PREFIX)


def parse_hf(source: str) -> HFSpec:
    """Parse ``hf:NAME[:CONFIG][@SPLIT]`` (split defaults to ``train``).

    Raises:
        DataError: an empty name, config or split.
    """
    body = source[len(PREFIX) :]
    body, at, split = body.partition("@")
    name, colon, config = body.partition(":")
    if not name or (colon and not config) or (at and not split):
        raise DataError(
            f"bad Hugging Face source {source!r}; expected hf:NAME[:CONFIG][@SPLIT], e.g. hf:glue:sst2@validation"
        )
    return HFSpec(name=name, config=config or None, split=split or "train")


def _import_datasets() -> Any:
    try:
        import datasets  # noqa: PLC0415 - optional dependency, imported on use
    except ImportError as exc:
        raise DataError(
            "Hugging Face sources (hf:...) need the 'datasets' package: pip install datasets"
        ) from exc
    return datasets


def load_hf(spec: HFSpec) -> Any:
    """Load one split with ``datasets.load_dataset`` (network or the HF cache).

    Returns:
        The ``datasets.Dataset`` (has ``column_names``, ``features`` and ``ds[column]``).

    Raises:
        DataError: ``datasets`` missing, or any loading failure (wrapped, naming the spec).
    """
    datasets = _import_datasets()
    try:
        return datasets.load_dataset(spec.name, spec.config, split=spec.split)
    except Exception as exc:  # noqa: BLE001 - third-party failures become one DataError
        raise DataError(f"cannot load Hugging Face dataset {spec}: {type(exc).__name__}: {exc}") from exc


def class_names(dataset: Any, column: str) -> list[str] | None:
    """Return the ``ClassLabel`` names of ``column``, or ``None`` if it is not a ClassLabel."""
    feature = getattr(dataset, "features", {}).get(column)
    names = getattr(feature, "names", None)
    return list(names) if names else None
