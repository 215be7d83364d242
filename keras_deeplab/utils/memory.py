"""Resident memory of this process, read from Linux's /proc, and handing
freed memory back.

`export --format all` prints each artefact's peak beside its time, and the
benchmark harness records each runtime's peak. Elsewhere (no /proc) every
reading is None.
"""

import contextlib
import ctypes
import ctypes.util
import functools
import gc
import time
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_mb(field) -> float | None:
    # /proc, not getrusage: ru_maxrss survives exec, so a child would report
    # the RSS of the parent it was forked from. VmHWM starts fresh at exec.
    try:
        with _STATUS.open() as handle:
            line = next(x for x in handle if x.startswith(field + ":"))
    except (OSError, StopIteration):
        return None
    return int(line.split()[1]) / 1024  # kB


def rss_mb() -> float | None:
    """Resident memory now, MB."""
    return _status_mb("VmRSS")


def peak_rss_mb() -> float | None:
    """Peak resident memory since the process started or since the last
    `reset_peak_rss()`, MB."""
    return _status_mb("VmHWM")


def reset_peak_rss() -> None:
    """Starts a new peak at the current resident memory ("5" to clear_refs,
    Linux 4.0+), so one step's peak can be read on its own."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        pass


@functools.cache
def _malloc_trim():
    library = ctypes.util.find_library("c")
    libc = ctypes.CDLL(library) if library else None
    return getattr(libc, "malloc_trim", None)


def release_freed_memory() -> None:
    """Collects Python's cyclic garbage and hands freed heap pages back to
    the system (glibc's `malloc_trim`; elsewhere only the collection).

    Without it a process that ran one big step (a converter, a full-size
    model) keeps that step's peak as resident memory for the next one.
    """
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@contextlib.contextmanager
def measured_step():
    """Wall time and peak resident memory of the code within.

    Freed memory is handed back first, so the peak is this step's and not
    one an earlier step left resident. Yields a dict that is filled on exit
    with "seconds" and "peak_mb" (None without /proc). Steps do not nest:
    the process has one peak, and an inner step restarts it.
    """
    release_freed_memory()
    reset_peak_rss()
    cost = {}
    start = time.perf_counter()
    yield cost
    cost["seconds"] = time.perf_counter() - start
    cost["peak_mb"] = peak_rss_mb()
