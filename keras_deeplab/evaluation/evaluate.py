"""Evaluation over a dataset: the scores of `training.scores` per class and
as means, printed as a table."""

import numpy as np

from keras_deeplab.evaluation.scores import (
    BOUNDARY_FRACTION,
    BoundaryIoU,
    ConfusionMatrix,
    confusion_scores,
)
from keras_deeplab.inference.tiling import batch_class_ids
from keras_deeplab.models.deeplab import class_names
from keras_deeplab.models.derived import inference_model
from keras_deeplab.utils.errors import UserInputError
from keras_deeplab.utils.progress import Progress

# Per-class scores of the results, in table order: (key, column title).
PER_CLASS_COLUMNS = (
    ("per_class_iou", "IoU"),
    ("per_class_accuracy", "acc"),
    ("per_class_precision", "prec"),
    ("per_class_dice", "Dice/F1"),
    ("per_class_boundary_iou", "bIoU"),
)
MEANS = (
    ("mean_iou", "mIoU"),
    ("mean_dice", "mDice"),
    ("pixel_accuracy", "pixel accuracy"),
    ("mean_class_accuracy", "mean class accuracy"),
    ("frequency_weighted_iou", "fwIoU"),
    ("mean_boundary_iou", "boundary IoU"),
)


def _json_ready(value):
    """NaN (an undefined score) as None; arrays as lists."""
    if isinstance(value, np.ndarray):
        return [_json_ready(item) for item in value.tolist()]
    if isinstance(value, list):
        return [_json_ready(item) for item in value]
    if isinstance(value, float) and np.isnan(value):
        return None
    return value


def evaluate_model(
    model,
    dataset,
    *,
    num_classes,
    scales=(1.0,),
    flip=False,
    steps=None,
    boundary_fraction=BOUNDARY_FRACTION,
    tiling=None,
):
    """Scores a model over a batched dataset (`training.scores`).

    Every image is scored at its own size (the pipeline pads a batch to its
    largest image with the ignore label, which no score counts). Only the
    confusion matrix and the boundary counts are kept between batches.

    Args:
        model: segmentation model.
        dataset: iterable of (images, masks) batches; masks use 255 = ignore.
        num_classes: int.
        scales: tuple of floats. Defaults to (1.0,) (single scale).
        flip: bool. Defaults to False.
        steps: int or None. Batches in `dataset`, for the progress bar.
        boundary_fraction: float. Boundary IoU's band width d as a fraction
            of the image diagonal (2% by default, as Cheng et al.).
        tiling: None, or a `tiling.Tiling`: sliding-window inference.

    Returns:
        Dict of JSON-ready values: the means of `MEANS` (floats), the
        per-class lists of `PER_CLASS_COLUMNS` (None where a class is absent
        from labels and predictions), "pixels" (labelled pixels per class),
        "confusion_matrix" (rows: true class), "class_names" and
        "boundary_fraction".
    """
    names = class_names(model)
    model = inference_model(model)
    if model.output_shape[-1] != num_classes:
        raise UserInputError(
            f"the model predicts {model.output_shape[-1]} classes but "
            f"num_classes={num_classes}; evaluate with the config the model "
            "was trained with."
        )
    confusion = ConfusionMatrix(num_classes)
    boundaries = BoundaryIoU(num_classes, boundary_fraction)
    progress = Progress(steps, unit="batch", verb="evaluated")
    step = 0
    for step, (images, masks) in enumerate(dataset, start=1):
        predictions = batch_class_ids(
            model, images, scales=scales, flip=flip, tiling=tiling
        )
        masks = np.asarray(masks)
        confusion.add(masks, predictions)
        boundaries.add(masks, predictions)
        progress.update(step)
    if step == 0:
        raise UserInputError(
            "the evaluation dataset is empty; check the validation split "
            "(val_split, val_list or the data folder)."
        )
    progress.finish(step)
    scores = {**confusion_scores(confusion.counts), **boundaries.scores()}
    scores["confusion_matrix"] = confusion.counts
    scores["class_names"] = list(names)
    scores["boundary_fraction"] = boundary_fraction
    return {key: _json_ready(value) for key, value in scores.items()}


def _score(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def format_results(results) -> str:
    """The evaluation as text: the means, then one line per class with its
    scores and labelled pixels ("-": undefined, the class is absent)."""
    means = ", ".join(f"{title} {_score(results[key])}" for key, title in MEANS)
    names = results["class_names"]
    width = max(12, *(len(name) for name in names))
    header = f"  {'class':<{width}}" + "".join(
        f" {title:>7}" for _, title in PER_CLASS_COLUMNS
    )
    rows = [
        f"  {name:<{width}}"
        + "".join(
            f" {_score(results[key][index]):>7}" for key, _ in PER_CLASS_COLUMNS
        )
        + f" {results['pixels'][index]:>12,}"
        for index, name in enumerate(names)
    ]
    return "\n".join([means, header + f" {'pixels':>12}", *rows])
