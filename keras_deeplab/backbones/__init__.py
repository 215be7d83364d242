"""Dilated backbones for DeepLabV3."""

from keras_deeplab.backbones.resnet import (
    dilated_resnet,
    load_imagenet_weights,
    stage_plan,
    transfer_weights,
)

__all__ = [
    "dilated_resnet",
    "load_imagenet_weights",
    "stage_plan",
    "transfer_weights",
]
