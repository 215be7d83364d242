"""Evaluation scores, accumulated batch by batch (never all predictions in
memory): one confusion matrix, and boundary IoU counts per class.

From the confusion matrix: per-class IoU, accuracy (recall), precision and
Dice/F1; mIoU, mDice, pixel accuracy, mean class accuracy and
frequency-weighted IoU. A class absent from both labels and predictions has
no defined IoU or Dice: it is NaN and left out of the means (as
MMSegmentation's IoUMetric does).

Boundary IoU (Cheng et al., CVPR 2021) scores only the band of each class's
region within d pixels of its contour, d = 2% of the image diagonal by
default: per class, |G_d ∩ P_d| / |G_d ∪ P_d| with G_d = G minus G eroded by
d (chessboard distance, the image border counting as contour, as the
authors' `mask_to_boundary`), summed over the images before the ratio.
Pixels labelled 255 (and batch padding) belong to neither G nor P.
"""

import numpy as np

from keras_deeplab.labels import IGNORE_INDEX

BOUNDARY_FRACTION = 0.02  # d as a fraction of the image diagonal


class ConfusionMatrix:
    """counts[t, p]: labelled pixels of true class t predicted as p."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.counts = np.zeros((num_classes, num_classes), np.int64)

    def add(self, masks, predictions):
        masks = np.asarray(masks).reshape(-1).astype(np.int64)
        predictions = np.asarray(predictions).reshape(-1).astype(np.int64)
        keep = (masks != IGNORE_INDEX) & (masks < self.num_classes)
        pairs = masks[keep] * self.num_classes + predictions[keep]
        self.counts += np.bincount(
            pairs, minlength=self.num_classes**2
        ).reshape(self.num_classes, self.num_classes)


def _ratio(numerator, denominator):
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / denominator, np.nan)


def confusion_scores(counts) -> dict:
    """Per-class and mean scores of a confusion matrix (NaN: undefined)."""
    counts = np.asarray(counts, np.float64)
    true_positive = np.diag(counts)
    labelled = counts.sum(axis=1)
    predicted = counts.sum(axis=0)
    union = labelled + predicted - true_positive
    iou = _ratio(true_positive, union)
    dice = _ratio(2 * true_positive, labelled + predicted)
    accuracy = _ratio(true_positive, labelled)
    total = counts.sum()
    frequency = labelled / total if total else np.zeros_like(labelled)
    return {
        "per_class_iou": iou,
        "per_class_dice": dice,
        "per_class_accuracy": accuracy,
        "per_class_precision": _ratio(true_positive, predicted),
        "pixels": labelled.astype(np.int64),
        "mean_iou": _nanmean(iou),
        "mean_dice": _nanmean(dice),
        "pixel_accuracy": float(true_positive.sum() / total)
        if total
        else float("nan"),
        "mean_class_accuracy": _nanmean(accuracy),
        "frequency_weighted_iou": float(
            np.sum(frequency[labelled > 0] * iou[labelled > 0])
        ),
    }


def _nanmean(values) -> float:
    values = np.asarray(values, np.float64)
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else float("nan")


def _eroded(region, distance):
    """`region` eroded by a (2d+1)^2 square: a pixel stays when every pixel
    within chessboard distance d is in the region (outside the image is
    not)."""
    height, width = region.shape
    padded = np.pad(region.astype(np.int32), distance + 1)
    table = padded.cumsum(0).cumsum(1)
    size = 2 * distance + 1
    window = (
        table[size:, size:]
        - table[:-size, size:]
        - table[size:, :-size]
        + table[:-size, :-size]
    )
    return window[:height, :width] == size * size


def boundary_band(region, distance):
    """The pixels of `region` within `distance` of its contour."""
    return region & ~_eroded(region, distance)


def boundary_distance(height, width, fraction=BOUNDARY_FRACTION) -> int:
    """d in pixels: `fraction` of the image diagonal, at least 1."""
    return max(1, round(fraction * np.hypot(height, width)))


class BoundaryIoU:
    """Per-class boundary IoU counts, summed over images."""

    def __init__(self, num_classes: int, fraction=BOUNDARY_FRACTION):
        self.num_classes = num_classes
        self.fraction = fraction
        self.intersection = np.zeros(num_classes, np.int64)
        self.union = np.zeros(num_classes, np.int64)

    def add(self, masks, predictions):
        """One batch: masks and predicted class ids (B, H, W)."""
        for mask, predicted in zip(
            np.asarray(masks), np.asarray(predictions), strict=True
        ):
            self._add_image(mask, predicted)

    def _add_image(self, mask, predicted):
        labelled = mask != IGNORE_INDEX
        rows, columns = np.nonzero(labelled)
        if rows.size == 0:
            return
        # The image's own extent inside a padded batch sets d.
        distance = boundary_distance(
            rows.max() - rows.min() + 1,
            columns.max() - columns.min() + 1,
            self.fraction,
        )
        for index in np.union1d(mask[labelled], predicted[labelled]):
            if index >= self.num_classes:
                continue
            truth = boundary_band(mask == index, distance)
            guess = boundary_band((predicted == index) & labelled, distance)
            self.intersection[index] += np.count_nonzero(truth & guess)
            self.union[index] += np.count_nonzero(truth | guess)

    def scores(self) -> dict:
        per_class = _ratio(self.intersection, self.union)
        return {
            "per_class_boundary_iou": per_class,
            "mean_boundary_iou": _nanmean(per_class),
        }
