"""Plan a many-model scan: read LIST, name each model's scan directory, tell which scans are done.

LIST is a text file with one model per line (a local directory or a hub id; blank lines and lines
starting with ``#`` are skipped) or a ``.json`` file holding a list of strings. A relative
directory resolves against LIST's own folder, so a LIST can travel with the models it names.

Every model gets ``<out>/models/<slug>-<hash>``: a readable slug of the last two path parts and
the first 10 hex digits of the SHA-256 of the resolved source (an absolute path or the hub id), so
the name is stable across runs and two models never share a directory.

Stdlib, lmsan.errors, lmsan.files and lmsan.mining.report only: no torch, no ray.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmsan.errors import ConfigError, DataError, LmsanError
from lmsan.files import read_json
from lmsan.mining.report import PVS_FILE, REPORT_FILE, REPORT_SCHEMA, load_run

log = logging.getLogger(__name__)

MODELS_DIR = "models"
SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
SLUG_CHARS = 40


@dataclass(frozen=True)
class ModelJob:
    """One model of LIST and where its scan goes.

    Attributes:
        entry: the model as written in LIST.
        source: what ``lmsan-mine`` loads: an absolute directory, or the hub id unchanged.
        name: the scan directory's name, ``<slug>-<hash>``.
        out_dir: absolute path of the scan directory, ``<out>/models/<name>``.
    """

    entry: str
    source: str
    name: str
    out_dir: str

    @property
    def rel_dir(self) -> str:
        """The scan directory relative to ``--out`` (as the summary records it)."""
        return f"{MODELS_DIR}/{self.name}"


def read_list(path: str | Path) -> list[str]:
    """Return LIST's model entries in order (comments and blank lines dropped).

    Raises:
        DataError: LIST is unreadable, a ``.json`` LIST is not a list of non-empty strings, or
            LIST names no model.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read LIST {path}: {exc}") from exc
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"LIST {path} is not valid JSON: {exc}") from exc
        if not isinstance(data, list) or not all(isinstance(item, str) and item.strip() for item in data):
            raise DataError(f"LIST {path} must hold a JSON list of non-empty strings (model directories or hub ids)")
        entries = [item.strip() for item in data]
    else:
        entries = [line.strip() for line in text.splitlines()]
        entries = [line for line in entries if line and not line.startswith("#")]
    if not entries:
        raise DataError(f"LIST {path} names no model")
    return entries


def resolve_source(entry: str, base: Path) -> str:
    """Turn a LIST entry into what ``lmsan-mine`` loads.

    An entry is a directory when it starts with ``/``, ``.`` or ``~``, or when it exists relative
    to ``base`` (LIST's folder); it then becomes an absolute path. Anything else is a hub id,
    passed on unchanged (``lmsan-mine`` treats the same spellings the same way).
    """
    path = Path(entry).expanduser()
    if entry.startswith(("/", ".", "~")) or (base / path).exists():
        return str((base / path).resolve())
    return entry


def dir_name(source: str) -> str:
    """``<slug>-<hash>``: the last two parts of ``source``, made filename-safe and cut to their last
    40 characters, and 10 hex digits of its SHA-256. E.g. ``/models/acme/bert-v2`` ->
    ``acme-bert-v2-<10 hex digits>``."""
    parts = [part for part in re.split(r"[\\/]+", source) if part][-2:]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(parts))[-SLUG_CHARS:].strip("._-") or "model"
    return f"{slug}-{hashlib.sha256(source.encode('utf-8')).hexdigest()[:10]}"


def plan(list_path: str | Path, out: str | Path) -> list[ModelJob]:
    """Read LIST and give every model its scan directory under ``out`` (in LIST order).

    A model named twice (the same resolved source) is scanned once; the repeat is logged.

    Raises:
        DataError: see ``read_list``.
    """
    list_path = Path(list_path)
    root = Path(out).resolve() / MODELS_DIR
    jobs: dict[str, ModelJob] = {}
    for entry in read_list(list_path):
        source = resolve_source(entry, list_path.resolve().parent)
        if source in jobs:
            log.warning("LIST names %s twice (as %r and %r): scanning it once", source, jobs[source].entry, entry)
            continue
        name = dir_name(source)
        jobs[source] = ModelJob(entry=entry, source=source, name=name, out_dir=str(root / name))
    return list(jobs.values())


def finished_report(out_dir: str | Path) -> dict[str, Any] | None:
    """Return the scan's ``report.json`` when the scan in ``out_dir`` is complete, else ``None``.

    Complete means ``report.json`` has ``status: complete`` and pairs with its
    ``pvs.safetensors`` (``load_run``'s SHA-256 check). A partial checkpoint, a missing or
    unreadable pair is not complete: the model is scanned (resumed or started over) again.
    """
    out_dir = Path(out_dir)
    if not (out_dir / REPORT_FILE).is_file() or not (out_dir / PVS_FILE).is_file():
        return None
    try:
        report, _ = load_run(out_dir)
    except LmsanError as exc:
        log.warning("%s: unusable earlier scan (%s): scanning again", out_dir, exc)
        return None
    if report.status != "complete":
        return None
    return read_json(out_dir / REPORT_FILE, schema_version=REPORT_SCHEMA)


def check_settings(out: str | Path, settings: dict[str, Any]) -> None:
    """Refuse to mix mining settings in one ``--out``: skipped models would keep the old ones.

    Args:
        out: the ``--out`` directory.
        settings: this run's result-affecting mining options (``settings`` in ``summary.json``).

    Raises:
        ConfigError: ``out`` holds a summary written with other settings (naming the first).
    """
    path = Path(out) / SUMMARY_JSON
    if not path.is_file():
        return
    earlier = read_json(path).get("settings")
    if earlier is None or earlier == settings:
        return
    key = next(k for k in sorted(set(earlier) | set(settings)) if earlier.get(k) != settings.get(k))
    raise ConfigError(f"--out {out} was scanned with {key}={earlier.get(key)!r}, this run has "
                      f"{key}={settings.get(key)!r}: use another --out (done models would be skipped)")
