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


def test_cache_lock_makes_a_second_builder_wait_and_find_the_entry(tmp_path):
    """Two processes build one entry: the lock lets exactly one build run; the other finds it."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from lmsan.files import cache_lock, publish_cache_dir
        path = Path({str(tmp_path / "entry")!r})
        with cache_lock(path):
            if not path.exists():
                def write(staging):
                    time.sleep(0.5)  # the other process is waiting on the lock meanwhile
                    (staging / "builder").write_text(sys.argv[1])
                publish_cache_dir(path, write)
                with open(Path({str(tmp_path)!r}) / "builds", "a") as log:
                    log.write(sys.argv[1] + "\\n")
    """)
    workers = [subprocess.Popen([sys.executable, "-c", script, name]) for name in ("a", "b")]
    assert [w.wait(timeout=60) for w in workers] == [0, 0]
    builds = (tmp_path / "builds").read_text().split()
    assert len(builds) == 1 and (tmp_path / "entry" / "builder").read_text() == builds[0]
