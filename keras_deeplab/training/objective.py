"""The training loss a config names, and the one place that knows how the
aux head's outputs are trained."""

import dataclasses

from keras_deeplab.config.fields import loss_terms
from keras_deeplab.evaluation.metrics import segmentation_metrics
from keras_deeplab.spec import AUX_OUTPUT, MAIN_OUTPUT
from keras_deeplab.training.losses import (
    LovaszSoftmaxLoss,
    PixelCrossEntropy,
    PixelFocalLoss,
    SoftDiceLoss,
    WeightedLossSum,
)


def segmentation_loss(
    loss="ce",
    *,
    term_weights=None,
    class_weights=None,
    focal_gamma=2.0,
    ohem_threshold=None,
    ohem_min_kept=100_000,
):
    """The loss of a `loss:` setting; pixels labelled 255 count nowhere.

    Args:
        loss: str. "ce", "focal", "dice", "lovasz" or a "+" sum of them.
        term_weights: None (1 each) or one weight per term.
        class_weights: None or one weight per class, for "ce" and "focal".
        focal_gamma: float. Focal loss gamma.
        ohem_threshold: None or a probability: "ce" on the hard pixels only.
        ohem_min_kept: int. OHEM keeps at least this many pixels a batch.
    """
    build = {
        "ce": lambda: PixelCrossEntropy(
            class_weights,
            ohem_threshold=ohem_threshold,
            ohem_min_kept=ohem_min_kept,
        ),
        "focal": lambda: PixelFocalLoss(
            focal_gamma, class_weights=class_weights
        ),
        "dice": SoftDiceLoss,
        "lovasz": LovaszSoftmaxLoss,
    }
    terms = [build[term]() for term in loss_terms(loss)]
    if len(terms) == 1 and term_weights is None:
        return terms[0]
    return WeightedLossSum(terms, term_weights or [1.0] * len(terms))


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


def segmentation_objective(
    num_classes: int, *, aux_loss_weight=None, loss=None
):
    """Loss, metrics and monitored name, with or without the aux head.

    Args:
        num_classes: int.
        aux_loss_weight: float or None. None: the model has no aux head;
            otherwise its loss is added with this weight (0.4 in the PSPNet
            and torchvision recipes).
        loss: a `segmentation_loss(...)`; None is plain cross-entropy.
    """
    metrics = segmentation_metrics(num_classes)
    loss = loss or segmentation_loss()
    if aux_loss_weight is None:
        return Objective(
            loss=loss,
            loss_weights=None,
            metrics=metrics,
            monitor="val_mean_iou",
            with_aux=False,
        )
    return Objective(
        loss={MAIN_OUTPUT: loss, AUX_OUTPUT: loss},
        loss_weights={MAIN_OUTPUT: 1.0, AUX_OUTPUT: aux_loss_weight},
        metrics={MAIN_OUTPUT: metrics, AUX_OUTPUT: []},
        monitor=f"val_{MAIN_OUTPUT}_mean_iou",
        with_aux=True,
    )
