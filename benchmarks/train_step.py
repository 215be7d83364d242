"""The training step the benchmarks time: `keras-deeplab train`'s own.

The model comes from a ModelSpec and is compiled by the library's
`compile_from_config` (its loss, mIoU and pixel-accuracy metrics, poly
schedule and weight decay), so the images/s measured here are those of
`train`'s step; only the input pipeline is left out (data is in memory).
"""

import dataclasses

import keras
import numpy as np

from keras_deeplab.config import DeepLabConfig
from keras_deeplab.models.deeplab import build_model
from keras_deeplab.spec import ModelSpec
from keras_deeplab.training.recipe import compile_from_config


def training_model(spec: dict, *, size, precision, jit_compile, steps):
    """A compiled model of `spec` (a ModelSpec dict) on size x size inputs,
    as `train` builds it, under the dtype policy `precision`."""
    spec = ModelSpec.from_dict(spec)
    config = DeepLabConfig(
        **{
            field.name: getattr(spec, field.name)
            for field in dataclasses.fields(spec)
        },
        precision=precision,
        jit_compile=jit_compile,
        crop_size=size,
    )
    keras.config.set_dtype_policy(precision)
    model = build_model(spec, input_shape=(size, size, 3))
    return compile_from_config(model, config, total_steps=steps)


def random_batch(*, batch, size, num_classes, seed=0):
    """(images float32 (b, s, s, 3) in [0, 255], masks int32 (b, s, s))."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (batch, size, size, 3)).astype(np.float32)
    masks = rng.integers(0, num_classes, (batch, size, size)).astype(np.int32)
    return images, masks
