"""ASPP: rates per output stride, branches, image pooling at batch 1."""

import keras
import numpy as np
import pytest

from keras_deeplab.heads.aspp import aspp, default_atrous_rates
from keras_deeplab.models.builders import DeepLabV3
from tests.helpers import TINY, random_images


@pytest.mark.parametrize(
    ("output_stride", "rates"),
    [(16, (6, 12, 18)), (8, (12, 24, 36)), (32, (3, 6, 9))],
)
def test_default_rates_scale_with_output_stride(output_stride, rates):
    assert default_atrous_rates(output_stride) == rates


def _aspp_model(*, image_pooling=True, rates=(6, 12, 18)):
    features = keras.Input((None, None, 32))
    outputs = aspp(
        features,
        atrous_rates=rates,
        filters=16,
        image_pooling=image_pooling,
        bn_momentum=0.9,
    )
    return keras.Model(features, outputs)


def test_branches_follow_the_rates():
    model = _aspp_model()
    atrous = [
        layer
        for layer in model.layers
        if layer.name.startswith("aspp_atrous")
        and isinstance(layer, keras.layers.Conv2D)
    ]
    assert [layer.dilation_rate for layer in atrous] == [
        (6, 6),
        (12, 12),
        (18, 18),
    ]
    concat = model.get_layer("aspp_concat")
    assert concat.output.shape[-1] == 5 * 16  # 1x1 + 3 atrous + pooling
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            assert not layer.use_bias
    assert (
        _aspp_model(image_pooling=False)
        .get_layer("aspp_concat")
        .output.shape[-1]
        == 4 * 16
    )


def test_image_pooling_branch_is_an_exact_broadcast():
    model = _aspp_model()
    branch = keras.Model(
        model.input, model.get_layer("aspp_pool_resize").output
    )
    features = np.random.default_rng(0).normal(size=(2, 9, 13, 32))
    out = np.asarray(branch(features.astype("float32")))
    assert out.shape == (2, 9, 13, 16)
    np.testing.assert_array_equal(
        out, np.broadcast_to(out[:, :1, :1], out.shape)
    )


def test_training_step_at_batch_one_stays_finite():
    model = DeepLabV3(3, **TINY)
    images = random_images(1, 65, 65)
    masks = np.zeros((1, 65, 65), dtype="int32")
    model.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    loss = model.train_on_batch(images, masks)
    assert np.isfinite(loss)
    logits = np.asarray(model(images, training=True))
    assert np.isfinite(logits).all()
