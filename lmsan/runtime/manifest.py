"""Read and verify ``guard.json`` (layout: ``lmsan.export.manifest``). Stdlib only.

Every file the manifest lists must exist in the guard directory and hash to the recorded
SHA-256; names are plain file names (no paths), so a manifest cannot point outside its directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmsan.errors import DataError, IntegrityError
from lmsan.files import read_json, sha256_file
from lmsan.pvset import TARGETS

MANIFEST = "guard.json"
GUARD_FORMAT = "lmsan.guard/1"
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class GuardManifest:
    """The fields of ``guard.json`` the runtime uses (the full JSON stays in ``raw``).

    Attributes:
        directory: the guard directory.
        graph: path of the ONNX graph.
        tokenizer: path of ``tokenizer.json``.
        target: position the PVs live at (``cls``, ``token``, ``last``, ``mask``).
        threshold: default ``T_match`` in [0, 1).
        max_length: longest sequence (special tokens included) the model accepts.
        inputs: graph input names, ``threshold`` last.
        pad_id: padding token id. mask_token / mask_id: the mask token (``None`` if absent).
        pv_count: number of PVs ``K`` baked into the graph.
        raw: the parsed JSON.
    """

    directory: Path
    graph: Path
    tokenizer: Path
    target: str
    threshold: float
    max_length: int
    inputs: tuple[str, ...]
    pad_id: int
    mask_token: str | None
    mask_id: int | None
    pv_count: int
    raw: dict[str, Any]

    @classmethod
    def load(cls, directory: str | Path, *, verify: bool = True) -> "GuardManifest":
        """Parse ``directory/guard.json`` and (by default) check every listed file's SHA-256.

        Raises:
            DataError: no such directory, missing or malformed manifest, missing listed file.
            IntegrityError: a file's SHA-256 differs from the manifest's.
        """
        directory = Path(directory)
        if not directory.is_dir():
            raise DataError(f"guard directory not found: {directory}")
        raw = read_json(directory / MANIFEST, schema_version=SCHEMA_VERSION)
        if raw.get("format") != GUARD_FORMAT:
            raise DataError(f"{directory / MANIFEST} is not an lmsan guard manifest (format {raw.get('format')!r})")
        try:
            files = dict(raw["files"])
            tokenizer = raw["tokenizer"]
            manifest = cls(
                directory=directory,
                graph=directory / _plain(raw["graph"]),
                tokenizer=directory / _plain(tokenizer["file"]),
                target=str(raw["target"]),
                threshold=float(raw["threshold"]),
                max_length=int(raw["max_length"]),
                inputs=tuple(str(name) for name in raw["inputs"]),
                pad_id=int(tokenizer["pad_id"]),
                mask_token=tokenizer.get("mask_token"),
                mask_id=None if tokenizer.get("mask_id") is None else int(tokenizer["mask_id"]),
                pv_count=int(raw["pvs"]["size"]),
                raw=raw,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"malformed {directory / MANIFEST}: {type(exc).__name__}: {exc}") from exc
        if manifest.target not in TARGETS:
            raise DataError(f"unknown target {manifest.target!r} in {directory / MANIFEST}")
        for needed in (manifest.graph.name, manifest.tokenizer.name):
            if needed not in files:
                raise DataError(f"{directory / MANIFEST} lists no hash for {needed}")
        for name, digest in files.items():
            path = directory / _plain(name)
            if not path.is_file():
                raise DataError(f"guard file missing: {path}")
            if verify and sha256_file(path) != digest:
                raise IntegrityError(f"SHA-256 of {path} does not match {MANIFEST}: the guard was modified")
        return manifest


def _plain(name: Any) -> str:
    """Accept a bare file name only; reject paths that could leave the guard directory."""
    name = str(name)
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise DataError(f"guard manifest names a path, not a file name: {name!r}")
    return name
