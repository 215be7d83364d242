"""Poly learning-rate schedule with optional linear warm-up."""

import keras
from keras import ops

from keras_deeplab.utils.errors import UserInputError


@keras.saving.register_keras_serializable(package="keras_deeplab")
class PolyDecay(keras.optimizers.schedules.LearningRateSchedule):
    """lr = base * (1 - step / decay_steps) ** power, times a linear warm-up.

    The schedule of the DeepLabV3 paper (power 0.9). During the first
    `warmup_steps` steps the rate ramps linearly from base / warmup_steps.

    Args:
        initial_learning_rate: float. Base rate at step 0.
        decay_steps: int. Step at which the rate reaches 0.
        power: float. Defaults to 0.9.
        warmup_steps: int. Defaults to 0 (no warm-up).
    """

    def __init__(
        self, initial_learning_rate, decay_steps, power=0.9, warmup_steps=0
    ):
        if decay_steps < 1:
            raise UserInputError(
                f"decay_steps={decay_steps!r} must be >= 1; it is the total "
                "number of training steps."
            )
        self.initial_learning_rate = initial_learning_rate
        self.decay_steps = decay_steps
        self.power = power
        self.warmup_steps = warmup_steps

    def __call__(self, step):
        step = ops.cast(step, "float32")
        progress = ops.minimum(step, self.decay_steps) / self.decay_steps
        # XLA (JAX, or TF with jit_compile) divides by multiplying with the
        # reciprocal: at the last step `progress` is a hair above 1, and a
        # negative base to the power 0.9 is NaN, which NaNs every weight.
        remaining = ops.maximum(1.0 - progress, 0.0)
        rate = self.initial_learning_rate * remaining**self.power
        if self.warmup_steps:
            rate *= ops.minimum(1.0, (step + 1.0) / self.warmup_steps)
        return rate

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "decay_steps": self.decay_steps,
            "power": self.power,
            "warmup_steps": self.warmup_steps,
        }
