"""Evaluation: mIoU, pixel accuracy and per-class IoU over a dataset."""

import keras
import numpy as np

from keras_deeplab.derived import inference_model
from keras_deeplab.errors import UserInputError
from keras_deeplab.inference import predict_probabilities
from keras_deeplab.models import class_names
from keras_deeplab.training.metrics import (
    PixelAccuracy,
    mean_iou,
    per_class_iou,
)


def evaluate_model(
    model, dataset, *, num_classes, scales=(1.0,), flip=False, steps=None
):
    """mIoU, pixel accuracy and per-class IoU over a batched dataset.

    Every image is scored at its own size (the pipeline pads a batch to its
    largest image with the ignore label, which no metric counts).

    Args:
        model: segmentation model.
        dataset: iterable of (images, masks) batches; masks use 255 = ignore.
        num_classes: int.
        scales: tuple of floats. Defaults to (1.0,) (single scale).
        flip: bool. Defaults to False.
        steps: int or None. Batches in `dataset`, for the progress bar.

    Returns:
        Dict with "mean_iou", "pixel_accuracy" (floats), "per_class_iou"
        (list, None for classes never seen nor predicted) and
        "class_names".
    """
    names = class_names(model)
    model = inference_model(model)
    if model.output_shape[-1] != num_classes:
        raise UserInputError(
            f"the model predicts {model.output_shape[-1]} classes but "
            f"num_classes={num_classes}; evaluate with the config the model "
            "was trained with."
        )
    iou, accuracy = mean_iou(num_classes), PixelAccuracy(num_classes)
    progress = keras.utils.Progbar(steps, unit_name="batch")
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
        "class_names": list(names),
    }


def format_class_iou(per_class_iou, names=None) -> str:
    """One line per class: name (or id) and IoU, "-" where it is undefined."""
    names = names or [str(index) for index in range(len(per_class_iou))]
    width = max(12, *(len(name) for name in names))
    return "\n".join(
        f"  {name:<{width}} {'-' if iou is None else f'{iou:.3f}'}"
        for name, iou in zip(names, per_class_iou, strict=True)
    )


def format_results(results) -> str:
    """The evaluation as text: the means, then one line per class."""
    return (
        f"mIoU {results['mean_iou']:.4f}, pixel accuracy "
        f"{results['pixel_accuracy']:.4f}\nper-class IoU:\n"
        + format_class_iou(results["per_class_iou"], results["class_names"])
    )
