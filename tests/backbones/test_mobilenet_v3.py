"""Dilated MobileNetV3-Large and the models on it: plan, keras.applications
parity, ImageNet weights by name, the native dilated depthwise conv, and
DeepLabV3 / LR-ASPP at every output stride and size."""

import keras
import numpy as np
import pytest

import keras_deeplab as kd
from keras_deeplab.backbones.imagenet import transfer_weights
from keras_deeplab.backbones.mobilenet_v3 import (
    block_plan,
    mobilenet_v3_features,
)
from keras_deeplab.layers import AtrousDepthwiseConv2D, ImagePreprocessing
from tests.helpers import assert_layers_equal, random_images

# torchvision's meta["num_params"] (trainable parameters), 21 classes.
TORCHVISION_DEEPLABV3_MOBILENET_PARAMS = 11_029_328  # with its aux head
TORCHVISION_LRASPP_PARAMS = 3_221_538


def test_block_plan_per_output_stride():
    strided = {1: 2, 3: 2, 6: 2, 12: 2}
    assert block_plan(32) == tuple((strided.get(i, 1), 1) for i in range(15))
    os16 = block_plan(16)
    assert os16[12:] == ((1, 2), (1, 2), (1, 2)) and os16[6] == (2, 1)
    os8 = block_plan(8)
    assert set(os8[6:12]) == {(1, 2)} and set(os8[12:]) == {(1, 4)}
    with pytest.raises(ValueError, match="output_stride=12"):
        block_plan(12)


def _randomize_batchnorm(*models):
    rng = np.random.default_rng(0)
    for layer in models[0].layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = (
                rng.uniform(0.5, 1.5, v.shape) if i in (0, 3) else
                rng.normal(0, 0.1, v.shape)
                for i, v in enumerate(layer.weights)
            )  # fmt: skip
            for model in models:
                model.get_layer(layer.name).set_weights(
                    [gamma, beta, mean, variance]
                )


@pytest.fixture(scope="module")
def reference_and_ours():
    """keras.applications' MobileNetV3Large and ours at OS32, same weights."""
    reference = keras.applications.MobileNetV3Large(
        input_shape=(None, None, 3), include_top=False, weights=None
    )
    images = keras.Input((None, None, 3))
    features = mobilenet_v3_features(ImagePreprocessing("tf")(images))
    ours = keras.Model(images, features["out"])
    transfer_weights(reference, ours)  # every weighted layer, by name
    _randomize_batchnorm(reference, ours)
    return reference, ours


@pytest.mark.parametrize("shape", [(1, 224, 224), (2, 97, 129)], ids=str)
def test_os32_equals_keras_applications(reference_and_ours, shape):
    reference, ours = reference_and_ours
    images = random_images(*shape, seed=sum(shape))
    np.testing.assert_allclose(
        np.asarray(ours(images)), np.asarray(reference(images)), atol=1e-5
    )


def test_imagenet_weights_load_by_name_from_a_local_file(tmp_path):
    reference = keras.applications.MobileNetV3Large(
        input_shape=(224, 224, 3), include_top=False, weights=None
    )
    path = tmp_path / "mobilenet_v3_large_notop.weights.h5"
    reference.save_weights(path)
    model = kd.LRASPP(3, backbone_weights=str(path))
    assert_layers_equal(
        model,
        reference,
        ("conv", "expanded_conv_3_squeeze_excite_conv", "conv_1_bn"),
    )


@pytest.mark.parametrize("rate", [2, 4])
def test_dilated_depthwise_is_native_and_equals_keras(rate):
    """Same function and gradients as DepthwiseConv2D (the native op's CPU
    gradient is missing; it goes through the SpaceToBatch form)."""
    import tensorflow as tf

    kwargs = {"kernel_size": 5, "dilation_rate": rate, "padding": "same"}
    native = AtrousDepthwiseConv2D(**kwargs)
    reference = keras.layers.DepthwiseConv2D(**kwargs)
    images = tf.constant(random_images(2, 17, 23))
    native.build(images.shape)
    reference.build(images.shape)
    reference.set_weights(native.get_weights())
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(images)
        outputs = native(images), reference(images)
    np.testing.assert_allclose(*map(np.asarray, outputs), atol=1e-3)
    grads = [tape.gradient(out, [images, *layer.weights]) for out, layer in
             zip(outputs, (native, reference), strict=True)]  # fmt: skip
    for mine, theirs in zip(*grads, strict=True):
        scale = float(np.abs(theirs).max())
        np.testing.assert_allclose(mine, theirs, atol=1e-5 * scale)


@pytest.mark.parametrize("builder", [kd.DeepLabV3, kd.LRASPP])
@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_any_size_at_every_output_stride(builder, output_stride):
    model = builder(
        3, backbone="mobilenet_v3_large", output_stride=output_stride
    )
    for shape in ((1, 65, 65), (2, 97, 129)):
        logits = model.predict_on_batch(random_images(*shape))
        assert logits.shape == (*shape, 3) and logits.dtype == np.float32


def test_mixed_precision_keeps_float32_logits_and_saves_safely(tmp_path):
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = kd.LRASPP(3)
    keras.config.set_dtype_policy("float32")
    logits = model(random_images(1, 65, 65))
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    path = tmp_path / "lraspp.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert loaded.spec.architecture == "lraspp"


def test_torchvision_layout_has_torchvision_parameter_counts():
    deeplab = kd.DeepLabV3(
        21, backbone="mobilenet_v3_large", variant="torchvision", aux_head=True
    )
    lraspp = kd.LRASPP(21, variant="torchvision")
    for model, expected in (
        (deeplab, TORCHVISION_DEEPLABV3_MOBILENET_PARAMS),
        (lraspp, TORCHVISION_LRASPP_PARAMS),
    ):
        trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
        assert trainable == expected, model.name


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"backbone": "resnet50"}, "architecture='lraspp' needs a MobileNet"),
        ({"backbone_width": 16}, "backbone_width=16 applies to ResNet"),
        ({"aux_head": True}, "LR-ASPP has no auxiliary head"),
        ({"atrous_rates": (6, 12, 18)}, "do not apply to architecture"),
    ],
)
def test_lraspp_refuses_what_it_cannot_be(options, message):
    with pytest.raises(ValueError, match=message):
        kd.LRASPP(3, **options)
