"""Evaluation scores against hand counts and brute-force references."""

import numpy as np
import pytest

from keras_deeplab.evaluation.evaluate import format_results
from keras_deeplab.evaluation.scores import (
    BoundaryIoU,
    ConfusionMatrix,
    boundary_band,
    boundary_distance,
    confusion_scores,
)

# 4 classes; class 3 is absent from both labels and predictions.
MASK = np.array(
    [
        [0, 0, 1, 1],
        [0, 0, 1, 1],
        [2, 2, 255, 1],
    ]
)
PREDICTED = np.array(
    [
        [0, 1, 1, 1],
        [0, 0, 1, 2],
        [2, 0, 3, 1],  # the 3 sits on an ignored pixel: it never counts
    ]
)


def test_scores_of_a_hand_counted_confusion_matrix():
    matrix = ConfusionMatrix(4)
    matrix.add(MASK, PREDICTED)
    # true 0: 4 px -> 3 right, 1 as 1; true 1: 5 px -> 4 right, 1 as 2;
    # true 2: 2 px -> 1 right, 1 as 0.
    np.testing.assert_array_equal(
        matrix.counts,
        [[3, 1, 0, 0], [0, 4, 1, 0], [1, 0, 1, 0], [0, 0, 0, 0]],
    )
    scores = confusion_scores(matrix.counts)
    iou = [3 / 5, 4 / 6, 1 / 3, np.nan]
    dice = [6 / 8, 8 / 10, 2 / 4, np.nan]
    np.testing.assert_allclose(scores["per_class_iou"], iou)
    np.testing.assert_allclose(scores["per_class_dice"], dice)
    np.testing.assert_allclose(
        scores["per_class_accuracy"], [3 / 4, 4 / 5, 1 / 2, np.nan]
    )
    np.testing.assert_allclose(
        scores["per_class_precision"], [3 / 4, 4 / 5, 1 / 2, np.nan]
    )
    # absent class 3 is left out of every mean
    assert scores["mean_iou"] == pytest.approx(np.mean(iou[:3]))
    assert scores["mean_dice"] == pytest.approx(np.mean(dice[:3]))
    assert scores["pixel_accuracy"] == pytest.approx(8 / 11)
    assert scores["mean_class_accuracy"] == pytest.approx(
        np.mean([3 / 4, 4 / 5, 1 / 2])
    )
    assert scores["frequency_weighted_iou"] == pytest.approx(
        (4 * 3 / 5 + 5 * 4 / 6 + 2 * 1 / 3) / 11
    )
    np.testing.assert_array_equal(scores["pixels"], [4, 5, 2, 0])


def test_a_class_predicted_but_never_labelled_scores_zero_not_nan():
    matrix = ConfusionMatrix(3)
    matrix.add(np.array([[0, 0]]), np.array([[0, 2]]))
    scores = confusion_scores(matrix.counts)
    np.testing.assert_allclose(scores["per_class_iou"], [0.5, np.nan, 0.0])
    assert scores["mean_iou"] == pytest.approx(0.25)


def test_streaming_equals_one_pass():
    rng = np.random.default_rng(0)
    masks = rng.integers(0, 4, (6, 20, 30))
    masks[rng.random(masks.shape) < 0.1] = 255
    predicted = np.where(rng.random(masks.shape) < 0.7, masks % 255, 1)
    whole, parts = ConfusionMatrix(4), ConfusionMatrix(4)
    whole.add(masks, predicted)
    boundary_whole, boundary_parts = BoundaryIoU(4), BoundaryIoU(4)
    boundary_whole.add(masks, predicted)
    for start in range(0, 6, 2):
        parts.add(masks[start : start + 2], predicted[start : start + 2])
        boundary_parts.add(
            masks[start : start + 2], predicted[start : start + 2]
        )
    np.testing.assert_array_equal(whole.counts, parts.counts)
    np.testing.assert_array_equal(
        boundary_whole.intersection, boundary_parts.intersection
    )
    np.testing.assert_array_equal(boundary_whole.union, boundary_parts.union)


def _reference_band(region, distance):
    """Pixels of `region` with a pixel not in it (or off the image) within
    chessboard distance `distance`."""
    height, width = region.shape
    band = np.zeros_like(region)
    for row, column in zip(*np.nonzero(region), strict=True):
        top, bottom = row - distance, row + distance
        left, right = column - distance, column + distance
        inside = top >= 0 and left >= 0 and bottom < height and right < width
        band[row, column] = not (
            inside and region[top : bottom + 1, left : right + 1].all()
        )
    return band


@pytest.mark.parametrize("distance", [1, 2, 4])
def test_boundary_band_matches_brute_force(distance):
    rng = np.random.default_rng(distance)
    region = np.zeros((23, 31), bool)
    region[3:19, 5:27] = True
    region[rng.random(region.shape) < 0.05] = False  # holes
    region[0:4, 0:6] = True  # touching the image border
    np.testing.assert_array_equal(
        boundary_band(region, distance), _reference_band(region, distance)
    )


def test_boundary_iou_of_a_shifted_square():
    mask = np.zeros((1, 50, 50), int)
    mask[0, 10:30, 10:30] = 1
    shifted = np.zeros_like(mask)
    shifted[0, 12:32, 10:30] = 1
    scores = BoundaryIoU(2)
    scores.add(mask, shifted)
    distance = boundary_distance(50, 50)  # 2% of a 70.7 px diagonal -> 1
    assert distance == 1
    expected = []
    for index in (0, 1):
        truth = _reference_band(mask[0] == index, distance)
        guess = _reference_band(shifted[0] == index, distance)
        expected.append((truth & guess).sum() / (truth | guess).sum())
    result = scores.scores()
    np.testing.assert_allclose(result["per_class_boundary_iou"], expected)
    # the region IoU of the square is 0.82; its boundary IoU is much lower
    assert expected[1] < 0.5
    perfect = BoundaryIoU(2)
    perfect.add(mask, mask)
    assert perfect.scores()["mean_boundary_iou"] == 1.0


def test_batch_padding_changes_no_boundary_count():
    """A batch pads a small image with 255: d follows the image's own size,
    and predictions on the padding count nowhere."""
    image = np.zeros((1, 30, 20), int)
    image[0, 5:15, 5:15] = 1
    predicted = image.copy()
    predicted[0, 14:18, 5:15] = 1
    alone = BoundaryIoU(2)
    alone.add(image, predicted)
    mask = np.full((1, 64, 64), 255)
    mask[:, :30, :20] = image
    padded_prediction = np.ones_like(mask)
    padded_prediction[:, :30, :20] = predicted
    padded = BoundaryIoU(2)
    padded.add(mask, padded_prediction)
    np.testing.assert_array_equal(padded.union, alone.union)
    np.testing.assert_array_equal(padded.intersection, alone.intersection)


def test_format_results_prints_means_and_one_row_per_class():
    matrix = ConfusionMatrix(4)
    matrix.add(MASK, PREDICTED)
    results = {
        key: (value.tolist() if hasattr(value, "tolist") else value)
        for key, value in confusion_scores(matrix.counts).items()
    }
    results = {
        key: [None if v != v else v for v in value]
        if isinstance(value, list)
        else value
        for key, value in results.items()
    }
    results.update(
        per_class_boundary_iou=[1.0, 0.5, None, None],
        mean_boundary_iou=0.75,
        class_names=["background", "road", "sign", "tree"],
    )
    text = format_results(results)
    lines = text.splitlines()
    assert lines[0].startswith("mIoU 0.533, mDice 0.683, pixel accuracy 0.727")
    assert lines[-1].split() == ["tree", "-", "-", "-", "-", "-", "0"]
