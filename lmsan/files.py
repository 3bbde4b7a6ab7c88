"""File helpers: SHA-256, atomic writes and schema-versioned JSON. Stdlib only."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from lmsan.errors import DataError

_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    """Return the hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def json_digest(payload: dict[str, Any], *, exclude: str | None = None) -> str:
    """Return the hex SHA-256 of ``payload`` in canonical JSON (sorted keys, no spaces, ASCII).

    Args:
        payload: JSON-serialisable mapping (floats must round-trip: as read back by ``json``).
        exclude: a top-level key left out (the field that stores the digest itself).
    """
    data = {key: value for key, value in payload.items() if key != exclude}
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Write a file atomically: ``write(tmp_path)`` fills a temp file, then it is renamed.

    The temp file sits in the destination directory so the rename never crosses devices. On any
    error the temp file is removed and the destination is left as it was.

    Args:
        path: destination file.
        write: callable that writes the complete content to the path it is given.

    Returns:
        The destination path.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 text atomically (see ``atomic_write``)."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: str | os.PathLike, payload: dict[str, Any], *, schema_version: int | None = None) -> Path:
    """Write ``payload`` as indented JSON with sorted keys, atomically.

    Args:
        path: destination file.
        payload: JSON-serialisable mapping.
        schema_version: if given, stored under ``"schema_version"``.
    """
    data = dict(payload)
    if schema_version is not None:
        data["schema_version"] = schema_version
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike, *, schema_version: int | None = None) -> dict[str, Any]:
    """Read a JSON object; raise ``DataError`` with the path on any problem.

    Args:
        path: file to read.
        schema_version: if given, the file's ``"schema_version"`` must equal it.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DataError(f"file not found: {path}") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read JSON from {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise DataError(f"expected a JSON object in {path}, got {type(data).__name__}")
    if schema_version is not None and data.get("schema_version") != schema_version:
        raise DataError(
            f"unsupported schema_version {data.get('schema_version')!r} in {path} (expected {schema_version})"
        )
    return data


def cache_dir(*parts: str) -> Path:
    """Return ``$LMSAN_CACHE/<parts>`` (default ``~/.cache/lmsan``), created if needed."""
    root = Path(os.environ.get("LMSAN_CACHE") or Path.home() / ".cache" / "lmsan")
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def cache_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on building the cache entry ``path`` (``flock`` on the file
    ``.<name>.lock`` next to it): concurrent builders of one entry, such as parallel test workers,
    build it once, as the second waits and then finds it built (check again inside the lock).
    Without ``fcntl`` (not POSIX) there is no lock; ``publish_cache_dir`` still keeps each build
    whole."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def publish_cache_dir(path: Path, write: Callable[[Path], None]) -> None:
    """Build the cache entry ``path`` once: ``write(staging)`` fills a fresh directory next to it
    (unique to this call), which is then renamed to ``path``. If another process published
    ``path`` first, theirs is kept and ours deleted; on failure the staging directory is deleted.
    Two processes building the same entry at once never write into one directory."""
    import shutil

    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    try:
        write(staging)
        if not path.exists():
            try:
                os.rename(staging, path)
                return
            except OSError:
                if not path.exists():  # not a lost race: a real error
                    raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def replace_dir(staging: Path, out: Path) -> None:
    """Rename the finished directory ``staging`` to ``out``. An existing ``out`` is moved aside
    first and deleted only once the rename succeeded (restored if it fails): a crash never leaves
    ``out`` half-written. Callers check that ``out`` may be replaced before calling."""
    import shutil

    old = out.with_name(f".{out.name}.old-{os.getpid()}") if out.exists() else None
    if old is not None:
        os.replace(out, old)
    try:
        os.replace(staging, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def check_replaceable(out: Path, *, overwrite: bool, manifest: str, fmt: str, kind: str,
                      error: type[Exception]) -> None:
    """Refuse an output directory whose replacement could lose data.

    ``out`` must not exist, unless ``overwrite`` is set and it is an empty directory or a ``kind``
    directory lmsan wrote (its ``manifest`` JSON has ``format`` ``fmt``). Nothing else is deleted.

    Raises:
        error: ``out`` exists and may not be replaced (the message says why).
    """
    if not out.exists():
        return
    if not out.is_dir():
        raise error(f"output {out} is a file, not a {kind} directory")
    if not overwrite:
        raise error(f"output directory exists: {out} (pass overwrite / --force to replace it)")
    if not any(out.iterdir()):
        return
    try:
        fields = read_json(out / manifest)
    except DataError:
        fields = {}
    if fields.get("format") != fmt:
        raise error(f"refusing to replace {out}: it is not an lmsan {kind} directory (no {manifest} of format "
                    f"{fmt}); --force only replaces a {kind}, so pick a new --out")
