"""Checkpointing callbacks whose files are never left half-written.

Keras's ModelCheckpoint and BackupAndRestore write straight into the final
file, so a kill during the write leaves a corrupt checkpoint. These write to
a temporary sibling and rename it into place.
"""

import json
import math
import time
from pathlib import Path

import keras
import numpy as np

from keras_deeplab.models.files import load_weights
from keras_deeplab.training.strategies import process_local
from keras_deeplab.utils.atomic import (
    atomic_file,
    atomic_write_text,
    require_free_space,
)
from keras_deeplab.utils.errors import UserInputError

BACKUP_DIR = "backup"
BACKUP_WEIGHTS = "latest.weights.h5"
BACKUP_STATE = "state.json"


def _finite_loss(logs) -> bool:
    """False once the loss is NaN/inf: such weights are never written."""
    return math.isfinite((logs or {}).get("loss", 0.0))


def weights_bytes(model) -> int:
    """Bytes of the model's and its optimizer's variables: the size of a
    weights file, give or take its headers."""
    variables = list(model.weights)
    if model.optimizer is not None:
        variables += list(model.optimizer.variables)
    return sum(
        int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in variables
    )


def _as_int(variable):
    # Under tf.distribute the variable is a MirroredVariable, which int()
    # does not accept; convert_to_numpy reads any backend's variable.
    return int(keras.ops.convert_to_numpy(variable))


class BestCheckpoint(keras.callbacks.Callback):
    """Saves the whole model (`.keras`) whenever `monitor` reaches a new max.

    The best value is stored in `<path>.json` beside the model, so a resumed
    run keeps comparing against the best of the interrupted one.

    Args:
        path: Path of the `.keras` file.
        monitor: str. Logged metric to maximise, e.g. "val_mean_iou".
        is_writer: bool. False on non-chief workers, which must not write.
    """

    def __init__(self, path, *, monitor, is_writer=True):
        super().__init__()
        self.path = Path(path)
        self.monitor = monitor
        self.is_writer = is_writer
        self._record = self.path.with_suffix(".json")

    def best(self):
        """The best monitored value so far, -inf before the first save."""
        if not self._record.is_file():
            return -math.inf
        return json.loads(self._record.read_text())["value"]

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not self.is_writer or not _finite_loss(logs):
            return
        if not math.isfinite(value) or value <= self.best():
            return
        require_free_space(self.path, weights_bytes(self.model))
        with atomic_file(self.path) as temporary, process_local():
            self.model.save(temporary)
        atomic_write_text(
            self._record,
            json.dumps(
                {
                    "monitor": self.monitor,
                    "value": float(value),
                    "epoch": epoch + 1,
                }
            ),
        )


class TrainingBackup(keras.callbacks.Callback):
    """Backs up weights and optimizer state every N steps and every epoch.

    `restore` brings a model back to the last backup and returns the epoch to
    resume from; a run killed mid-epoch repeats that epoch from its start
    with the backed-up weights, so at most `every_steps` steps are lost.

    Args:
        directory: Path of the backup folder.
        every_steps: int. Batches between backups.
        is_writer: bool. False on non-chief workers, which must not write.
    """

    def __init__(self, directory, *, every_steps, is_writer=True):
        super().__init__()
        self.directory = Path(directory)
        self.every_steps = every_steps
        self.is_writer = is_writer
        self._epoch = 0

    def exists(self) -> bool:
        return (self.directory / BACKUP_STATE).is_file()

    def state(self) -> dict:
        """The backup's {"epoch", "step", "iterations"}, checked.

        Raises:
            UserInputError: if state.json is unreadable or not a backup state.
        """
        path = self.directory / BACKUP_STATE
        try:
            state = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise UserInputError(
                f"backup state {str(path)!r} is unreadable ({err}); the "
                "backup is damaged: start a new run with --overwrite."
            ) from err
        if not isinstance(state, dict) or not all(
            # bool is an int to Python; `{"epoch": true}` is no epoch.
            type(state.get(key)) is int and state[key] >= 0
            for key in ("epoch", "step")
        ):
            raise UserInputError(
                f"backup state {str(path)!r} holds {state!r}; expected "
                '{"epoch": int, "step": int, ...} written by a training run. '
                "Start a new run with --overwrite."
            )
        return state

    def restore(self, model, *, epochs: int) -> int:
        """Loads the backup into `model` (compiled); returns the next epoch.

        A backup taken mid-epoch restarts that epoch from its first step,
        so the optimizer's step counter goes back to the epoch's start too:
        the poly schedule then ends exactly at the run's last step (counting
        the replayed steps twice overran it).

        Args:
            model: the compiled model of the run being resumed.
            epochs: int. The run's total epochs; a backup past it belongs to
                another run (one at it was killed before final.keras).

        Raises:
            UserInputError: for a damaged backup or one of another run.
        """
        epoch = self.state()["epoch"]
        if epoch > epochs:
            raise UserInputError(
                f"the backup in {str(self.directory)!r} is at epoch {epoch} "
                f"but this run trains {epochs} epochs; it belongs to another "
                "run. Raise --set epochs or start anew with --overwrite."
            )
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        weights = self.directory / BACKUP_WEIGHTS
        try:
            load_weights(model, weights)
        except UserInputError as err:
            raise UserInputError(
                f"the backup in {str(self.directory)!r} cannot be resumed: "
                f"{err} Start a new run with --overwrite."
            ) from err
        state = self.state()
        if model.optimizer is not None and "iterations" in state:
            epoch_start = max(state["iterations"] - state["step"], 0)
            model.optimizer.iterations.assign(epoch_start)
        return epoch

    def _save(self, *, epoch, step, logs):
        if not self.is_writer or not _finite_loss(logs):
            return
        require_free_space(self.directory, weights_bytes(self.model))
        with (
            atomic_file(self.directory / BACKUP_WEIGHTS) as temporary,
            process_local(),
        ):
            self.model.save_weights(temporary)
        # The state is written after the weights it describes, so it never
        # points at weights that are not on disk yet.
        atomic_write_text(
            self.directory / BACKUP_STATE,
            json.dumps(
                {
                    "epoch": epoch,
                    "step": step,
                    "iterations": _as_int(self.model.optimizer.iterations),
                }
            ),
        )

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (batch + 1) % self.every_steps == 0:
            self._save(epoch=self._epoch, step=batch + 1, logs=logs)

    def on_epoch_end(self, epoch, logs=None):
        self._save(epoch=epoch + 1, step=0, logs=logs)


class HistoryLog(keras.callbacks.CSVLogger):
    """`CSVLogger` counting epochs from 1, as `best.json` and the progress
    lines do."""

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch + 1, logs)


class EpochLines(keras.callbacks.Callback):
    """One line per epoch (no progress bar), for logs that are not a
    terminal: a piped or redirected run stays readable.

    Args:
        epochs: int. The run's epoch count.
        print_fn: callable. Where lines go. Defaults to print.
    """

    def __init__(self, epochs, print_fn=print):
        super().__init__()
        self.epochs = epochs
        self.print_fn = print_fn
        self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        values = ", ".join(
            f"{name} {value:.4g}" for name, value in (logs or {}).items()
        )
        seconds = time.perf_counter() - self._start
        self.print_fn(
            f"epoch {epoch + 1}/{self.epochs}: {values} ({seconds:.0f} s)",
            flush=True,
        )
