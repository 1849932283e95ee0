"""imgclass.files: atomic writes leave complete files with the permissions a plain open() would give."""

from __future__ import annotations

import os
import stat

import pytest

from imgclass import files


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it after."""
    original = os.umask(0o022)
    yield os.umask
    os.umask(original)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_atomic_writes_respect_the_umask(tmp_path, umask, mask):
    umask(mask)
    files.write_text(tmp_path / "a.txt", "hello")
    files.write_json(tmp_path / "b.json", {"a": 1})
    with open(tmp_path / "plain.txt", "w") as f:  # what every other program would create
        f.write("x")
    expected = 0o666 & ~mask
    for name in ("a.txt", "b.json", "plain.txt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected, name


def test_atomic_path_replaces_whole_or_not_at_all(tmp_path):
    target = tmp_path / "sub" / "x.txt"
    files.write_text(target, "old")
    with pytest.raises(RuntimeError), files.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in target.parent.iterdir()] == ["x.txt"]  # no temp file left
