"""Registered layers: bilinear resize semantics, preprocessing, config."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_deeplab.layers import (
    ImagePreprocessing,
    ResizeToMatch,
    preprocess_images,
    resize_bilinear,
)
from tests.helpers import random_images


@pytest.mark.parametrize(
    ("height", "width"),
    [(513, 513), (97, 129), (65, 65), (7, 9), (33, 17), (1, 1), (100, 3)],
)
def test_resize_matches_tf_image_resize(height, width):
    images = np.random.default_rng(0).normal(size=(2, 33, 17, 4))
    images = images.astype("float32")
    expected = tf.image.resize(images, (height, width), method="bilinear")
    np.testing.assert_allclose(
        np.asarray(resize_bilinear(images, height, width)),
        expected.numpy(),
        atol=1e-5,
    )


def test_resize_to_match_runs_with_dynamic_shapes_in_a_graph():
    logits = keras.Input((None, None, 5))
    reference = keras.Input((None, None, 3))
    model = keras.Model(
        [logits, reference], ResizeToMatch()([logits, reference])
    )
    graph_call = tf.function(
        lambda a, b: model([a, b]),
        input_signature=[
            tf.TensorSpec([None, None, None, 5]),
            tf.TensorSpec([None, None, None, 3]),
        ],
    )
    out = graph_call(
        np.ones((2, 9, 17, 5), "float32"), random_images(2, 97, 129)
    )
    assert tuple(out.shape) == (2, 97, 129, 5)
    np.testing.assert_allclose(out.numpy(), 1.0)


def test_preprocessing_matches_keras_applications():
    images = random_images(2, 8, 8)
    expected = keras.applications.resnet.preprocess_input(images.copy())
    np.testing.assert_allclose(
        np.asarray(preprocess_images(images)), expected, atol=1e-4
    )
    uint8 = images.astype("uint8")
    np.testing.assert_allclose(
        np.asarray(ImagePreprocessing()(uint8)),
        keras.applications.resnet.preprocess_input(uint8.astype("float32")),
        atol=1e-4,
    )


def test_torch_preprocessing_matches_torchvision_normalize():
    """keras.applications' "torch" mode is torchvision's ToTensor +
    Normalize(mean, std), in RGB order."""
    images = random_images(2, 8, 8)
    expected = keras.applications.imagenet_utils.preprocess_input(
        images.copy(), mode="torch"
    )
    layer = ImagePreprocessing("torch")
    np.testing.assert_allclose(np.asarray(layer(images)), expected, atol=1e-5)
    assert ImagePreprocessing.from_config(layer.get_config()).mode == "torch"
    with pytest.raises(ValueError, match="mode='tf' is not supported"):
        ImagePreprocessing("tf")


@pytest.mark.parametrize("layer_class", [ImagePreprocessing, ResizeToMatch])
def test_layers_round_trip_their_config(layer_class):
    layer = layer_class(name="probe")
    config = layer.get_config()
    clone = layer_class.from_config(config)
    assert clone.get_config() == config
    serialized = keras.saving.serialize_keras_object(layer)
    assert serialized["registered_name"].startswith("keras_deeplab>")
