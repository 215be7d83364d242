"""A training run's work dir: what it holds, when it is another run's, and
the summary of a finished run.

    <work_dir>/config.json   the resolved config
    <work_dir>/best.keras    best validation mIoU (best.json: value, epoch)
    <work_dir>/final.keras   the last epoch's model
    <work_dir>/history.csv   one row per epoch, epochs counted from 1
    <work_dir>/logs/         TensorBoard
    <work_dir>/backup/       while the run is unfinished (--resume)
    <work_dir>/.train.lock   while a run is live: a second run is refused
"""

import contextlib
import csv
import fcntl
import json
import os
import shutil
import socket
import time
from pathlib import Path

from keras_deeplab.training.callbacks import BACKUP_DIR
from keras_deeplab.utils.errors import UserInputError

BEST_MODEL = "best.keras"
BEST_RECORD = "best.json"
FINAL_MODEL = "final.keras"
CONFIG_FILE = "config.json"
HISTORY_FILE = "history.csv"
LOGS_DIR = "logs"
LOCK_FILE = ".train.lock"
# What a finished or started run leaves in its work dir.
_RUN_FILES = (BEST_MODEL, BEST_RECORD, FINAL_MODEL, HISTORY_FILE, CONFIG_FILE)


def read_history(history_csv) -> dict:
    """The history file of a run as {metric: [value per epoch]}."""
    with open(history_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return {}
    return {key: [float(row[key]) for row in rows] for key in rows[0]}


def finished_run(work_dir) -> bool:
    """Whether `work_dir` holds a run that completed: `train` writes
    final.keras, then removes the backup."""
    work_dir = Path(work_dir)
    return (work_dir / FINAL_MODEL).is_file() and not (
        work_dir / BACKUP_DIR
    ).exists()


def _finished_a_step(work_dir, backup) -> bool:
    """A run counts once it finished a step: a backup, a model or an epoch
    in its history. One stopped before (bad data, a typo found late)
    leaves only config.json and an empty history."""
    if backup.exists() or any(
        (work_dir / name).exists() for name in (BEST_MODEL, FINAL_MODEL)
    ):
        return True
    history = work_dir / HISTORY_FILE
    return history.is_file() and bool(read_history(history))


def _remove(work_dir, names):
    for name in names:
        path = work_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    shutil.rmtree(work_dir / LOGS_DIR, ignore_errors=True)


def prepare_work_dir(work_dir, *, backup, resume, overwrite, owner=True):
    """Refuses to mix runs in one work dir; `overwrite` clears the old one,
    and a run that never finished a step is cleared as if it were not
    there (when this process is the work dir's `owner`)."""
    work_dir = Path(work_dir)
    if resume:
        if not backup.exists():
            raise UserInputError(
                f"--resume given but {str(backup.directory)!r} has no backup "
                "to resume from; drop --resume to start a new run."
            )
        return
    previous = [name for name in _RUN_FILES if (work_dir / name).exists()]
    if backup.exists():
        previous.append(BACKUP_DIR)
    started = _finished_a_step(work_dir, backup)
    if previous and started and not overwrite:
        unfinished = BACKUP_DIR in previous
        raise UserInputError(
            f"work dir {str(work_dir)!r} holds "
            + (
                "an interrupted run; pass --resume to continue it"
                if unfinished
                else f"a previous run ({', '.join(previous)})"
            )
            + ", pass --overwrite to replace it, or choose another --work-dir."
        )
    if owner:
        _remove(work_dir, previous)


@contextlib.contextmanager
def work_dir_lock(work_dir, *, owner=True):
    """Holds `work_dir` for one live run: a second run on it is refused in
    one line naming the first run's process. The lock is the operating
    system's (flock), so a run that died, even by SIGKILL, holds nothing:
    its stale lock file is taken over with a note. Only the `owner`
    process of a multi-process run takes it."""
    if not owner:
        yield
        return
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / LOCK_FILE
    with open(path, "a+") as handle:
        handle.seek(0)
        holder = handle.read().strip()
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserInputError(
                f"work dir {str(work_dir)!r} is in use by another training "
                f"run ({holder or 'process unknown'}); wait for it to end, "
                "or choose another --work-dir."
            ) from None
        if holder:
            print(
                f"note: took over the lock of a run that ended without "
                f"releasing it ({holder})",
                flush=True,
            )
        handle.seek(0)
        handle.truncate()
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        handle.write(
            f"pid {os.getpid()} on {socket.gethostname()}, started {started}"
        )
        handle.flush()
        try:
            yield
        finally:
            handle.truncate(0)  # released: nothing for the next run to note
            fcntl.flock(handle, fcntl.LOCK_UN)


def clear_unstarted_run(work_dir, *, backup):
    """Removes what a run that stopped before finishing a step wrote
    (config.json, an empty history, logs), so nothing suggests it ran."""
    work_dir = Path(work_dir)
    if not _finished_a_step(work_dir, backup):
        _remove(work_dir, (CONFIG_FILE, HISTORY_FILE))


def run_summary(work_dir, *, monitor, seconds) -> str:
    """What a finished run left and how well it did, in a few lines."""
    work_dir = Path(work_dir)
    lines = [f"training finished in {seconds / 60:.1f} min"]
    record = work_dir / BEST_RECORD
    if record.is_file():
        best = json.loads(record.read_text())
        lines.append(
            f"best {monitor} {best['value']:.4f} at epoch {best['epoch']}: "
            f"{work_dir / BEST_MODEL}"
        )
    written = [
        str(work_dir / name)
        for name in (FINAL_MODEL, HISTORY_FILE, CONFIG_FILE)
        if (work_dir / name).exists()
    ]
    lines.append(f"wrote {', '.join(written)}, TensorBoard {LOGS_DIR}/")
    return "\n".join(lines)
