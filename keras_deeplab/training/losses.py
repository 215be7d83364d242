"""Pixel-wise softmax cross-entropy that ignores the 255 label, and the one
place that knows how the aux head's outputs are trained."""

import dataclasses

import keras

from keras_deeplab.labels import IGNORE_INDEX
from keras_deeplab.spec import AUX_OUTPUT, MAIN_OUTPUT
from keras_deeplab.training.metrics import segmentation_metrics


def segmentation_loss():
    """Sparse categorical cross-entropy from logits, mean over labelled pixels.

    Pixels labelled 255 contribute neither to the sum nor to the count.
    """
    return keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, ignore_class=IGNORE_INDEX, name="segmentation_loss"
    )


@dataclasses.dataclass(frozen=True)
class Objective:
    """What `model.compile` and `model.fit` need for one output layout.

    Attributes:
        loss: loss or {output: loss}.
        loss_weights: None or {output: weight}.
        metrics: list or {output: list}.
        monitor: str. Logged name of validation mIoU.
        with_aux: bool. The model returns {"logits", "aux_logits"}.
    """

    loss: object
    loss_weights: dict | None
    metrics: object
    monitor: str
    with_aux: bool

    def targets(self, images, masks):
        """`dataset.map` function: one mask for every output."""
        if not self.with_aux:
            return images, masks
        return images, {MAIN_OUTPUT: masks, AUX_OUTPUT: masks}


def segmentation_objective(num_classes: int, *, aux_loss_weight=None):
    """Loss, metrics and monitored name, with or without the aux head.

    Args:
        num_classes: int.
        aux_loss_weight: float or None. None: the model has no aux head;
            otherwise its loss is added with this weight (0.4 in the PSPNet
            and torchvision recipes).
    """
    metrics = segmentation_metrics(num_classes)
    if aux_loss_weight is None:
        return Objective(
            loss=segmentation_loss(),
            loss_weights=None,
            metrics=metrics,
            monitor="val_mean_iou",
            with_aux=False,
        )
    return Objective(
        loss={
            MAIN_OUTPUT: segmentation_loss(),
            AUX_OUTPUT: segmentation_loss(),
        },
        loss_weights={MAIN_OUTPUT: 1.0, AUX_OUTPUT: aux_loss_weight},
        metrics={MAIN_OUTPUT: metrics, AUX_OUTPUT: []},
        monitor=f"val_{MAIN_OUTPUT}_mean_iou",
        with_aux=True,
    )
