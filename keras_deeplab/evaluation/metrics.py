"""Confusion-matrix metrics that ignore the 255 label: mIoU, pixel accuracy."""

import keras
import numpy as np
from keras import ops

from keras_deeplab.labels import IGNORE_INDEX


def mean_iou(num_classes: int, name: str = "mean_iou"):
    """Mean IoU over classes from logits, ignoring label 255.

    Classes absent from both the labels and the predictions of the whole
    evaluation are left out of the mean, as in the VOC benchmark.
    """
    return keras.metrics.MeanIoU(
        num_classes=num_classes,
        ignore_class=IGNORE_INDEX,
        sparse_y_pred=False,
        name=name,
    )


@keras.saving.register_keras_serializable(package="keras_deeplab")
class PixelAccuracy(keras.metrics.MeanIoU):
    """Fraction of labelled (non-255) pixels whose argmax is right."""

    def __init__(self, num_classes, name="pixel_accuracy", **kwargs):
        kwargs.setdefault("ignore_class", IGNORE_INDEX)
        kwargs.setdefault("sparse_y_pred", False)
        super().__init__(num_classes=num_classes, name=name, **kwargs)

    def result(self):
        total = ops.sum(self.total_cm)
        return ops.divide_no_nan(ops.trace(self.total_cm), total)


def segmentation_metrics(num_classes: int):
    """The metrics reported during `fit`/`evaluate`."""
    return [mean_iou(num_classes), PixelAccuracy(num_classes)]


def per_class_iou(metric) -> np.ndarray:
    """IoU of each class from a confusion-matrix metric; NaN where absent."""
    matrix = np.asarray(ops.convert_to_numpy(metric.total_cm), dtype=float)
    true_positives = np.diag(matrix)
    union = matrix.sum(0) + matrix.sum(1) - true_positives
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, true_positives / union, np.nan)
