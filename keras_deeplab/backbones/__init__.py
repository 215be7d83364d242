"""Dilated backbones for DeepLabV3."""

from keras_deeplab.backbones.imagenet import (
    load_imagenet_weights,
    transfer_weights,
)
from keras_deeplab.backbones.resnet import dilated_resnet, stage_plan

__all__ = [
    "dilated_resnet",
    "load_imagenet_weights",
    "stage_plan",
    "transfer_weights",
]
