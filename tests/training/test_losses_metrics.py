"""Loss and metrics honour the 255 ignore label; poly schedule values."""

import keras
import numpy as np
import pytest

from keras_deeplab.evaluation.metrics import (
    PixelAccuracy,
    mean_iou,
    per_class_iou,
)
from keras_deeplab.training.objective import segmentation_loss
from keras_deeplab.training.schedules import PolyDecay


def _one_hot_logits(labels, num_classes, confidence=5.0):
    return keras.ops.one_hot(labels, num_classes) * confidence


def test_loss_ignores_255_pixels():
    labels = np.array([[[0, 1], [255, 255]]])
    logits = np.zeros((1, 2, 2, 3), dtype="float32")
    logits[0, 0, 0] = [4.0, 0.0, 0.0]  # confident and right
    logits[0, 0, 1] = [0.0, 0.0, 4.0]  # confident and wrong
    logits[0, 1] = [100.0, -100.0, 0.0]  # wrong for any label, but ignored
    # Mean over the two labelled pixels only.
    expected = np.mean(
        [
            -np.log(np.exp(4.0) / (np.exp(4.0) + 2)),
            -np.log(1.0 / (np.exp(4.0) + 2)),
        ]
    )
    loss = float(segmentation_loss()(labels, logits))
    assert loss == pytest.approx(expected, rel=1e-5)


def test_mean_iou_and_accuracy_ignore_255():
    labels = np.array([[[0, 0, 1, 1], [2, 2, 255, 255]]])
    predicted = np.array([[[0, 1, 1, 1], [2, 0, 2, 0]]])
    logits = _one_hot_logits(predicted, 3)
    iou, accuracy = mean_iou(3), PixelAccuracy(3)
    iou.update_state(labels, logits)
    accuracy.update_state(labels, logits)
    # class 0: tp 1, fp 1 (pixel 5), fn 1 -> 1/3; class 1: tp 2, fp 1 -> 2/3;
    # class 2: tp 1, fn 1 -> 1/2; ignored pixels predicted 2 and 0 don't count
    np.testing.assert_allclose(per_class_iou(iou), [1 / 3, 2 / 3, 1 / 2])
    assert float(iou.result()) == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert float(accuracy.result()) == pytest.approx(4 / 6)


def test_absent_class_is_left_out_of_the_mean():
    labels = np.array([[[0, 1]]])
    iou = mean_iou(4)
    iou.update_state(labels, _one_hot_logits(labels, 4))
    assert float(iou.result()) == pytest.approx(1.0)
    assert np.isnan(per_class_iou(iou)[2:]).all()


def test_poly_schedule_values():
    schedule = PolyDecay(0.007, decay_steps=100, power=0.9)
    assert float(schedule(0)) == pytest.approx(0.007)
    assert float(schedule(50)) == pytest.approx(0.007 * 0.5**0.9)
    assert float(schedule(100)) == pytest.approx(0.0)
    assert float(schedule(150)) == pytest.approx(0.0)


@pytest.mark.parametrize("decay_steps", [120, 100, 7])
def test_poly_schedule_ends_at_zero_under_xla(decay_steps):
    """XLA multiplies by the reciprocal: step / 120 came out a hair above 1,
    and (1 - that) ** 0.9 was NaN, which turned every weight into NaN (a
    JAX run resumed past its end)."""
    import tensorflow as tf

    schedule = PolyDecay(1e-3, decay_steps=decay_steps, power=0.9)
    compiled = tf.function(schedule, jit_compile=True)
    for step in (decay_steps - 1, decay_steps, decay_steps + 1):
        rate = float(compiled(tf.constant(step, tf.int64)))
        assert np.isfinite(rate) and rate >= 0.0, (step, rate)
    # Zero up to the reciprocal's rounding (1e-10 at 100 steps).
    assert float(compiled(tf.constant(decay_steps, tf.int64))) < 1e-9


def test_poly_schedule_warmup_and_config():
    schedule = PolyDecay(0.01, decay_steps=100, power=0.9, warmup_steps=10)
    assert float(schedule(0)) == pytest.approx(0.01 * 0.1)
    assert float(schedule(9)) == pytest.approx(0.01 * 0.91**0.9)
    clone = PolyDecay.from_config(schedule.get_config())
    assert float(clone(42)) == pytest.approx(float(schedule(42)))
