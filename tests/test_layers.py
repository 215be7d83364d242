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
    with pytest.raises(ValueError, match="mode='inception' is not supported"):
        ImagePreprocessing("inception")


def test_tf_preprocessing_matches_keras_mobilenet_v3_rescaling():
    images = random_images(2, 8, 8)
    rescaling = keras.layers.Rescaling(scale=1.0 / 127.5, offset=-1.0)
    np.testing.assert_allclose(
        np.asarray(ImagePreprocessing("tf")(images)),
        np.asarray(rescaling(images)),
        atol=1e-6,
    )


@pytest.mark.parametrize("layer_class", [ImagePreprocessing, ResizeToMatch])
def test_layers_round_trip_their_config(layer_class):
    layer = layer_class(name="probe")
    config = layer.get_config()
    clone = layer_class.from_config(config)
    assert clone.get_config() == config
    serialized = keras.saving.serialize_keras_object(layer)
    assert serialized["registered_name"].startswith("keras_deeplab>")


def _conv_pair(rate, *, use_bias, depthwise=False, kernel_size=3, filters=6):
    """An Atrous(Depthwise)Conv2D and its keras layer with the same
    weights."""
    from keras_deeplab.layers import AtrousConv2D, AtrousDepthwiseConv2D

    kwargs = {
        "kernel_size": kernel_size,
        "dilation_rate": rate,
        "padding": "same",
        "use_bias": use_bias,
        "bias_initializer": "random_normal",
    }
    if depthwise:
        ours, theirs = AtrousDepthwiseConv2D, keras.layers.DepthwiseConv2D
    else:
        ours, theirs = AtrousConv2D, keras.layers.Conv2D
        kwargs["filters"] = filters
    native, reference = ours(**kwargs), theirs(**kwargs)
    native.build((None, None, None, 5))
    reference.build((None, None, None, 5))
    reference.set_weights(native.get_weights())
    return native, reference


def _values_and_gradients(layer, images, *, traced=True):
    import tensorflow as tf

    images = tf.constant(images)

    def step():
        with tf.GradientTape() as tape:
            tape.watch(images)
            outputs = layer(images)
            loss = tf.reduce_sum(outputs * tf.sin(outputs))
        return (outputs, *tape.gradient(loss, [images, *layer.weights]))

    if traced:
        step = tf.function(step)
    return [np.asarray(value) for value in step()]


@pytest.mark.parametrize("traced", [True, False], ids=["traced", "eager"])
@pytest.mark.parametrize("rate", [1, 2, 6, 13])
@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("depthwise", [False, True])
def test_atrous_conv_matches_keras_conv_forward_and_gradients(
    rate, use_bias, depthwise, traced
):
    """The native op and its SpaceToBatch gradient equal Keras' Conv2D to
    1e-5 of each tensor's scale (float32 summation order differs), in a
    tf.function and eagerly (`run_eagerly=True`); a depthwise conv where
    this TensorFlow lacks the native kernel runs the Keras form."""
    native, reference = _conv_pair(rate, use_bias=use_bias, depthwise=depthwise)
    rng = np.random.default_rng(rate)
    images = rng.standard_normal((2, 29, 37, 5)).astype("float32")
    for got, expected in zip(
        _values_and_gradients(native, images, traced=traced),
        _values_and_gradients(reference, images, traced=traced),
        strict=True,
    ):
        scale = np.abs(expected).max()
        np.testing.assert_allclose(got, expected, atol=1e-5 * scale)


