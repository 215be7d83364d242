"""The training recipe: objective, optimizer and compilation of a model.

Everything `keras-deeplab train` compiles a model with, and what the
benchmark's training rows time, so both run the same step.
"""

import keras

from keras_deeplab.config.fields import AUTO_CLASS_WEIGHTS
from keras_deeplab.training.objective import (
    segmentation_loss,
    segmentation_objective,
)
from keras_deeplab.training.schedules import PolyDecay

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
    # Without a tf.distribute strategy Keras creates the optimizer's slots
    # inside the first traced train step, and a tf.function that creates
    # variables is traced twice: built here, the step is traced once (the
    # tiny test model's first fit step: 35 s -> 19 s on 2 cores).
    model.optimizer.build(model.trainable_variables)
    return model


def objective_from_config(config, *, class_weights=None):
    """The config's `Objective`: its `loss`, the aux loss weighted in when
    `aux_head`.

    Args:
        class_weights: the weights `class_weights: auto` resolved to (see
            `training.class_weights`); None takes the config's own list.
    """
    if class_weights is None and config.class_weights != AUTO_CLASS_WEIGHTS:
        class_weights = config.class_weights
    return segmentation_objective(
        config.num_classes,
        aux_loss_weight=config.aux_loss_weight if config.aux_head else None,
        loss=segmentation_loss(
            config.loss,
            term_weights=config.loss_term_weights,
            class_weights=class_weights,
            focal_gamma=config.focal_gamma,
            ohem_threshold=config.ohem_threshold,
            ohem_min_kept=config.ohem_min_kept,
        ),
    )


def compile_from_config(model, config, total_steps: int, *, objective=None):
    """`compile_model` with the config's objective and optimizer.

    Args:
        objective: the run's `Objective` when the caller already built it;
            None builds `objective_from_config(config)`.
    """
    return compile_model(
        model,
        objective=objective or objective_from_config(config),
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
