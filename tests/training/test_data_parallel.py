"""Training on the JAX backend with keras.distribution.DataParallel: the
same losses as TensorFlow, two local devices equal to one, and two processes
on 127.0.0.1 that train in step, survive a killed peer and resume."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_deeplab.loading import model_from_config
from keras_deeplab.training import strategies
from keras_deeplab.training.fit import check_batch_splits, train
from keras_deeplab.utils.errors import UserInputError
from tests.training.test_distribute import EQUIVALENT, _free_ports
from tests.training.tiny import TINY_TRAIN, tiny_config, train_command

REPO_ROOT = Path(__file__).resolve().parents[2]
# 5 validation images in batches of 4: the last batch is short and must be
# padded to split across replicas.
SETTINGS = [*EQUIVALENT, "synthetic_val_size=5"]
# XLA on CPU and TensorFlow's oneDNN kernels sum in different orders.
JAX_VS_TF_RTOL = 1e-4
_PROCESS_TIMEOUT_S = 240
_DEAD_PEER_NOTICE_S = 60

_ONE_PROCESS = """
import json, sys
from keras_deeplab.training.fit import check_batch_splits, train
from tests.training.tiny import tiny_config
import jax
results = {"devices": jax.device_count()}
for strategy in ("default", "data_parallel"):
    config = tiny_config(f"strategy={strategy}", *sys.argv[2:])
    history = train(config, f"{sys.argv[1]}/{strategy}", verbose=0)
    results[strategy] = history.history
print("RESULT " + json.dumps(results))
"""

# The CLI in one process of a cluster; prints a digest of the final weights
# so the test can compare processes that do not write them.
_CLUSTER_PROCESS = """
import hashlib, sys
import numpy as np
from keras_deeplab import cli
from keras_deeplab.training import fit
built = []
def build(config, _build=fit.model_from_config):
    built.append(_build(config))
    return built[-1]
fit.model_from_config = build
status = cli.main(sys.argv[1:])
if status == 0:
    digest = hashlib.sha256()
    for weight in built[0].get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    print("WEIGHTS " + digest.hexdigest(), flush=True)
