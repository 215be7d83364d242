"""The smallest real training configuration, shared by training tests."""

import sys

from keras_deeplab.config import load_config

TINY_TRAIN = [
    "synthetic_train_size=16",
    "synthetic_val_size=4",
    "synthetic_image_size=48",
    "crop_size=48",
    "batch_size=4",
    "backbone_width=4",
    "head_filters=8",
    "epochs=2",
    "backup_every_steps=2",
    "atrous_rates=[1, 2, 3]",
    "shuffle_buffer=16",
]


def tiny_config(*overrides):
    return load_config("demo", [*TINY_TRAIN, *overrides])


def train_command(work_dir, settings, *extra):
    """`keras-deeplab train demo` in a subprocess, with --set for each."""
    sets = [arg for item in settings for arg in ("--set", item)]
    return [
        sys.executable,
        "-m",
        "keras_deeplab",
        "train",
        "--config",
        "demo",
        "--work-dir",
        str(work_dir),
        *sets,
        *extra,
    ]
