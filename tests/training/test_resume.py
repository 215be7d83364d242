"""A run killed with SIGKILL resumes from its last backup and ends close to
an uninterrupted run with the same seed."""

import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import h5py
import pytest

from tests.training.tiny import TINY_TRAIN, train_command

REPO_ROOT = Path(__file__).resolve().parents[2]
RESUME_RUN = [
    *TINY_TRAIN,
    "epochs=4",
    "synthetic_train_size=48",
    "synthetic_val_size=16",
    "backup_every_steps=3",
    "seed=11",
]
_KILL_TIMEOUT_S = 300


def _train_command(work_dir, *extra):
    return train_command(work_dir, RESUME_RUN, *extra)


def _run(command):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        command, env=env, capture_output=True, text=True, check=False
    )


def _last_val_miou(work_dir):
    with open(work_dir / "history.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return rows, float(rows[-1]["val_mean_iou"])


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    # The uninterrupted reference runs beside the killed run (their start-up
    # and tracing overlap); it is only read at the end.
    reference_log = tmp_path / "reference.err"
    with open(reference_log, "w") as log:  # a full pipe would block it
        reference = subprocess.Popen(
            _train_command(tmp_path / "reference"),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    work_dir = tmp_path / "killed"
    process = subprocess.Popen(
        _train_command(work_dir),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    state_file = work_dir / "backup" / "state.json"
    deadline = time.monotonic() + _KILL_TIMEOUT_S
    while time.monotonic() < deadline:
        # Kill during epoch 2, after at least one mid-epoch backup.
        if state_file.is_file():
            state = json.loads(state_file.read_text())
            if state["epoch"] == 1 and state["step"] >= 3:
                break
        time.sleep(0.05)
    else:
        process.kill()
        reference.kill()
        pytest.fail("no mid-epoch backup appeared in time")
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (work_dir / "final.keras").exists()
    # The backup is whole: the state parses and the weights it describes
    # open as HDF5 (a kill mid-write leaves at most a temporary sibling).
    state = json.loads(state_file.read_text())
    assert state["iterations"] >= 12 + 3  # 12 steps per epoch
    with h5py.File(work_dir / "backup" / "latest.weights.h5", "r") as weights:
        assert len(weights.keys()) > 0

    refused = _run(_train_command(work_dir))
    assert refused.returncode == 2
    assert "pass --resume" in refused.stderr

    resumed = _run(_train_command(work_dir, "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from the backup of epoch 2" in resumed.stdout
    assert (work_dir / "final.keras").is_file()
    assert not list(work_dir.rglob("*.partial*"))  # leftovers cleaned up
    reference.wait(timeout=_KILL_TIMEOUT_S)
    assert reference.returncode == 0, reference_log.read_text()[-2000:]
    rows, resumed_miou = _last_val_miou(work_dir)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]  # from 1
    _, reference_miou = _last_val_miou(tmp_path / "reference")
    assert abs(resumed_miou - reference_miou) <= 0.02, (
        resumed_miou,
        reference_miou,
    )
