"""Build, compile and `model.fit` DeepLabV3 from a DeepLabConfig."""

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import keras
import tensorflow as tf

from keras_deeplab.atomic import atomic_file
from keras_deeplab.config import save_config
from keras_deeplab.data.pipeline import make_dataset, num_examples
from keras_deeplab.data.validate import require_valid
from keras_deeplab.errors import UserInputError
from keras_deeplab.models import AUX_OUTPUT, MAIN_OUTPUT, model_from_config
from keras_deeplab.training.callbacks import BestCheckpoint, TrainingBackup
from keras_deeplab.training.losses import compile_losses
from keras_deeplab.training.metrics import segmentation_metrics
from keras_deeplab.training.schedules import PolyDecay

BEST_MODEL = "best.keras"
FINAL_MODEL = "final.keras"
CONFIG_FILE = "config.json"
HISTORY_FILE = "history.csv"
# Weight decay applies to conv kernels only (paper recipe), not to biases or
# BatchNormalization scale/offset.
NO_DECAY_VARIABLES = ["bias", "gamma", "beta"]


def make_optimizer(config, total_steps: int):
    """SGD+momentum or AdamW on a poly schedule; decay on kernels only."""
    schedule = PolyDecay(
        config.learning_rate,
        decay_steps=total_steps,
        power=config.poly_power,
        warmup_steps=config.warmup_steps,
    )
    if config.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(
            schedule,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
        )
    else:
        optimizer = keras.optimizers.AdamW(
            schedule, weight_decay=config.weight_decay
        )
    optimizer.exclude_from_weight_decay(var_names=NO_DECAY_VARIABLES)
    return optimizer


def compile_model(model, config, total_steps: int):
    """Compiles with the ignore-255 loss, mIoU and pixel accuracy."""
    loss, loss_weights = compile_losses(
        aux_head=config.aux_head, aux_loss_weight=config.aux_loss_weight
    )
    metrics = segmentation_metrics(config.num_classes)
    model.compile(
        optimizer=make_optimizer(config, total_steps),
        loss=loss,
        loss_weights=loss_weights,
        metrics={MAIN_OUTPUT: metrics, AUX_OUTPUT: []}
        if config.aux_head
        else metrics,
        jit_compile=config.jit_compile,
    )
    return model


def monitor_name(config) -> str:
    """The logged name of validation mIoU (prefixed for multi-output)."""
    return (
        f"val_{MAIN_OUTPUT}_mean_iou" if config.aux_head else ("val_mean_iou")
    )


def make_strategy(name: str) -> tf.distribute.Strategy:
    """default, mirrored (all local devices) or multi_worker (TF_CONFIG)."""
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise UserInputError(
                "strategy='multi_worker' needs the TF_CONFIG environment "
                "variable describing the cluster; see README, Distribution."
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief(strategy) -> bool:
    """True where checkpoints may be written (worker 0 / chief / single)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    return resolver.task_type == "chief" or (
        resolver.task_type == "worker" and resolver.task_id == 0
    )


def steps_per_epoch(config) -> int:
    if config.steps_per_epoch:
        return config.steps_per_epoch
    return max(num_examples(config, config.train_split) // config.batch_size, 1)


def fit_dataset(config, split, *, training, first_epoch=0):
    """`make_dataset` with targets shaped like the model's outputs."""
    dataset = make_dataset(
        config, split, training=training, first_epoch=first_epoch
    )
    if not config.aux_head:
        return dataset
    # A dict-output model needs a dict of targets: one mask for both heads.
    return dataset.map(
        lambda images, masks: (images, {MAIN_OUTPUT: masks, AUX_OUTPUT: masks})
    )


def train(config, work_dir, *, resume: bool = False, verbose="auto"):
    """Trains with `model.fit`; checkpoints and logs go to `work_dir`.

    Writes config.json, best.keras (best val mIoU), final.keras,
    history.csv, TensorBoard logs and a backup folder used by `resume`.

    Args:
        config: DeepLabConfig (validated).
        work_dir: str or Path. Output folder.
        resume: bool. Continue an interrupted run from its last backup.
        verbose: passed to `model.fit`.

    Returns:
        The `keras.callbacks.History` of this call.

    Raises:
        ValueError: if `work_dir` holds an unfinished run and `resume` is
            False, or `resume` is True and there is nothing to resume.
    """
    work_dir = Path(work_dir)
    backup = TrainingBackup(
        work_dir / "backup", every_steps=config.backup_every_steps
    )
    _check_resume(backup, work_dir=work_dir, resume=resume)
    # First: MultiWorkerMirroredStrategy must exist before any TF op runs.
    strategy = make_strategy(config.strategy)
    chief = is_chief(strategy)
    if config.validate_data:
        require_valid(config)
    steps = steps_per_epoch(config)
    with _dtype_policy(config.precision):
        keras.utils.set_random_seed(config.seed)
        with strategy.scope():
            model = compile_model(
                model_from_config(config), config, steps * config.epochs
            )
        initial_epoch = backup.restore(model) if resume else 0
        if resume:
            print(
                f"resuming from the backup of epoch {initial_epoch + 1}, "
                f"step {backup.state()['step']}",
                flush=True,
            )
        if chief:
            save_config(config, work_dir / CONFIG_FILE)
        backup.is_writer = chief
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
            validation_data=fit_dataset(
                config, config.val_split, training=False
            ),
            callbacks=_callbacks(
                config, work_dir, backup=backup, chief=chief, resume=resume
            ),
            shuffle=False,  # the tf.data pipeline shuffles, seeded
            verbose=verbose,
        )
        if chief:
            with atomic_file(work_dir / FINAL_MODEL) as temporary:
                model.save(temporary)
            # The run is complete: a later `train` here starts afresh.
            shutil.rmtree(backup.directory, ignore_errors=True)
    return history


def _check_resume(backup, *, work_dir, resume):
    if backup.exists() and not resume:
        raise UserInputError(
            f"work dir {str(work_dir)!r} holds an interrupted run; pass "
            "--resume to continue it or choose another --work-dir."
        )
    if resume and not backup.exists():
        raise UserInputError(
            f"--resume given but {str(work_dir / 'backup')!r} has no backup "
            "to resume from; drop --resume to start a new run."
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


def _callbacks(config, work_dir, *, backup, chief, resume):
    # Non-chief workers log to a private folder: only the chief owns work_dir.
    log_dir = work_dir if chief else Path(tempfile.mkdtemp(prefix="worker-"))
    return [
        backup,
        BestCheckpoint(
            work_dir / BEST_MODEL, monitor=monitor_name(config), is_writer=chief
        ),
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.CSVLogger(log_dir / HISTORY_FILE, append=resume),
        keras.callbacks.TensorBoard(log_dir / "logs"),
    ]
