"""Atomic writes: all or nothing, no leftovers, readable by other users."""

import os
import stat

import pytest

from keras_deeplab.utils.atomic import (
    atomic_directory,
    atomic_file,
    atomic_write_text,
)


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = atomic_write_text(tmp_path / "state.json", "old")
    with pytest.raises(RuntimeError), atomic_file(path) as temporary:
        temporary.write_text("half")
        raise RuntimeError("killed")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_leftovers_of_a_killed_write_are_removed_by_the_next(tmp_path):
    """A SIGKILL between creating the temporary and the rename leaves it."""
    (tmp_path / ".model.keras.x1y2.partial.keras").write_bytes(b"half")
    (tmp_path / ".1.abcd.partial").mkdir()
    (tmp_path / ".1.old").mkdir()
    (tmp_path / ".other.keras.x.partial.keras").write_bytes(b"not ours")
    atomic_write_text(tmp_path / "model.keras", "new")
    with atomic_directory(tmp_path / "1") as temporary:
        (temporary / "saved_model.pb").write_bytes(b"pb")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".other.keras.x.partial.keras",
        "1",
        "model.keras",
    ]


def test_published_folder_follows_the_umask_not_mkdtemp(tmp_path):
    previous = os.umask(0o022)
    try:
        with atomic_directory(tmp_path / "1") as temporary:
            (temporary / "saved_model.pb").write_bytes(b"pb")
    finally:
        os.umask(previous)
    mode = stat.S_IMODE((tmp_path / "1").stat().st_mode)
    assert mode == 0o755, oct(mode)  # TF Serving as another user reads it


def test_replacing_a_folder_leaves_no_old_copy(tmp_path):
    for version in ("a", "b"):
        with atomic_directory(tmp_path / "1", overwrite=True) as temporary:
            (temporary / "version").write_text(version)
    assert (tmp_path / "1" / "version").read_text() == "b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1"]
