"""tf.distribute: MirroredStrategy on 2 logical CPUs, and two local
MultiWorkerMirroredStrategy workers talking over 127.0.0.1."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.training.tiny import TINY_TRAIN, train_command

REPO_ROOT = Path(__file__).resolve().parents[2]
_WORKER_TIMEOUT_S = 240
_TRACEBACK = "Traceback (most recent call last)"
# Frozen BN, no dropout and no ignored pixels (no scaling, so no padding)
# make a replica-split batch exactly equivalent to the whole batch: Keras
# averages per-replica means, which equal the global mean only when every
# replica counts the same number of labelled pixels. tf.distribute rewrites
# the input graph, which re-derives the seeds of random tf.data ops, so the
# comparison also fixes the data order (no shuffle, no flip).
EQUIVALENT = [
    "epochs=1",
    "dropout_rate=0",
    "freeze_bn=true",
    "seed=3",
    "min_scale=1.0",
    "max_scale=1.0",
    "shuffle_buffer=1",
    "flip=false",
]

_MIRRORED = """
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from keras_deeplab.training.fit import train
from keras_deeplab.training.strategies import make_run
from tests.training.tiny import tiny_config
results = {"replicas": make_run("mirrored").strategy.num_replicas_in_sync}
for strategy in ("default", "mirrored"):
    config = tiny_config(f"strategy={strategy}", *sys.argv[2:])
    history = train(config, f"{sys.argv[1]}/{strategy}", verbose=0)
    results[strategy] = history.history["loss"][0]
print("RESULT " + json.dumps(results))
"""


def _env(**extra):
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT), **extra}


@pytest.mark.slow
def test_mirrored_two_cpus_matches_one_device(tmp_path):
    run = subprocess.run(
        [sys.executable, "-c", _MIRRORED, str(tmp_path), *EQUIVALENT],
        env=_env(),
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    line = next(x for x in run.stdout.splitlines() if x.startswith("RESULT"))
    results = json.loads(line.removeprefix("RESULT "))
    assert results["replicas"] == 2
    assert results["mirrored"] == pytest.approx(results["default"], rel=1e-4)


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def _wait_for_workers(processes, logs, *, timeout):
    """Exit codes once all workers end, or as soon as one fails.

    A worker whose peer died waits on its collective forever, and one that
    failed itself may wait in TensorFlow's shutdown for its peer: a
    non-zero exit or a traceback in a log decides the run (None marks a
    worker still running).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        codes = [process.poll() for process in processes]
        failed = any(code not in (None, 0) for code in codes) or any(
            _TRACEBACK in log.read_text(errors="replace") for log in logs
        )
        if None not in codes or failed:
            return codes
        time.sleep(1)
    return [process.poll() for process in processes]


class _KerasIssue20585Error(Exception):
    """The failure keras-team/keras#20585 causes; any other fails the test."""


@pytest.mark.slow
@pytest.mark.xfail(
    raises=_KerasIssue20585Error,
    strict=True,
    reason="Keras 3 (<= 3.15) model.fit cannot run under "
    "MultiWorkerMirroredStrategy: _maybe_symbolic_build reduces a PerReplica "
    "batch eagerly and fails (keras-team/keras#20585). Strict: this test "
    "starts passing, and so fails here, once Keras fixes it.",
)
def test_multi_worker_on_two_local_processes(tmp_path):
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    settings = [*TINY_TRAIN, *EQUIVALENT, "strategy=multi_worker"]
    processes, logs = [], []
    for index in range(2):
        tf_config = {
            "cluster": {"worker": workers},
            "task": {"type": "worker", "index": index},
        }
        logs.append(tmp_path / f"worker{index}.err")
        with open(logs[-1], "w") as log:  # a full pipe would block it
            processes.append(
                subprocess.Popen(
                    train_command(tmp_path / f"worker{index}", settings),
                    env=_env(TF_CONFIG=json.dumps(tf_config)),
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                )
            )
    try:
        codes = _wait_for_workers(processes, logs, timeout=_WORKER_TIMEOUT_S)
    finally:
        for process in processes:
            process.kill()
    errors = "".join(log.read_text(errors="replace") for log in logs)
    if codes != [0, 0] and "a value (PerReplica:" in errors:
        raise _KerasIssue20585Error(errors[-3000:])
    assert codes == [0, 0], errors[-3000:]
    chief, other = tmp_path / "worker0", tmp_path / "worker1"
    assert (chief / "best.keras").is_file()
    assert (chief / "history.csv").is_file()
    # Only the chief writes: the other worker leaves its work dir empty.
    assert not other.exists() or not any(other.iterdir())
