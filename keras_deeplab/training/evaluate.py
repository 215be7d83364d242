"""Evaluation with optional multi-scale and flipped inference."""

import keras
import numpy as np
from keras import ops

from keras_deeplab.layers import resize_bilinear
from keras_deeplab.models import main_logits
from keras_deeplab.training.metrics import (
    PixelAccuracy,
    mean_iou,
    per_class_iou,
)


def predict_probabilities(model, images, *, scales=(1.0,), flip=False):
    """Class probabilities averaged over scales and flips, at input size.

    Each scale resizes the batch bilinearly, runs the model, resizes the
    logits back and averages the softmax (as the DeepLab reference does).

    Args:
        model: DeepLabV3 model (single or dict output).
        images: array (batch, h, w, 3), RGB in [0, 255].
        scales: tuple of floats. Input scales, e.g. (0.5, 0.75, 1.0, 1.25).
        flip: bool. Also run left-right flipped inputs.

    Returns:
        float32 numpy array (batch, h, w, num_classes).
    """
    images = ops.convert_to_tensor(images, dtype="float32")
    height, width = images.shape[1], images.shape[2]
    total, count = 0.0, 0
    for scale in scales:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        scaled = (
            images
            if size == (height, width)
            else resize_bilinear(images, *size)
        )
        for flipped in (False, True) if flip else (False,):
            batch = ops.flip(scaled, axis=2) if flipped else scaled
            logits = main_logits(model.predict_on_batch(batch))
            logits = ops.convert_to_tensor(logits, dtype="float32")
            if flipped:
                logits = ops.flip(logits, axis=2)
            if size != (height, width):
                logits = resize_bilinear(logits, height, width)
            total = total + ops.softmax(logits, axis=-1)
            count += 1
    return np.asarray(ops.convert_to_numpy(total / count))


def evaluate_model(model, dataset, *, num_classes, scales=(1.0,), flip=False):
    """mIoU, pixel accuracy and per-class IoU over a batched dataset.

    Args:
        model: DeepLabV3 model.
        dataset: iterable of (images, masks) batches; masks use 255 = ignore.
        num_classes: int.
        scales: tuple of floats. Defaults to (1.0,) (single scale).
        flip: bool. Defaults to False.

    Returns:
        Dict with "mean_iou", "pixel_accuracy" (floats) and
        "per_class_iou" (list, None for classes never seen nor predicted).
    """
    iou, accuracy = mean_iou(num_classes), PixelAccuracy(num_classes)
    progress = keras.utils.Progbar(None, unit_name="batch")
    for step, (images, masks) in enumerate(dataset, start=1):
        probabilities = predict_probabilities(
            model, images, scales=scales, flip=flip
        )
        iou.update_state(masks, probabilities)
        accuracy.update_state(masks, probabilities)
        progress.update(step)
    progress.update(step, finalize=True)
    return {
        "mean_iou": float(iou.result()),
        "pixel_accuracy": float(accuracy.result()),
        "per_class_iou": [
            None if np.isnan(value) else float(value)
            for value in per_class_iou(iou)
        ],
    }
