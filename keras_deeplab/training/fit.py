"""`train`: a config's model, data and recipe through `model.fit`, with
checkpoints, backups and logs in a work dir (`training.workdir`)."""

import contextlib
import dataclasses
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import keras

from keras_deeplab.config import save_config
from keras_deeplab.config.fields import AUTO_CLASS_WEIGHTS
from keras_deeplab.data.configured import DataSplits
from keras_deeplab.data.validate import require_valid
from keras_deeplab.loading import model_from_config
from keras_deeplab.training.callbacks import (
    BACKUP_DIR,
    BestCheckpoint,
    EpochLines,
    HistoryLog,
    TrainingBackup,
    weights_bytes,
)
from keras_deeplab.training.class_weights import split_class_weights
from keras_deeplab.training.recipe import (
    compile_from_config,
    objective_from_config,
)
from keras_deeplab.training.strategies import (
    cluster_process_id,
    make_run,
    process_local,
)
from keras_deeplab.training.workdir import (
    BEST_MODEL,
    CONFIG_FILE,
    FINAL_MODEL,
    HISTORY_FILE,
    LOGS_DIR,
    clear_unstarted_run,
    prepare_work_dir,
    run_summary,
    work_dir_lock,
)
from keras_deeplab.utils.atomic import atomic_file, require_free_space
from keras_deeplab.utils.errors import UserInputError


class TrainingDivergedError(UserInputError):
    """The loss became NaN or infinite; nothing was published."""


def check_batch_splits(config, replicas):
    if config.batch_size % replicas:
        raise UserInputError(
            f"batch_size={config.batch_size} does not split across the "
            f"{replicas} replicas of strategy={config.strategy!r}; expected "
            f"a multiple of {replicas} (batch_size is the global batch)."
        )


def fit_dataset(splits, split, *, objective, training, **kwargs):
    """A split's batches with targets shaped like the model's outputs.

    Args:
        splits: DataSplits of the run's config.
        split: str. Split name.
        objective: the run's `Objective` (its targets follow the outputs).
        training: bool. Shuffle and augment.
        **kwargs: passed to `DataSplits.dataset` (first_epoch,
            full_batches, ...).
    """
    dataset = splits.dataset(split, training=training, **kwargs)
    return dataset.map(objective.targets)


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
    history.csv, TensorBoard logs and a backup folder used by `resume`, and
    prints a summary at the end.

    Args:
        config: DeepLabConfig.
        work_dir: str or Path. Output folder.
        resume: bool. Continue an interrupted run from its last backup.
        overwrite: bool. Delete a previous run's files in `work_dir` first.
        verbose: "auto" (a progress bar on a terminal, one line per epoch
            otherwise), 0, 1 or 2 as in `model.fit`.

    Returns:
        The `keras.callbacks.History` of this call.

    Raises:
        UserInputError: if `work_dir` holds another run (unfinished without
            `resume`, finished without `overwrite`), `resume` finds no
            usable backup, or the data is invalid.
        TrainingDivergedError: if the loss became NaN; the last backup is kept
            and no model is written.
    """
    start = time.perf_counter()
    work_dir = Path(work_dir)
    owner = cluster_process_id() == 0
    with work_dir_lock(work_dir, owner=owner):
        run = _prepare(config, work_dir, resume=resume, overwrite=overwrite)
        try:
            return _train(run, resume=resume, verbose=verbose, start=start)
        finally:
            if owner:
                clear_unstarted_run(work_dir, backup=run.backup)


def _train(run, *, resume, verbose, start):
    config = run.config
    with (
        _dtype_policy(config.precision),
        run.engine.run_scope(),
        run.engine.failures_reported(),
    ):
        keras.utils.set_random_seed(config.seed)
        model, objective = _compiled_model(run)
        initial_epoch = _restored_epoch(run, model) if resume else 0
        if run.engine.is_chief:
            save_config(config, run.work_dir / CONFIG_FILE)
        history = _fit(
            run,
            model,
            objective,
            initial_epoch=initial_epoch,
            resume=resume,
            verbose=verbose,
        )
        _check_finite(history, backup=run.backup)
        if run.engine.is_chief:
            _publish(run, model, monitor=objective.monitor, start=start)
    return history


@dataclasses.dataclass
class _Run:
    """What one `train` call works with, prepared before any model."""

    config: object
    work_dir: Path
    backup: TrainingBackup
    engine: object  # training.strategies' run engine
    splits: DataSplits
    class_weights: object  # resolved `class_weights: auto`, or None
    steps: int  # per epoch


def _prepare(config, work_dir, *, resume, overwrite) -> _Run:
    """The work dir checked, the engine started, the data read once."""
    backup = TrainingBackup(
        work_dir / BACKUP_DIR, every_steps=config.backup_every_steps
    )
    # In a multi-process run every process checks the (shared) work dir,
    # before any of them writes to it; only process 0 changes it.
    prepare_work_dir(
        work_dir,
        backup=backup,
        resume=resume,
        overwrite=overwrite,
        owner=cluster_process_id() == 0,
    )
    # First: MultiWorkerMirroredStrategy must exist before any TF op runs,
    # and JAX processes must join before any JAX computation.
    engine = make_run(config.strategy)
    check_batch_splits(config, engine.replicas)
    splits = DataSplits(config)
    if config.validate_data:
        require_valid(config, splits)
    steps = config.steps_per_epoch or max(
        splits.size(config.train_split) // config.batch_size, 1
    )
    backup.is_writer = engine.is_chief
    return _Run(
        config=config,
        work_dir=work_dir,
        backup=backup,
        engine=engine,
        splits=splits,
        class_weights=_class_weights(config, splits),
        steps=steps,
    )


def _compiled_model(run):
    """(model, objective), built in the engine's scope: the metrics'
    variables too must be the engine's (replicated)."""
    config = run.config
    with run.engine.build_scope():
        objective = objective_from_config(
            config, class_weights=run.class_weights
        )
        model = compile_from_config(
            model_from_config(config),
            config,
            run.steps * config.epochs,
            objective=objective,
        )
    return model, objective


