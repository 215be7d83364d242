"""Build, compile and `model.fit` DeepLabV3; `train` runs it from a config."""

import contextlib
import csv
import math
import shutil
import tempfile
from pathlib import Path

import keras

from keras_deeplab.atomic import atomic_file
from keras_deeplab.config import save_config
from keras_deeplab.data.configured import split_dataset, split_size
from keras_deeplab.data.validate import require_valid
from keras_deeplab.errors import UserInputError
from keras_deeplab.loading import model_from_config
from keras_deeplab.training.callbacks import (
    BACKUP_DIR,
    BestCheckpoint,
    TrainingBackup,
)
from keras_deeplab.training.losses import segmentation_objective
from keras_deeplab.training.schedules import PolyDecay
from keras_deeplab.training.strategies import (
    cluster_process_id,
    failures_reported,
    is_chief,
    is_keras_distribution,
    make_strategy,
    process_local,
    run_scope,
)

BEST_MODEL = "best.keras"
FINAL_MODEL = "final.keras"
CONFIG_FILE = "config.json"
HISTORY_FILE = "history.csv"
# What a finished or started run leaves in its work dir.
_RUN_FILES = (BEST_MODEL, "best.json", FINAL_MODEL, HISTORY_FILE, CONFIG_FILE)
# Weight decay applies to conv kernels only (paper recipe), not to biases or
# BatchNormalization scale/offset.
NO_DECAY_VARIABLES = ["bias", "gamma", "beta"]


def make_optimizer(
    *,
    learning_rate: float,
    total_steps: int,
    name: str = "sgd",
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    poly_power: float = 0.9,
    warmup_steps: int = 0,
):
    """SGD+momentum or AdamW on a poly schedule; decay on kernels only.

    Args:
        learning_rate: float. Base rate (paper: 0.007 at batch 16).
        total_steps: int. Steps at which the poly schedule reaches 0.
        name: str. "sgd" or "adamw".
        momentum: float. SGD momentum.
        weight_decay: float. Decoupled decay of conv kernels.
        poly_power: float. Exponent of the poly schedule.
        warmup_steps: int. Linear warm-up steps.
    """
    schedule = PolyDecay(
        learning_rate,
        decay_steps=total_steps,
        power=poly_power,
        warmup_steps=warmup_steps,
    )
    if name == "sgd":
        optimizer = keras.optimizers.SGD(
            schedule, momentum=momentum, weight_decay=weight_decay
        )
    else:
        optimizer = keras.optimizers.AdamW(schedule, weight_decay=weight_decay)
    optimizer.exclude_from_weight_decay(var_names=NO_DECAY_VARIABLES)
    return optimizer


def compile_model(model, *, objective, optimizer, jit_compile=False):
    """Compiles with an `Objective` (ignore-255 loss, mIoU, pixel accuracy).

    `jit_compile` chooses XLA on TensorFlow; JAX always compiles the step
    (uncompiled, it runs op by op and cannot place multi-process arrays).
    """
    if keras.backend.backend() == "jax":
        jit_compile = True
    model.compile(
        optimizer=optimizer,
        loss=objective.loss,
        loss_weights=objective.loss_weights,
        metrics=objective.metrics,
        jit_compile=jit_compile,
    )
    return model


def objective_from_config(config):
    """The config's `Objective`: aux loss weighted in when `aux_head`."""
    return segmentation_objective(
        config.num_classes,
        aux_loss_weight=config.aux_loss_weight if config.aux_head else None,
    )


def compile_from_config(model, config, total_steps: int):
    """`compile_model` with the config's objective and optimizer."""
    return compile_model(
        model,
        objective=objective_from_config(config),
        optimizer=make_optimizer(
            learning_rate=config.learning_rate,
            total_steps=total_steps,
            name=config.optimizer,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            poly_power=config.poly_power,
            warmup_steps=config.warmup_steps,
        ),
        jit_compile=config.jit_compile,
    )


