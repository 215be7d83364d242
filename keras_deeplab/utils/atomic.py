"""Atomic file and directory writes: readers see the old or the new, never half.

Each helper writes into a temporary sibling (same file system) and renames it
into place with `os.replace`, which POSIX guarantees to be atomic. A process
killed mid-write leaves its temporary sibling behind, named with its pid;
the next write of the same path removes it once that process is gone.
"""

import contextlib
import errno
import glob
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from keras_deeplab.utils.errors import UserInputError

_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
# HDF5 crashes the process when a write fails half-way (exit 139 was seen),
# so the writers that go through it check for room first, with a margin.
_SPACE_MARGIN = 1.2
# Free bytes below which a failed write is taken for a full disk.
_NEARLY_FULL = 64 * 1024


class DiskFullError(UserInputError):
    """No room for a file; the message names it. Nothing half-written stays."""


def _write_errors() -> tuple:
    """The errors a writer raises when the disk fills: OSError (ENOSPC, or
    numpy's "N requested and M written"), RuntimeError (h5py wraps ENOSPC
    in one) and, once TensorFlow is loaded, its ResourceExhaustedError
    (what a SavedModel write raises)."""
    errors = (OSError, RuntimeError)
    tensorflow = sys.modules.get("tensorflow")
    if tensorflow is not None:
        errors += (tensorflow.errors.ResourceExhaustedError,)
    return errors


def _is_disk_full(err, path) -> bool:
    if getattr(err, "errno", None) in _DISK_FULL:
        return True
    text = str(err)
    if "No space left on device" in text or "errno = 28" in text:
        return True
    # A short write without an errno (numpy's tofile): the disk is full if
    # the file system has nothing left.
    folder = next(p for p in (path, *path.parents) if p.exists())
    return shutil.disk_usage(folder).free < _NEARLY_FULL


def _disk_full(path, err):
    return DiskFullError(
        f"no space left on the device writing {str(path)!r} "
        f"({getattr(err, 'strerror', None) or 'not enough free space'}); "
        "free some "
        "space and run again (nothing half-written was kept)."
    )


def require_free_space(path, nbytes: int):
    """Raises DiskFullError unless `path`'s file system has room for about
    `nbytes` more."""
    path = Path(path)
    folder = next(p for p in (path, *path.parents) if p.exists())
    if shutil.disk_usage(folder).free < nbytes * _SPACE_MARGIN:
        raise _disk_full(path, None)


_PARTIAL_PID = re.compile(r"\.(\d+)-[^.]*\.partial")


def _writer_alive(stale: Path) -> bool:
    """Whether the process that named this temporary still runs (names
    carry the writer's pid; an older name without one counts as dead)."""
    match = _PARTIAL_PID.search(stale.name)
    if match is None:
        return False
    try:
        os.kill(int(match.group(1)), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def _remove(stale: Path):
    if stale.is_dir():
        shutil.rmtree(stale, ignore_errors=True)
    else:
        stale.unlink(missing_ok=True)


def remove_dead_partials(folder):
    """Removes the temporaries in `folder` whose writer was killed mid-way
    (a live writer's are kept)."""
    for stale in Path(folder).glob(".*.partial*"):
        if not _writer_alive(stale):
            _remove(stale)


def _remove_leftovers(path):
    """Temporaries of earlier writes of `path` that were killed mid-way."""
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.partial*"):
        if not _writer_alive(stale):
            _remove(stale)
    retired = path.with_name(f".{path.name}.old")
    if retired.exists():
        shutil.rmtree(retired, ignore_errors=True)


def _temporary_prefix(path: Path) -> str:
    # The writer's pid, so a later writer removes only the temporaries of
    # killed processes, never those of a live one beside it.
    return f".{path.name}.{os.getpid()}-"


def _umask() -> int:
    """The process umask, read without changing it where Linux allows."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    current = os.umask(0o022)  # elsewhere: the classic set-and-restore
    os.umask(current)
    return current


@contextlib.contextmanager
def atomic_file(path):
    """Yields a temporary path that replaces `path` when the block succeeds.

    The temporary name keeps the final suffix so that writers which dispatch
    on it (`model.save(".keras")`, `save_weights(".weights.h5")`) still work.
    On an exception the temporary file is removed and `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(path)
    suffix = "".join(path.suffixes)
    handle, temporary = tempfile.mkstemp(
        prefix=_temporary_prefix(path),
        suffix=f".partial{suffix}",
        dir=path.parent,
    )
    os.close(handle)
    os.unlink(temporary)  # writers such as h5py want to create it themselves
    temporary = Path(temporary)
    try:
        yield temporary
        os.replace(temporary, path)
    except _write_errors() as err:
        if _is_disk_full(err, path.parent):
            raise _disk_full(path, err) from err
        raise
    finally:
        temporary.unlink(missing_ok=True)


def atomic_write_text(path, text: str) -> Path:
    """Writes `text` to `path` atomically and returns `path`."""
    path = Path(path)
    with atomic_file(path) as temporary:
        temporary.write_text(text)
    return path


def atomic_write_bytes(path, data: bytes) -> Path:
    """Writes `data` to `path` atomically and returns `path`."""
    path = Path(path)
    with atomic_file(path) as temporary:
        temporary.write_bytes(data)
    return path


@contextlib.contextmanager
def atomic_directory(path, *, overwrite: bool = False):
    """Yields a temporary directory that becomes `path` when the block succeeds.

    Args:
        path: final directory. Must not exist unless `overwrite` is True.
        overwrite: bool. Replace an existing directory. Defaults to False.

    Raises:
        FileExistsError: if `path` exists and `overwrite` is False.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"{str(path)!r} already exists; choose another path or pass "
            "--overwrite to replace it."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(path)
    temporary = Path(
        tempfile.mkdtemp(
            prefix=_temporary_prefix(path), suffix=".partial", dir=path.parent
        )
    )
    # mkdtemp creates 0700; a published folder gets the usual permissions so
    # that, e.g., TF Serving running as another user can read it.
    temporary.chmod(0o777 & ~_umask())
    try:
        try:
            yield temporary
        except _write_errors() as err:
            if _is_disk_full(err, path.parent):
                raise _disk_full(path, err) from err
            raise
        if path.exists():
            # Move the old version aside first so a crash between the two
            # renames leaves either the old or the new directory in place.
            retired = path.with_name(f".{path.name}.old")
            shutil.rmtree(retired, ignore_errors=True)
            os.replace(path, retired)
            os.replace(temporary, path)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(temporary, path)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