def _restored_epoch(run, model) -> int:
    initial_epoch = run.backup.restore(model, epochs=run.config.epochs)
    print(
        f"resuming from the backup of epoch {initial_epoch + 1}, "
        f"step {run.backup.state()['step']}",
        flush=True,
    )
    return initial_epoch


def _fit(run, model, objective, *, initial_epoch, resume, verbose):
    config = run.config
    return model.fit(
        fit_dataset(
            run.splits,
            config.train_split,
            objective=objective,
            training=True,
            first_epoch=initial_epoch,
        ).repeat(),
        epochs=config.epochs,
        initial_epoch=initial_epoch,
        steps_per_epoch=run.steps,
        # Every replica needs an equal share of every batch, the last one
        # too: pad it with fully ignored examples when replicated.
        validation_data=fit_dataset(
            run.splits,
            config.val_split,
            objective=objective,
            training=False,
            full_batches=run.engine.replicas > 1,
        ),
        callbacks=[
            keras.callbacks.TerminateOnNaN(),
            *_callbacks(
                config,
                run.work_dir,
                backup=run.backup,
                chief=run.engine.is_chief,
                resume=resume,
                monitor=objective.monitor,
                verbose=verbose,
            ),
        ],
        shuffle=False,  # the tf.data pipeline shuffles, seeded
        verbose=_fit_verbosity(verbose),
    )


def _publish(run, model, *, monitor, start):
    """final.keras written; the backup removed (the run is complete: a
    later `train` here starts afresh); the summary printed."""
    require_free_space(run.work_dir, weights_bytes(model))
    with (
        atomic_file(run.work_dir / FINAL_MODEL) as temporary,
        process_local(),
    ):
        model.save(temporary)
    shutil.rmtree(run.backup.directory, ignore_errors=True)
    print(
        run_summary(
            run.work_dir,
            monitor=monitor,
            seconds=time.perf_counter() - start,
        ),
        flush=True,
    )


def _class_weights(config, splits):
    """`class_weights: auto` resolved from the training masks (printed);
    None otherwise (the config's own list, if any, is used as it is)."""
    if config.class_weights != AUTO_CLASS_WEIGHTS:
        return None
    weights = split_class_weights(splits, config.train_split)
    listed = ", ".join(
        f"{name} {weight:.2f}"
        for name, weight in zip(config.names, weights, strict=True)
    )
    print(f"class weights (median frequency): {listed}", flush=True)
    return weights


def _fit_verbosity(verbose):
    """A progress bar on a terminal; elsewhere `EpochLines` logs instead
    (Keras's bar writes hundreds of escape-coded lines into a file)."""
    if verbose == "auto":
        return 1 if sys.stdout.isatty() else 0
    return verbose


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


@contextlib.contextmanager
def _dtype_policy(name):
    """Sets the global dtype policy for one run, then restores the old one."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _callbacks(config, work_dir, *, backup, chief, resume, monitor, verbose):
    # Non-chief workers log to a private folder: only the chief owns work_dir.
    log_dir = work_dir if chief else Path(tempfile.mkdtemp(prefix="worker-"))
    callbacks = [
        backup,
        BestCheckpoint(work_dir / BEST_MODEL, monitor=monitor, is_writer=chief),
        HistoryLog(log_dir / HISTORY_FILE, append=resume),
        keras.callbacks.TensorBoard(log_dir / LOGS_DIR),
    ]
    if verbose == "auto" and not sys.stdout.isatty() and chief:
        callbacks.append(EpochLines(config.epochs))
    return callbacks