def steps_per_epoch(config) -> int:
    if config.steps_per_epoch:
        return config.steps_per_epoch
    return max(split_size(config, config.train_split) // config.batch_size, 1)


def fit_dataset(config, split, *, training, first_epoch=0, full_batches=False):
    """A split's batches with targets shaped like the model's outputs.

    `full_batches` pads a short last evaluation batch with examples whose
    every pixel is ignored, so it splits evenly across replicas.
    """
    dataset = split_dataset(
        config,
        split,
        training=training,
        first_epoch=first_epoch,
        full_batches=full_batches,
    )
    return dataset.map(objective_from_config(config).targets)


def read_history(history_csv) -> dict:
    """The CSVLogger file of a run as {metric: [value per epoch]}."""
    with open(history_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {key: [float(row[key]) for row in rows] for key in rows[0]}


def _replica_count(strategy) -> int:
    """Replicas a keras.distribution splits each global batch across (1 for
    tf.distribute, which accepts uneven splits)."""
    if is_keras_distribution(strategy):
        return strategy.num_model_replicas
    return 1


def check_batch_splits(config, replicas):
    if config.batch_size % replicas:
        raise UserInputError(
            f"batch_size={config.batch_size} does not split across the "
            f"{replicas} replicas of strategy={config.strategy!r}; expected "
            f"a multiple of {replicas} (batch_size is the global batch)."
        )


class TrainingDivergedError(UserInputError):
    """The loss became NaN or infinite; nothing was published."""


def train(
    config,
    work_dir,
    *,
    resume: bool = False,
    overwrite: bool = False,
    verbose="auto",
):
    """Trains with `model.fit`; checkpoints and logs go to `work_dir`.

    Writes config.json, best.keras (best val mIoU), final.keras,
    history.csv, TensorBoard logs and a backup folder used by `resume`.

    Args:
        config: DeepLabConfig.
        work_dir: str or Path. Output folder.
        resume: bool. Continue an interrupted run from its last backup.
        overwrite: bool. Delete a previous run's files in `work_dir` first.
        verbose: passed to `model.fit`.

    Returns:
        The `keras.callbacks.History` of this call.

    Raises:
        UserInputError: if `work_dir` holds another run (unfinished without
            `resume`, finished without `overwrite`), `resume` finds no
            usable backup, or the data is invalid.
        TrainingDivergedError: if the loss became NaN; the last backup is kept
            and no model is written.
    """
    work_dir = Path(work_dir)
    backup = TrainingBackup(
        work_dir / BACKUP_DIR, every_steps=config.backup_every_steps
    )
    # In a multi-process run every process checks the (shared) work dir,
    # before any of them writes to it; only process 0 changes it.
    _prepare_work_dir(
        work_dir,
        backup=backup,
        resume=resume,
        overwrite=overwrite,
        owner=cluster_process_id() == 0,
    )
    # First: MultiWorkerMirroredStrategy must exist before any TF op runs,
    # and JAX processes must join before any JAX computation.
    strategy = make_strategy(config.strategy)
    chief = is_chief(strategy)
    replicas = _replica_count(strategy)
    check_batch_splits(config, replicas)
    if config.validate_data:
        require_valid(config)
    steps = steps_per_epoch(config)
    with (
        _dtype_policy(config.precision),
        run_scope(strategy),
        failures_reported(strategy),
    ):
        keras.utils.set_random_seed(config.seed)
        with strategy.scope():
            model = compile_from_config(
                model_from_config(config), config, steps * config.epochs
            )
        initial_epoch = 0
        if resume:
            initial_epoch = backup.restore(model, epochs=config.epochs)
            print(
                f"resuming from the backup of epoch {initial_epoch + 1}, "
                f"step {backup.state()['step']}",
                flush=True,
            )
        if chief:
            save_config(config, work_dir / CONFIG_FILE)
        backup.is_writer = chief
        divergence = keras.callbacks.TerminateOnNaN()
        history = model.fit(
            fit_dataset(
                config,
                config.train_split,
                training=True,
                first_epoch=initial_epoch,
            ).repeat(),
            epochs=config.epochs,
            initial_epoch=initial_epoch,
            steps_per_epoch=steps,
            # Every replica needs an equal share of every batch, the last
            # one too: pad it with fully ignored examples when replicated.
            validation_data=fit_dataset(
                config,
                config.val_split,
                training=False,
                full_batches=replicas > 1,
            ),
            callbacks=[
                divergence,
                *_callbacks(
                    config, work_dir, backup=backup, chief=chief, resume=resume
                ),
            ],
            shuffle=False,  # the tf.data pipeline shuffles, seeded
            verbose=verbose,
        )
        _check_finite(history, backup=backup)
        if chief:
            with (
                atomic_file(work_dir / FINAL_MODEL) as temporary,
                process_local(),
            ):
                model.save(temporary)
            # The run is complete: a later `train` here starts afresh.
            shutil.rmtree(backup.directory, ignore_errors=True)
    return history


def _check_finite(history, *, backup):
    losses = history.history.get("loss", [])
    if all(math.isfinite(loss) for loss in losses):
        return
    kept = (
        f"the backup in {str(backup.directory)!r} is kept; `--resume` "
        "continues from it"
        if backup.exists()
        else "no backup was written yet"
    )
    raise TrainingDivergedError(
        f"training diverged: the loss became {losses[-1]} in epoch "
        f"{len(losses)}; no model was written and {kept}. Lower "
        "learning_rate (or use precision=float32) and run again."
    )


def _prepare_work_dir(work_dir, *, backup, resume, overwrite, owner=True):
    """Refuses to mix runs in one work dir; `overwrite` clears the old one
    (when this process is its `owner`)."""
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
    if previous and not overwrite:
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
    if not owner:
        return
    for name in previous:
        path = work_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    shutil.rmtree(work_dir / "logs", ignore_errors=True)


@contextlib.contextmanager
def _dtype_policy(name):
    """Sets the global dtype policy for one run, then restores the old one."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _callbacks(config, work_dir, *, backup, chief, resume):
    # Non-chief workers log to a private folder: only the chief owns work_dir.
    log_dir = work_dir if chief else Path(tempfile.mkdtemp(prefix="worker-"))
    return [
        backup,
        BestCheckpoint(
            work_dir / BEST_MODEL,
            monitor=objective_from_config(config).monitor,
            is_writer=chief,
        ),
        keras.callbacks.CSVLogger(log_dir / HISTORY_FILE, append=resume),
        keras.callbacks.TensorBoard(log_dir / "logs"),
    ]
