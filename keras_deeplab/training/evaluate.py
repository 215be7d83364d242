"""Evaluation: mIoU, pixel accuracy and per-class IoU over a dataset."""

import keras
import numpy as np

from keras_deeplab.errors import UserInputError
from keras_deeplab.inference import predict_probabilities
from keras_deeplab.models import inference_model
from keras_deeplab.training.metrics import (
    PixelAccuracy,
    mean_iou,
    per_class_iou,
)


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
    model = inference_model(model)
    if model.output_shape[-1] != num_classes:
        raise UserInputError(
            f"the model predicts {model.output_shape[-1]} classes but "
            f"num_classes={num_classes}; evaluate with the config the model "
            "was trained with."
        )
    iou, accuracy = mean_iou(num_classes), PixelAccuracy(num_classes)
    progress = keras.utils.Progbar(None, unit_name="batch")
    step = 0
    for step, (images, masks) in enumerate(dataset, start=1):
        probabilities = predict_probabilities(
            model, images, scales=scales, flip=flip
        )
        iou.update_state(masks, probabilities)
        accuracy.update_state(masks, probabilities)
        progress.update(step)
    if step == 0:
        raise UserInputError(
            "the evaluation dataset is empty; check the validation split "
            "(val_split, val_list or the data folder)."
        )
    progress.update(step, finalize=True)
    return {
        "mean_iou": float(iou.result()),
        "pixel_accuracy": float(accuracy.result()),
        "per_class_iou": [
            None if np.isnan(value) else float(value)
            for value in per_class_iou(iou)
        ],
    }


def format_class_iou(per_class_iou, names=None) -> str:
    """One line per class: name (or id) and IoU, "-" where it is undefined."""
    names = names or [str(index) for index in range(len(per_class_iou))]
    return "\n".join(
        f"  {name:<12} {'-' if iou is None else f'{iou:.3f}'}"
        for name, iou in zip(names, per_class_iou, strict=True)
    )
