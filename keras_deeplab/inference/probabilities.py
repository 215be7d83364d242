"""Class probabilities of a model, with multi-scale and flipped inference.

What `evaluate`, `predict` and the demo share. Channels-last; the model is an
inference model (one logits output, see `derived.inference_model`).
"""

import numpy as np
from keras import ops

from keras_deeplab.layers import resize_bilinear


def predict_probabilities(model, images, *, scales=(1.0,), flip=False):
    """Class probabilities averaged over scales and flips, at input size.

    Each scale resizes the batch bilinearly, runs the model, resizes the
    logits back and averages the softmax (as the DeepLab reference does).

    Args:
        model: inference model returning logits (batch, h, w, classes).
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
            logits = ops.convert_to_tensor(
                model.predict_on_batch(batch), dtype="float32"
            )
            if flipped:
                logits = ops.flip(logits, axis=2)
            if size != (height, width):
                logits = resize_bilinear(logits, height, width)
            total = total + ops.softmax(logits, axis=-1)
            count += 1
    return np.asarray(ops.convert_to_numpy(total / count))


def confidence_map(probabilities) -> np.ndarray:
    """uint8 top-class probability x 255 of (..., classes) probabilities:
    the uncalibrated softmax maximum, for review queues and masking."""
    return np.round(np.max(probabilities, axis=-1) * 255.0).astype(np.uint8)
