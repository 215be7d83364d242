"""The segmentation losses against NumPy references, with the ignore label;
JAX against TensorFlow; class weights; the `loss:` settings."""

import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_deeplab.config import load_config
from keras_deeplab.labels import IGNORE_INDEX
from keras_deeplab.training.class_weights import ClassPixelCounts
from keras_deeplab.training.losses import (
    LovaszSoftmaxLoss,
    PixelCrossEntropy,
    PixelFocalLoss,
    SoftDiceLoss,
    WeightedLossSum,
    hardest_pixels,
)
from keras_deeplab.training.objective import segmentation_loss
from keras_deeplab.utils.errors import UserInputError

NUM_CLASSES = 4
WEIGHTS = (0.5, 1.0, 2.0, 4.0)


def _batch(seed=0, shape=(2, 5, 7)):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, (*shape, NUM_CLASSES)).astype(np.float32)
    labels = rng.integers(0, NUM_CLASSES - 1, shape).astype(np.int32)
    labels[rng.random(shape) < 0.2] = IGNORE_INDEX  # class 3 never labelled
    return labels, logits


def _softmax(logits):
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


def _valid_pixels(labels, logits):
    keep = labels.reshape(-1) != IGNORE_INDEX
    return labels.reshape(-1)[keep], logits.reshape(-1, NUM_CLASSES)[keep]


def _reference_cross_entropy(labels, logits, weights=None, kept=None):
    labels, logits = _valid_pixels(labels, logits)
    probability = _softmax(logits.astype(np.float64))[
        np.arange(labels.size), labels
    ]
    weight = (
        np.ones(labels.size) if weights is None else np.take(weights, labels)
    )
    if kept is not None:
        weight = weight * kept
    return -(weight * np.log(probability)).sum() / weight.sum()


def _reference_focal(labels, logits, gamma, weights):
    labels, logits = _valid_pixels(labels, logits)
    p = _softmax(logits.astype(np.float64))[np.arange(labels.size), labels]
    weight = np.take(weights, labels)
    return (weight * -((1 - p) ** gamma) * np.log(p)).sum() / weight.sum()


def _reference_dice(labels, logits, smooth=1.0):
    labels, logits = _valid_pixels(labels, logits)
    probabilities = _softmax(logits.astype(np.float64))
    scores = []
    for c in range(NUM_CLASSES):
        truth = labels == c
        overlap = probabilities[truth, c].sum()
        size = probabilities[:, c].sum() + truth.sum()
        scores.append((2 * overlap + smooth) / (size + smooth))
    return 1 - np.mean(scores)


def _reference_lovasz(labels, logits):
    """Berman et al.'s `lovasz_softmax_flat` (classes="present"), looped."""
    labels, logits = _valid_pixels(labels, logits)
    probabilities = _softmax(logits.astype(np.float64))
    losses = []
    for c in range(NUM_CLASSES):
        foreground = (labels == c).astype(np.float64)
        if foreground.sum() == 0:
            continue
        errors = np.abs(foreground - probabilities[:, c])
        order = np.argsort(-errors, kind="stable")
        sorted_foreground = foreground[order]
        total = sorted_foreground.sum()
        intersection = total - np.cumsum(sorted_foreground)
        union = total + np.cumsum(1 - sorted_foreground)
        jaccard = 1 - intersection / union
        jaccard[1:] = jaccard[1:] - jaccard[:-1]
        losses.append(errors[order] @ jaccard)
    return np.mean(losses)


def _reference_kept(labels, logits, threshold, min_kept):
    """MMSegmentation's OHEMPixelSampler, on the labelled pixels."""
    labels, logits = _valid_pixels(labels, logits)
    p = _softmax(logits.astype(np.float64))[np.arange(labels.size), labels]
    limit = max(threshold, np.sort(p)[min(min_kept, labels.size - 1)])
    return (p < limit).astype(np.float64)


def _value(loss, labels, logits):
    return float(loss(tf.constant(labels), tf.constant(logits)))


def test_cross_entropy_matches_keras_and_numpy():
    labels, logits = _batch()
    keras_loss = keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, ignore_class=IGNORE_INDEX
    )
    plain = _value(PixelCrossEntropy(), labels, logits)
    assert plain == pytest.approx(float(keras_loss(labels, logits)), rel=1e-5)
    assert plain == pytest.approx(
        _reference_cross_entropy(labels, logits), rel=1e-5
    )
    assert _value(PixelCrossEntropy(WEIGHTS), labels, logits) == pytest.approx(
        _reference_cross_entropy(labels, logits, WEIGHTS), rel=1e-5
    )


