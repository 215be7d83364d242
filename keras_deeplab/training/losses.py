"""Pixel-wise softmax cross-entropy that ignores the 255 label."""

import keras

from keras_deeplab.data.sources import IGNORE_INDEX
from keras_deeplab.models import AUX_OUTPUT, MAIN_OUTPUT


def segmentation_loss():
    """Sparse categorical cross-entropy from logits, mean over labelled pixels.

    Pixels labelled 255 contribute neither to the sum nor to the count.
    """
    return keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, ignore_class=IGNORE_INDEX, name="segmentation_loss"
    )


def compile_losses(*, aux_head: bool, aux_loss_weight: float):
    """`(loss, loss_weights)` for `model.compile`, with or without aux head."""
    if not aux_head:
        return segmentation_loss(), None
    return (
        {MAIN_OUTPUT: segmentation_loss(), AUX_OUTPUT: segmentation_loss()},
        {MAIN_OUTPUT: 1.0, AUX_OUTPUT: aux_loss_weight},
    )