def test_a_freed_model_gives_its_dilated_kernels_back():
    """A model with a dilated conv, run and differentiated in traced
    functions, then freed, leaves none of its weights resident. With
    `tf.custom_gradient` every trace registered a gradient in TensorFlow's
    global registry that kept the traced graph and the weights it captured
    alive: each model leaked its weights (a test worker grew by gigabytes).
    Keras' optimizer step leaks the same way (see tests/conftest.py), so
    the gradients here are taken without one."""
    import tensorflow as tf

    from keras_deeplab.layers import AtrousConv2D
    from keras_deeplab.utils.memory import release_freed_memory, rss_mb

    channels = 768
    kernel_mb = 9 * channels * channels * 4 / 2**20  # 20 MB
    images = tf.ones((1, 7, 7, channels))

    def build_run_differentiate():
        model = keras.Sequential(
            [
                keras.Input((None, None, channels)),
                AtrousConv2D(channels, 3, dilation_rate=2, padding="same"),
            ]
        )
        model.predict_on_batch(images)

        @tf.function
        def gradients():
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(model(images, training=True))
            return tape.gradient(loss, model.trainable_weights)

        gradients()

    def build_run_differentiate_free():
        build_run_differentiate()
        keras.backend.clear_session()
        release_freed_memory()
        return rss_mb()

    if keras.backend.backend() != "tensorflow" or rss_mb() is None:
        pytest.skip("the native path and /proc are TensorFlow/Linux only")
    # The allocator keeps a kernel or two now and then (a plain Keras Conv2D
    # too); a leak grows by one kernel per model.
    first = build_run_differentiate_free()
    last = [build_run_differentiate_free() for _ in range(8)][-1]
    assert last - first < 3 * kernel_mb, (first, last, kernel_mb)


def test_atrous_conv_round_trips_and_refuses_valid_padding():
    from keras_deeplab.layers import AtrousConv2D

    native, _ = _conv_pair(4, use_bias=False)
    clone = AtrousConv2D.from_config(native.get_config())
    assert clone.get_config() == native.get_config()
    assert keras.saving.serialize_keras_object(native)["registered_name"] == (
        "keras_deeplab>AtrousConv2D"
    )
    with pytest.raises(ValueError, match="needs padding='same'"):
        AtrousConv2D(4, 3, dilation_rate=2, padding="valid")


_DEPTHWISE_PATH = """
from keras_deeplab.layers import native_dilated_depthwise_runs
print("native dilated depthwise:", native_dilated_depthwise_runs())
"""


@pytest.mark.slow
@pytest.mark.parametrize("onednn", ["0", "1"])
def test_atrous_conv_parity_with_onednn_on_and_off(onednn, tmp_path):
    """The forward and gradient parity tests above, in a process with
    oneDNN forced on or off, so a machine whose CPU runs one path by default
    (AVX-512 servers: on) also checks the other. With oneDNN on, a dilated
    depthwise conv is one native op (its fused form with a bias aborted
    TensorFlow's shape inference); off, TF has no CPU kernel for it, nor a
    gradient for a native dilated Conv2D, and the portable forms run."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "TF_ENABLE_ONEDNN_OPTS": onednn,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONPATH": str(root),
    }

    def run(*args):
        return subprocess.run(
            [sys.executable, *args],
            env=env,
            cwd=root,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )

    probe = run("-c", _DEPTHWISE_PATH)
    assert probe.returncode == 0, probe.stderr[-2000:]
    native = onednn == "1"
    assert f"native dilated depthwise: {native}" in probe.stdout, probe.stdout
    parity = run(
        "-m",
        "pytest",
        "-q",
        "-n",
        "0",
        "-p",
        "no:cacheprovider",
        "tests/test_layers.py::test_atrous_conv_matches_keras_conv_forward_"
        "and_gradients",
        "tests/test_layers.py::test_dilated_depthwise_form_chooses_the_"
        "traced_op",
    )
    summary = parity.stdout[-3000:] + parity.stderr[-2000:]
    assert parity.returncode == 0, summary
    assert "34 passed" in parity.stdout, summary


@pytest.mark.parametrize("form", ["native", "portable"])
def test_dilated_depthwise_form_chooses_the_traced_op(form):
    """Converters trace the native op (TFLite and ONNX have kernels for
    it); a SavedModel for another machine traces the portable one."""
    import tensorflow as tf

    from keras_deeplab.layers import dilated_depthwise_form

    layer, _ = _conv_pair(2, use_bias=False, depthwise=True)
    with dilated_depthwise_form(form):
        function = tf.function(layer).get_concrete_function(
            tf.TensorSpec([1, 9, 9, 5], tf.float32)
        )
    ops = {node.op for node in function.graph.as_graph_def().node}
    assert ("SpaceToBatchND" in ops) == (form == "portable"), ops
    with pytest.raises(ValueError, match="expected one of"):
        with dilated_depthwise_form("fast"):
            pass
