"""``lmsan.files.publish_cache_dir``: a cache entry is published whole, once, or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmsan.files import publish_cache_dir


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".partial-" in p.name)


def test_a_build_is_published_whole(tmp_path):
    path = tmp_path / "entry"
    publish_cache_dir(path, lambda staging: (staging / "weights").write_text("ours"))
    assert (path / "weights").read_text() == "ours"
    assert _leftovers(tmp_path) == []


def test_an_entry_another_process_published_first_is_kept(tmp_path):
    path = tmp_path / "entry"

    def write(staging: Path) -> None:
        (staging / "weights").write_text("ours")
        path.mkdir()  # the other process finishes while we write
        (path / "weights").write_text("theirs")

    publish_cache_dir(path, write)
    assert (path / "weights").read_text() == "theirs"
    assert _leftovers(tmp_path) == []


def test_two_builders_never_share_a_staging_directory(tmp_path):
    path, seen = tmp_path / "entry", []

    def inner(staging: Path) -> None:
        seen.append(staging)
        (staging / "weights").write_text("inner")

    def outer(staging: Path) -> None:
        seen.append(staging)
        (staging / "weights").write_text("outer")
        publish_cache_dir(path, inner)  # a second builder starts and finishes meanwhile
        assert (staging / "weights").read_text() == "outer"

    publish_cache_dir(path, outer)
    assert seen[0] != seen[1] and (path / "weights").read_text() == "inner"


def test_a_failed_build_leaves_nothing(tmp_path):
    path = tmp_path / "entry"

    def write(staging: Path) -> None:
        (staging / "weights").write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        publish_cache_dir(path, write)
    assert not path.exists() and _leftovers(tmp_path) == []