@pytest.mark.parametrize(("threshold", "min_kept"), [(0.7, 5), (0.2, 30)])
def test_ohem_keeps_what_mmsegmentation_keeps(threshold, min_kept):
    labels, logits = _batch(seed=1)
    flat_labels, flat_logits = _valid_pixels(labels, logits)
    probability = _softmax(flat_logits)[
        np.arange(flat_labels.size), flat_labels
    ]
    kept = np.asarray(
        hardest_pixels(
            tf.constant(probability),
            tf.ones(flat_labels.size),
            threshold=threshold,
            min_kept=min_kept,
        )
    )
    expected = _reference_kept(labels, logits, threshold, min_kept)
    np.testing.assert_array_equal(kept, expected)
    assert kept.sum() >= min(min_kept, flat_labels.size)
    loss = PixelCrossEntropy(
        WEIGHTS, ohem_threshold=threshold, ohem_min_kept=min_kept
    )
    assert _value(loss, labels, logits) == pytest.approx(
        _reference_cross_entropy(labels, logits, WEIGHTS, kept=expected),
        rel=1e-5,
    )


def test_focal_dice_and_lovasz_match_numpy():
    labels, logits = _batch(seed=2)
    focal = PixelFocalLoss(2.0, class_weights=WEIGHTS)
    assert _value(focal, labels, logits) == pytest.approx(
        _reference_focal(labels, logits, 2.0, WEIGHTS), rel=1e-5
    )
    assert _value(PixelFocalLoss(0.0), labels, logits) == pytest.approx(
        _value(PixelCrossEntropy(), labels, logits), rel=1e-6
    )
    assert _value(SoftDiceLoss(), labels, logits) == pytest.approx(
        _reference_dice(labels, logits), rel=1e-5
    )
    assert _value(LovaszSoftmaxLoss(), labels, logits) == pytest.approx(
        _reference_lovasz(labels, logits), rel=1e-5
    )
    both = WeightedLossSum([PixelCrossEntropy(), SoftDiceLoss()], [1.0, 0.5])
    assert _value(both, labels, logits) == pytest.approx(
        _reference_cross_entropy(labels, logits)
        + 0.5 * _reference_dice(labels, logits),
        rel=1e-5,
    )


ALL_LOSSES = {
    "ce": PixelCrossEntropy(WEIGHTS),
    "ohem": PixelCrossEntropy(ohem_threshold=0.7, ohem_min_kept=10),
    "focal": PixelFocalLoss(2.0, class_weights=WEIGHTS),
    "dice": SoftDiceLoss(),
    "lovasz": LovaszSoftmaxLoss(),
    "ce+dice": WeightedLossSum([PixelCrossEntropy(), SoftDiceLoss()], [1, 1]),
}


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_each_batch_value_has_shape_one_for_tf_distribute(name):
    """A scalar would skip Keras' division by the replica count (two
    MirroredStrategy replicas then trained on twice the loss)."""
    labels, logits = _batch(seed=5)
    assert tuple(ALL_LOSSES[name].call(labels, logits).shape) == (1,)


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_ignored_pixels_get_exactly_zero_gradient(name):
    labels, logits = _batch(seed=3)
    logits = tf.Variable(logits)
    with tf.GradientTape() as tape:
        loss = ALL_LOSSES[name](tf.constant(labels), logits)
    gradient = tape.gradient(loss, logits).numpy()
    ignored = labels == IGNORE_INDEX
    assert np.all(gradient[ignored] == 0.0)
    assert np.abs(gradient[~ignored]).sum() > 0
    # and changing the logits of ignored pixels changes nothing
    moved = logits.numpy()
    moved[ignored] += 7.0
    assert float(ALL_LOSSES[name](labels, moved)) == pytest.approx(
        float(loss), rel=1e-6
    )


_JAX_LOSSES = """
import json, sys
import numpy as np
import keras
from keras_deeplab.training.objective import segmentation_loss
data = np.load(sys.argv[1])
values = {}
for name, options in json.loads(sys.argv[2]).items():
    loss = segmentation_loss(**options)
    values[name] = float(loss(data["labels"], data["logits"]))
print("VALUES " + json.dumps(values))
"""
SETTINGS = {
    "ce": {"class_weights": WEIGHTS},
    "ohem": {"ohem_threshold": 0.7, "ohem_min_kept": 10},
    "focal": {"loss": "focal", "class_weights": WEIGHTS},
    "dice": {"loss": "dice"},
    "lovasz": {"loss": "lovasz"},
    "ce+dice": {"loss": "ce+dice", "term_weights": [1.0, 0.5]},
}


