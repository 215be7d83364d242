"""DeepLabConfig: one flat, frozen configuration with presets and overrides.

`fields` declares it (the model part is `spec.ModelSpec`), `presets` holds
the named starting points, `files` reads YAML/JSON files and `--set`
overrides. Keras-free: the CLI reads it without loading TensorFlow.
"""

from keras_deeplab.config.fields import (
    DATASETS,
    EVAL_SCALE_RANGE,
    OPTIMIZERS,
    STRATEGIES,
    TRAINING_PRECISIONS,
    DeepLabConfig,
)
from keras_deeplab.config.files import load_config, parse_overrides, save_config
from keras_deeplab.config.presets import PRESETS

__all__ = [
    "DATASETS",
    "EVAL_SCALE_RANGE",
    "OPTIMIZERS",
    "PRESETS",
    "STRATEGIES",
    "TRAINING_PRECISIONS",
    "DeepLabConfig",
    "load_config",
    "parse_overrides",
    "save_config",
]