sys.exit(status)
"""


def _env(**extra):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("XLA_FLAGS", None)
    return {**env, **extra}


def _result(stdout, mark):
    line = next(x for x in stdout.splitlines() if x.startswith(mark))
    return line.removeprefix(mark).strip()


@pytest.mark.slow
def test_jax_matches_tensorflow_and_two_devices_match_one(tmp_path):
    initial = tmp_path / "initial.keras"
    model_from_config(tiny_config(*SETTINGS)).save(initial)
    settings = [*SETTINGS, f"init_weights={initial}"]
    log = tmp_path / "jax.err"
    with open(log, "w") as errors:  # a full pipe would block the process
        jax_process = subprocess.Popen(
            [sys.executable, "-c", _ONE_PROCESS, str(tmp_path), *settings],
            env=_env(
                KERAS_BACKEND="jax",
                XLA_FLAGS="--xla_force_host_platform_device_count=2",
            ),
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            cwd=REPO_ROOT,
        )
    # TensorFlow trains here while JAX trains in its process.
    tensorflow = train(
        tiny_config(*settings), tmp_path / "tensorflow", verbose=0
    ).history
    stdout, _ = jax_process.communicate(timeout=_PROCESS_TIMEOUT_S)
    assert jax_process.returncode == 0, log.read_text()[-3000:]
    jax_runs = json.loads(_result(stdout, "RESULT"))
    assert jax_runs["devices"] == 2

    one, two = jax_runs["default"], jax_runs["data_parallel"]
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-4)
    # The padded last validation batch holds only ignored pixels: the
    # confusion-matrix metrics are exact.
    for metric in ("val_mean_iou", "val_pixel_accuracy", "mean_iou"):
        assert two[metric] == pytest.approx(one[metric], rel=1e-4)
    for metric in ("loss", "val_loss", "val_mean_iou"):
        assert one[metric] == pytest.approx(
            tensorflow[metric], rel=JAX_VS_TF_RTOL
        ), metric


def _cluster_command(work_dir, *extra):
    command = train_command(
        work_dir, [*TINY_TRAIN, *SETTINGS, "strategy=data_parallel"], *extra
    )
    # `python -m keras_deeplab` becomes the instrumented script above.
    return [sys.executable, "-c", _CLUSTER_PROCESS, *command[3:]]


class _ClusterProcess:
    """One process of a two-process run; its output goes to files (a full
    pipe would block it)."""

    def __init__(self, command, *, rank, coordinator, log_dir):
        self.out = log_dir / f"rank{rank}.out"
        self.err = log_dir / f"rank{rank}.err"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.process = subprocess.Popen(
                command,
                env=_env(
                    KERAS_BACKEND="jax",
                    KERAS_DISTRIBUTION_JOB_ADDRESSES=coordinator,
                    KERAS_DISTRIBUTION_NUM_PROCESSES="2",
                    KERAS_DISTRIBUTION_PROCESS_ID=str(rank),
                ),
                stdout=out,
                stderr=err,
                cwd=REPO_ROOT,
            )

    def stderr(self):
        return self.err.read_text()

    def finish(self, timeout):
        """(exit code, stdout, stderr); killed and None after `timeout`."""
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
        self.process.kill()
        return code, self.out.read_text(), self.stderr()


def _start_cluster(work_dirs, log_dir, *extra):
    log_dir.mkdir(exist_ok=True)
    coordinator = f"127.0.0.1:{_free_ports(1)[0]}"
    return [
        _ClusterProcess(
            _cluster_command(work_dir, *extra),
            rank=rank,
            coordinator=coordinator,
            log_dir=log_dir,
        )
        for rank, work_dir in enumerate(work_dirs)
    ]


def _files(folder):
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.mark.slow
def test_two_processes_survive_a_killed_peer_then_resume(tmp_path):
    chief_dir, worker_dir = tmp_path / "chief", tmp_path / "worker"
    chief, worker = _start_cluster([chief_dir, worker_dir], tmp_path / "run")
    try:
        backup_state = chief_dir / "backup" / "state.json"
        deadline = time.monotonic() + _PROCESS_TIMEOUT_S
        while not backup_state.exists() and time.monotonic() < deadline:
            assert chief.process.poll() is None, chief.stderr()[-3000:]
            time.sleep(0.2)
        assert backup_state.exists(), "the chief wrote no backup"
        # The worker trains in step but owns nothing: its work dir stays
        # empty (no config, history, logs, backups or models).
        assert not worker_dir.exists() or not any(worker_dir.iterdir())
        worker.process.send_signal(signal.SIGKILL)
        worker.process.wait()
        killed_at = time.monotonic()
        code, _, stderr = chief.finish(_DEAD_PEER_NOTICE_S)
        noticed_after = time.monotonic() - killed_at
    finally:
        chief.process.kill()
        worker.process.kill()
    assert code not in (0, None), stderr[-3000:]
    assert noticed_after < _DEAD_PEER_NOTICE_S
    # JAX's coordination service stops the survivor once the dead process
    # misses its heartbeats; if the survivor's collective fails first, the
    # CLI says so in one line. Either way it names the cause.
    assert (
        "another task died" in stderr
        or "process 0 of 2 stopped" in stderr.strip().splitlines()[-1]
    ), stderr[-3000:]

    # The worker's host gets a copy of the backup (a shared filesystem in
    # a real cluster); both processes continue from it.
    shutil.copytree(chief_dir / "backup", worker_dir / "backup")
    worker_before = _files(worker_dir)
    processes = _start_cluster(
        [chief_dir, worker_dir], tmp_path / "resume", "--resume"
    )
    results = [process.finish(_PROCESS_TIMEOUT_S) for process in processes]
    for code, _, stderr in results:
        assert code == 0, stderr[-3000:]
    assert "resuming from the backup" in results[1][1]
    digests = [_result(stdout, "WEIGHTS") for _, stdout, _ in results]
    assert digests[0] == digests[1]
    assert (chief_dir / "final.keras").is_file()
    assert (chief_dir / "best.keras").is_file()
    assert not (chief_dir / "backup").exists()  # the run completed
    assert _files(worker_dir) == worker_before
    final = keras.saving.load_model(chief_dir / "final.keras")
    digest = hashlib.sha256()
    for weight in final.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    assert digest.hexdigest() == digests[0]


def test_a_failed_collective_becomes_a_one_line_error():
    import jax

    class TwoProcesses(keras.distribution.DataParallel):
        num_processes = 2
        data_shard_id = 1

    run = strategies.KerasDistributionRun(
        TwoProcesses(devices=keras.distribution.list_devices())
    )
    with pytest.raises(strategies.DistributedRunError) as info:
        with run.failures_reported():
            raise jax.errors.JaxRuntimeError("Gloo all-reduce failed")
    assert "process 1 of 2 stopped" in str(info.value)
    assert "Gloo all-reduce failed" in str(info.value)
    assert "--resume" in str(info.value)


def test_data_parallel_needs_the_jax_backend():
    with pytest.raises(UserInputError, match="KERAS_BACKEND=jax"):
        strategies.make_run("data_parallel")


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        (
            {strategies.NUM_PROCESSES: "2"},
            "KERAS_DISTRIBUTION_JOB_ADDRESSES, KERAS_DISTRIBUTION_PROCESS_ID "
            "not",
        ),
        (
            {
                strategies.JOB_ADDRESSES: "10.0.0.1:1234",
                strategies.NUM_PROCESSES: "two",
                strategies.PROCESS_ID: "0",
            },
            "'two' is not an integer >= 1",
        ),
        (
            {
                strategies.JOB_ADDRESSES: "10.0.0.1:1234",
                strategies.NUM_PROCESSES: "2",
                strategies.PROCESS_ID: "2",
            },
            "out of range",
        ),
        (
            {
                strategies.JOB_ADDRESSES: "10.0.0.1",
                strategies.NUM_PROCESSES: "2",
                strategies.PROCESS_ID: "1",
            },
            "host:port",
        ),
    ],
)
def test_bad_cluster_variables_are_named(monkeypatch, variables, expected):
    for name in (
        strategies.JOB_ADDRESSES,
        strategies.NUM_PROCESSES,
        strategies.PROCESS_ID,
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(UserInputError, match=expected):
        strategies.cluster_from_environment()


def test_a_bad_rank_is_named_before_anything_runs(monkeypatch):
    # `train` reads the rank first, to decide who may clear the work dir.
    monkeypatch.setenv(strategies.PROCESS_ID, "two")
    with pytest.raises(UserInputError, match="'two' is not an integer"):
        strategies.cluster_process_id()
    monkeypatch.delenv(strategies.PROCESS_ID)
    assert strategies.cluster_process_id() == 0


def test_a_global_batch_must_split_across_replicas():
    with pytest.raises(UserInputError, match="multiple of 3"):
        check_batch_splits(tiny_config("batch_size=4"), 3)
