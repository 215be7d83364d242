"""What a new user meets in the first hour: quiet, honest output; files that
load with plain Keras; a work dir that a failed start does not lock; the
command line as fast as its help text."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from keras_deeplab.cli import main
from keras_deeplab.training.callbacks import TrainingBackup
from keras_deeplab.training.workdir import (
    BEST_RECORD,
    CONFIG_FILE,
    HISTORY_FILE,
    prepare_work_dir,
    read_history,
)
from tests.helpers import assert_loads_with_plain_keras
from tests.training.tiny import TINY_TRAIN, train_command

REPO_ROOT = Path(__file__).resolve().parents[1]
_ESCAPES = re.compile(r"\x1b\[|\r")


def _environment(**extra):
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **extra}
    environment.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as a user's shell has it
    return environment


def test_help_is_instant_and_silent():
    """`--help` loads neither Keras nor TensorFlow and writes no stderr."""
    probe = (
        "import sys\n"
        "from keras_deeplab.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = [m for m in ('keras', 'tensorflow', 'jax', 'torch')"
        " if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe],
        env=_environment(),
        capture_output=True,
        text=True,
        check=True,
    )
    assert "HEAVY []" in completed.stdout
    assert "train" in completed.stdout and completed.stderr == ""


@pytest.fixture(scope="module")
def piped_run(tmp_path_factory):
    """`keras-deeplab train` as a user runs it with its output in a file,
    on a loss of our own classes (they must load back with plain Keras)."""
    work_dir = tmp_path_factory.mktemp("piped")
    settings = [*TINY_TRAIN, "epochs=3", "loss=ce+lovasz"]
    completed = subprocess.run(
        train_command(work_dir, [*settings, "class_weights=auto"]),
        env=_environment(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return work_dir, completed


@pytest.mark.slow
def test_a_piped_training_log_is_one_line_per_epoch(piped_run):
    work_dir, completed = piped_run
    lines = completed.stdout.splitlines()
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in epochs] == [
        "epoch 1/3",
        "epoch 2/3",
        "epoch 3/3",
    ]
    assert "val_mean_iou" in epochs[0]
    (weights,) = [line for line in lines if line.startswith("class weights")]
    assert "(median frequency): background " in weights
    assert not _ESCAPES.search(completed.stdout)
    assert len(lines) < 20, completed.stdout
    # TensorFlow's C++ start-up lines never reach the terminal.
    assert completed.stderr == "", completed.stderr


@pytest.mark.slow
def test_train_ends_with_a_summary_and_counts_epochs_from_one(piped_run):
    work_dir, completed = piped_run
    best = json.loads((work_dir / BEST_RECORD).read_text())
    history = read_history(work_dir / HISTORY_FILE)
    assert history["epoch"] == [1.0, 2.0, 3.0]
    best_row = history["epoch"].index(best["epoch"])
    assert history["val_mean_iou"][best_row] == pytest.approx(best["value"])
    summary = completed.stdout[completed.stdout.index("training finished") :]
    assert f"at epoch {best['epoch']}" in summary
    assert "best.keras" in summary and "final.keras" in summary


@pytest.mark.slow
def test_every_file_train_writes_loads_with_plain_keras(piped_run):
    work_dir, _ = piped_run
    assert_loads_with_plain_keras(
        work_dir / "best.keras", work_dir / "final.keras"
    )


def test_a_run_that_never_finished_a_step_does_not_lock_its_work_dir(
    tmp_path,
):
    (tmp_path / CONFIG_FILE).write_text("{}")
    (tmp_path / HISTORY_FILE).write_text("epoch,loss\n")
    backup = TrainingBackup(tmp_path / "backup", every_steps=5)
    prepare_work_dir(tmp_path, backup=backup, resume=False, overwrite=False)
    assert not list(tmp_path.iterdir())  # cleared, not refused
    (tmp_path / HISTORY_FILE).write_text("epoch,loss\n1,0.5\n")
    with pytest.raises(ValueError, match="holds a previous run"):
        prepare_work_dir(tmp_path, backup=backup, resume=False, overwrite=False)


def test_settings_line_shows_what_applies_to_the_dataset(tmp_path, capsys):
    from tests.data.fixtures import make_folder_dataset

    make_folder_dataset(tmp_path)
    main(
        [
            "validate-data",
            "--config",
            "demo",
            "--set",
            "dataset=folder",
            "--set",
            f"data_dir={tmp_path}",
            "--set",
            "num_classes=3",
        ]
    )
    settings = capsys.readouterr().out.splitlines()[0]
    assert settings.startswith("settings: ") and "dataset='folder'" in settings
    assert "synthetic" not in settings


@pytest.mark.slow
def test_predict_takes_scales_and_flip(tmp_path, capsys):
    from PIL import Image

    from keras_deeplab import DeepLabV3

    model_path = tmp_path / "tiny.keras"
    DeepLabV3(3, backbone_width=4, head_filters=8).save(model_path)
    image = np.random.default_rng(0).integers(0, 255, (33, 47, 3), np.uint8)
    Image.fromarray(image).save(tmp_path / "a.png")
    argv = ["predict", str(tmp_path / "a.png"), "--model", str(model_path)]
    argv += ["--out", str(tmp_path / "out"), "--scales", "0.75,1.25", "--flip"]
    assert main(argv) == 0
    mask = np.asarray(Image.open(tmp_path / "out" / "a_mask.png"))
    assert mask.shape == (33, 47)
    # A second run refuses to overwrite what the first wrote...
    assert main(argv) == 2
    assert "already exist" in capsys.readouterr().err
    # ...unless asked.
    assert main([*argv, "--overwrite"]) == 0


@pytest.mark.slow
def test_a_second_live_run_is_refused_and_a_dead_runs_lock_taken_over(
    tmp_path,
):
    """Two `train` runs on one work dir both ran and truncated each other's
    logs. The second is refused in one line naming the first's process;
    once the first is gone (SIGKILL: nothing could release anything), a
    new run takes the lock over with a note."""
    import signal
    import time

    from keras_deeplab.training.workdir import LOCK_FILE

    work_dir = tmp_path / "run"
    long_run = [*TINY_TRAIN, "epochs=500"]
    first = subprocess.Popen(
        train_command(work_dir, long_run),
        env=_environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    lock = work_dir / LOCK_FILE
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (
        lock.is_file() and lock.read_text().startswith("pid")
    ):
        time.sleep(0.2)
    second = subprocess.run(
        train_command(work_dir, TINY_TRAIN),
        env=_environment(),
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert second.returncode == 2, second.stderr[-2000:]
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, second.stderr
    assert f"in use by another training run (pid {first.pid} on" in lines[0]
    third = subprocess.run(
        train_command(work_dir, [*TINY_TRAIN, "epochs=1"], "--overwrite"),
        env=_environment(),
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert third.returncode == 0, third.stderr[-2000:]
    note = "took over the lock of a run that ended without releasing it"
    assert f"{note} (pid {first.pid} on" in third.stdout


@pytest.mark.slow
def test_every_command_writes_plain_lines_into_a_file(tmp_path):
    """evaluate, predict, export and verify-export with stdout in a file (a
    pipe, a CI log): no escape codes or carriage-return progress bars (a
    1,500-byte bar line, the final bar twice), one line per step."""
    from PIL import Image

    from keras_deeplab import DeepLabV3
    from tests.data.fixtures import make_folder_dataset
    from tests.helpers import TINY

    model = tmp_path / "tiny.keras"
    DeepLabV3(3, **TINY).save(model)
    make_folder_dataset(tmp_path / "data")
    sets = [
        *TINY_TRAIN,
        "dataset=folder",
        "num_classes=3",
        f"data_dir={tmp_path / 'data'}",
        "crop_size=32",
        "batch_size=2",
        "export_size=32",
    ]
    config = [arg for item in sets for arg in ("--set", item)]
    config = ["--config", "demo", *config]
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(tmp_path / "p.png")
    commands = {
        "evaluate": ["evaluate", *config, "--model", str(model)],
        "predict": [
            "predict",
            str(tmp_path / "p.png"),
            "--model",
            str(model),
            "--out",
            str(tmp_path / "masks"),
        ],
        "export": [
            "export",
            "--model",
            str(model),
            "--format",
            "onnx",
            "--out",
            str(tmp_path / "exported"),
        ],
        "verify-export": [
            "verify-export",
            str(tmp_path / "exported"),
            *config,
            "--model",
            str(model),
            "--count",
            "2",
        ],
    }
    for name, argv in commands.items():
        log = tmp_path / f"{name}.log"
        with open(log, "w") as handle:
            completed = subprocess.run(
                [sys.executable, "-m", "keras_deeplab", *argv],
                env=_environment(),
                stdout=handle,
                stderr=subprocess.PIPE,
                text=True,
                check=False,
                timeout=600,
            )
        text = log.read_text()
        assert completed.returncode == 0, (name, completed.stderr[-2000:])
        assert not _ESCAPES.search(text), (name, text[-2000:])
        # Keras' bar was one 1,500-byte line; the settings line is the
        # longest now.
        assert max(len(line) for line in text.splitlines()) < 800, name
    assert (
        "wrote 1 mask and 1 overlay to"
        in (tmp_path / "predict.log").read_text()
    )
    assert "writing onnx ..." in (tmp_path / "export.log").read_text()