def test_jax_computes_the_same_losses(tmp_path):
    labels, logits = _batch(seed=4)
    data = tmp_path / "batch.npz"
    np.savez(data, labels=labels, logits=logits)
    completed = subprocess.run(
        [sys.executable, "-c", _JAX_LOSSES, str(data), json.dumps(SETTINGS)],
        capture_output=True,
        text=True,
        env={**os.environ, "KERAS_BACKEND": "jax"},
        check=True,
    )
    (line,) = [x for x in completed.stdout.splitlines() if "VALUES" in x]
    jax_values = json.loads(line.removeprefix("VALUES "))
    for name, options in SETTINGS.items():
        expected = _value(segmentation_loss(**options), labels, logits)
        assert jax_values[name] == pytest.approx(expected, rel=1e-5), name


def test_median_frequency_weights_by_hand():
    counts = ClassPixelCounts(4)
    counts.add(np.array([[0, 0, 0, 1]]))  # 4 px: class 0 x3, class 1 x1
    counts.add(np.array([[0, 0, 255, 255]]))  # 2 labelled px, class 0
    # freq0 = 5 / (4 + 2), freq1 = 1 / 4; median = (5/6 + 1/4) / 2
    median = (5 / 6 + 1 / 4) / 2
    weights = counts.median_frequency_weights()
    np.testing.assert_allclose(weights, [median / (5 / 6), median / 0.25, 0, 0])
    with pytest.raises(UserInputError, match="no labelled pixel"):
        ClassPixelCounts(2).median_frequency_weights()


def test_loss_settings_are_read_and_checked():
    config = load_config(
        "demo",
        [
            "loss=ce+dice",
            "loss_term_weights=[1, 0.5]",
            "class_weights=auto",
            "ohem_threshold=0.7",
        ],
    )
    assert config.class_weights == "auto" and config.loss == "ce+dice"
    explicit = load_config("demo", ["class_weights=[1, 2, 3, 4, 5]"])
    assert explicit.class_weights == (1.0, 2.0, 3.0, 4.0, 5.0)
    for setting, message in [
        ("loss=ce+ce", "loss='ce+ce' is not supported"),
        ("loss=bce", "loss='bce' is not supported"),
        ("class_weights=[1, 2]", "class_weights=(1.0, 2.0) is invalid"),
        ("class_weights=often", "wrong type"),
        ("ohem_threshold=1.5", "ohem_threshold=1.5 is out of range"),
        ("focal_gamma=nan", "focal_gamma=nan is not a finite number"),
    ]:
        with pytest.raises(UserInputError, match=re.escape(message)):
            load_config("demo", [setting]).validate()
    with pytest.raises(UserInputError, match="loss_term_weights"):
        load_config(
            "demo", ["loss=ce+dice", "loss_term_weights=[1]"]
        ).validate()


def _dots_and_boxes(count, seed):
    """Noise with one box (class 1, ~12% of pixels) and two 2x2 dots
    (class 2, ~1.4%) per image, each a little brighter in one channel."""
    rng = np.random.default_rng(seed)
    images = rng.normal(0.5, 0.15, (count, 24, 24, 3)).astype("float32")
    masks = np.zeros((count, 24, 24), "int32")
    for i in range(count):
        y, x = rng.integers(0, 12, 2)
        height, width = rng.integers(6, 12, 2)
        masks[i, y : y + height, x : x + width] = 1
        images[i, y : y + height, x : x + width, 0] += 0.4
        for _ in range(2):
            y, x = rng.integers(0, 22, 2)
            masks[i, y : y + 2, x : x + 2] = 2
            images[i, y : y + 2, x : x + 2, 2] += 0.45
    return images, masks


def _rare_class_iou(loss, train, val):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((None, None, 3)),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(3, 1),
        ]
    )
    model.compile(keras.optimizers.Adam(0.01), loss=loss)
    model.fit(*train, epochs=20, batch_size=16, verbose=0)
    predicted = model.predict(val[0], verbose=0).argmax(-1) == 2
    truth = val[1] == 2
    return (predicted & truth).sum() / (predicted | truth).sum()


def test_median_frequency_weights_raise_a_rare_class_iou(capsys):
    """The same short run (same seed) with plain and class-weighted CE."""
    train, val = _dots_and_boxes(64, seed=0), _dots_and_boxes(32, seed=1)
    counts = ClassPixelCounts(3)
    for mask in train[1]:
        counts.add(mask)
    weights = counts.median_frequency_weights()
    assert weights[2] > 5 * weights[1] > 5 * weights[0]
    plain = _rare_class_iou(PixelCrossEntropy(), train, val)
    weighted = _rare_class_iou(PixelCrossEntropy(weights), train, val)
    with capsys.disabled():
        print(
            f"\nrare-class IoU: plain CE {plain:.3f}, weighted {weighted:.3f}"
        )
    assert weighted > plain + 0.1
