"""DeepLabV3: shapes, arguments, outputs, saving, precision, weights."""

import keras
import numpy as np
import pytest

from keras_deeplab import DeepLabV3
from keras_deeplab.models.deeplab import AUX_OUTPUT, MAIN_OUTPUT
from tests.helpers import TINY, random_images, saved_resnet50_reference

DEEPLABV3_R50_OS16_VOC_PARAMS = 39_131_285
DEEPLABV3_R50_OS16_VOC_AUX_PARAMS = 41_497_002
DEEPLABV3_R50_OS16_VOC_TRAINABLE = 39_075_093
# torchvision's deeplabv3_resnet50 (21 classes, no aux), which counts
# trainable parameters only; tests/test_convert.py counts torchvision's own.
TORCHVISION_DEEPLABV3_R50_PARAMS = 39_638_869
VARIANTS = ["keras_applications", "torchvision"]


@pytest.fixture(scope="module", params=VARIANTS)
def variant(request):
    return request.param


@pytest.fixture(scope="module")
def tiny_model(variant):
    return DeepLabV3(3, variant=variant, **TINY)


@pytest.mark.parametrize("shape", [(1, 97, 129), (3, 97, 129), (2, 65, 65)])
def test_output_is_float32_logits_at_input_size(tiny_model, shape):
    logits = tiny_model(random_images(*shape))
    assert tuple(logits.shape) == (*shape, 3)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"


def test_uint8_input_gives_the_same_logits(tiny_model):
    images = random_images(1, 33, 33).round()
    np.testing.assert_allclose(
        np.asarray(tiny_model(images.astype("uint8"))),
        np.asarray(tiny_model(images)),
        atol=1e-5,
    )


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_every_output_stride_builds_and_keeps_the_input_size(
    output_stride, variant
):
    model = DeepLabV3(2, output_stride=output_stride, variant=variant, **TINY)
    for size in (64, 65):
        assert model(random_images(1, size, size)).shape == (1, size, size, 2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"output_stride": 12},
            "output_stride=12 is not supported; expected one of (8, 16, 32).",
        ),
        (
            {"backbone": "resnet34"},
            "backbone='resnet34' is not supported; expected one of "
            "('resnet50', 'resnet101', 'mobilenet_v3_large').",
        ),
        (
            {"num_classes": 0},
            "num_classes=0 is out of range; expected a value >= 1 and <= 255.",
        ),
        (
            {"atrous_rates": (6, -1)},
            "atrous_rates=(6, -1) is invalid; expected a non-empty list of "
            "ints in [1, 256], e.g. --set atrous_rates=[6,12,18].",
        ),
        (
            {"variant": "pytorch"},
            "variant='pytorch' is not supported; expected one of "
            "('keras_applications', 'torchvision').",
        ),
        (
            {"variant": "torchvision", "backbone_weights": "imagenet"},
            "backbone_weights='imagenet' are keras.applications weights, "
            "which do not fit variant='torchvision'; convert a torchvision "
            "checkpoint instead (keras-deeplab convert-torchvision, or a "
            "preset: keras-deeplab presets) or use "
            "variant='keras_applications'.",
        ),
        (
            {"input_shape": (64, 64, 1)},
            "input_shape=(64, 64, 1) is invalid; expected (height, width, 3) "
            "with None for a dynamic size, channels last.",
        ),
        (
            {"atrous_rates": (1_000_000_000, 1, 1)},
            "atrous_rates=(1000000000, 1, 1) is invalid; expected a non-empty "
            "list of ints in [1, 256], e.g. --set atrous_rates=[6,12,18].",
        ),
        (
            {"bn_momentum": float("nan")},
            "bn_momentum=nan is not a finite number; expected a value >= 0.0 "
            "and < 1.0.",
        ),
        (
            {"output_strides": 8},
            "unknown argument(s) ['output_strides']; expected one of "
            "input_shape, backbone_weights, weights, name or a ModelSpec "
            "field other than architecture (each builder sets it).",
        ),
    ],
)
def test_invalid_arguments_name_the_argument(kwargs, message):
    kwargs = {"num_classes": 3, **kwargs}
    with pytest.raises(ValueError) as info:
        DeepLabV3(**kwargs)
    assert str(info.value) == message


def test_missing_weights_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.weights.h5"):
        DeepLabV3(3, weights=str(tmp_path / "missing.weights.h5"), **TINY)


def test_aux_head_returns_both_outputs():
    model = DeepLabV3(4, aux_head=True, **TINY)
    outputs = model(random_images(2, 65, 65))
    assert set(outputs) == {MAIN_OUTPUT, AUX_OUTPUT}
    for logits in outputs.values():
        assert logits.shape == (2, 65, 65, 4)
    assert model.get_layer("aux_head_conv").input.shape[-1] == 4 * 8 * 4


def test_keras_file_round_trip_in_safe_mode(tmp_path, tiny_model):
    assert not any(
        isinstance(layer, keras.layers.Lambda) for layer in tiny_model.layers
    )
    path = tmp_path / "model.keras"
    tiny_model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    images = random_images(2, 65, 65)
    np.testing.assert_array_equal(
        np.asarray(loaded(images)), np.asarray(tiny_model(images))
    )
    assert loaded.spec == tiny_model.spec


def test_class_names_and_spec_survive_save_and_load(tmp_path):
    names = ("sky", "road", "person")
    model = DeepLabV3(3, class_names=names, output_stride=8, **TINY)
    path = tmp_path / "named.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert loaded.spec.class_names == names
    assert loaded.spec.output_stride == 8 and loaded.name == model.name
    assert DeepLabV3(3, **TINY).spec.names == ("class_0", "class_1", "class_2")
    with pytest.raises(ValueError, match="class_names has 2 names"):
        DeepLabV3(3, class_names=("a", "b"), **TINY)
    with pytest.raises(ValueError, match="repeats"):
        DeepLabV3(3, class_names=("a", "b", "a"), **TINY)


def test_weights_argument_loads_saved_weights(tmp_path, tiny_model, variant):
    path = tmp_path / "tiny.weights.h5"
    tiny_model.save_weights(path)
    rebuilt = DeepLabV3(3, variant=variant, weights=str(path), **TINY)
    images = random_images(1, 33, 33)
    np.testing.assert_array_equal(
        np.asarray(rebuilt(images)), np.asarray(tiny_model(images))
    )


def test_backbone_weights_from_local_file(tmp_path):
    reference, path = saved_resnet50_reference(tmp_path)
    model = DeepLabV3(3, output_stride=8, backbone_weights=str(path))
    np.testing.assert_array_equal(
        model.get_layer("conv5_block3_2_conv").get_weights()[0],
        reference.get_layer("conv5_block3_2_conv").get_weights()[0],
    )


@pytest.mark.parametrize("variant", VARIANTS)
def test_mixed_bfloat16_keeps_float32_logits(variant):
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = DeepLabV3(3, aux_head=True, variant=variant, **TINY)
    assert model.get_layer("conv1_conv").compute_dtype == "bfloat16"
    outputs = model(random_images(1, 65, 65))
    for logits in outputs.values():
        assert keras.backend.standardize_dtype(logits.dtype) == "float32"
        assert np.isfinite(np.asarray(logits)).all()


def _trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def test_full_size_parameter_counts():
    plain = DeepLabV3(21)
    assert plain.count_params() == DEEPLABV3_R50_OS16_VOC_PARAMS
    assert _trainable(plain) == DEEPLABV3_R50_OS16_VOC_TRAINABLE
    with_aux = DeepLabV3(21, aux_head=True)
    assert with_aux.count_params() == DEEPLABV3_R50_OS16_VOC_AUX_PARAMS
    torchvision = DeepLabV3(21, variant="torchvision")
    assert _trainable(torchvision) == TORCHVISION_DEEPLABV3_R50_PARAMS


def test_no_head_layer_looks_like_a_backbone_layer():
    model = DeepLabV3(3, aux_head=True, **TINY)
    backbone = keras.applications.ResNet50(include_top=False, weights=None)
    backbone_names = {layer.name for layer in backbone.layers}
    for layer in model.layers:
        if layer.name not in backbone_names:
            assert not layer.name[:5].startswith("conv"), layer.name


def test_with_output_stride_keeps_weights_and_scales_rates():
    from keras_deeplab.config import load_config
    from keras_deeplab.loading import model_from_config
    from keras_deeplab.models.derived import with_output_stride

    config = load_config(
        None,
        [
            "num_classes=3",
            "backbone_width=8",
            "head_filters=16",
            "atrous_rates=[6,12,18]",
        ],
    )
    trained = model_from_config(config)
    images = random_images(1, 65, 65)
    same = with_output_stride(trained, 16)
    np.testing.assert_allclose(
        np.asarray(same(images)), np.asarray(trained(images)), atol=1e-6
    )
    dense = with_output_stride(trained, 8)
    assert dense.get_layer("conv4_block1_2_conv").dilation_rate == (2, 2)
    assert dense.get_layer("aspp_atrous1_conv").dilation_rate == (12, 12)
    for kept, rebuilt in zip(trained.weights, dense.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(kept), np.asarray(rebuilt))
    assert dense(images).shape == (1, 65, 65, 3)


def test_cached_imagenet_weights_looks_in_keras_home(tmp_path, monkeypatch):
    from keras_deeplab.backbones.imagenet import (
        cached_imagenet_weights,
        imagenet_file,
    )

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert cached_imagenet_weights("resnet50") is None
    path = tmp_path / "models" / imagenet_file("resnet50")
    path.parent.mkdir()
    path.write_bytes(b"h5")
    assert cached_imagenet_weights("resnet50") == path
    assert cached_imagenet_weights("resnet101") is None
    assert imagenet_file("mobilenet_v3_large").startswith(
        "weights_mobilenet_v3_large_224_1.0_float_no_top"
    )


def test_initialize_from_copies_all_but_new_classifiers(tmp_path):
    from keras_deeplab.loading import initialize_from

    source = DeepLabV3(21, variant="torchvision", aux_head=True, **TINY)
    path = tmp_path / "converted.keras"
    source.save(path)
    target = DeepLabV3(4, variant="torchvision", **TINY)
    report = initialize_from(target, path)
    assert report.startswith("init_weights: ") and "head_classifier" in report
    for layer in target.layers:
        if layer.weights and layer.name != "head_classifier":
            for kept, copied in zip(
                source.get_layer(layer.name).weights, layer.weights, strict=True
            ):
                np.testing.assert_array_equal(
                    np.asarray(kept), np.asarray(copied)
                )
    with_aux = DeepLabV3(4, variant="torchvision", aux_head=True, **TINY)
    assert "aux_classifier" in initialize_from(with_aux, path)


def test_initialize_from_refuses_another_layout(tmp_path):
    from keras_deeplab.loading import initialize_from

    path = tmp_path / "converted.keras"
    DeepLabV3(3, variant="torchvision", **TINY).save(path)
    target = DeepLabV3(3, **TINY)  # keras_applications: conv biases
    before = [np.asarray(w) for w in target.weights]
    with pytest.raises(
        ValueError, match="does not fit this model: .*conv1_conv"
    ):
        initialize_from(target, path)
    for old, weight in zip(before, target.weights, strict=True):
        np.testing.assert_array_equal(old, np.asarray(weight))


def test_bfloat16_inference_keeps_float32_ends(tiny_model):
    from keras_deeplab.models.deeplab import FLOAT32_LAYERS
    from keras_deeplab.models.derived import with_precision

    cast = with_precision(tiny_model, "bfloat16")
    assert cast.get_layer("conv4_block2_2_conv").compute_dtype == "bfloat16"
    for layer in cast.layers:
        if layer.name in FLOAT32_LAYERS:
            assert layer.compute_dtype == "float32", layer.name
    images = random_images(2, 65, 65)
    logits = cast(images)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    reference = np.asarray(tiny_model(images))
    agreement = (np.asarray(logits).argmax(-1) == reference.argmax(-1)).mean()
    assert agreement >= 0.9  # random weights: many near-ties
    for kept, copied in zip(tiny_model.weights, cast.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(kept), np.asarray(copied))
    assert with_precision(tiny_model, "float32") is tiny_model
    with pytest.raises(ValueError, match="precision='float16'"):
        with_precision(tiny_model, "float16")


@pytest.mark.parametrize("builder", ["DeepLabV3", "DeepLabV3Plus", "LRASPP"])
def test_builders_show_every_argument_with_its_default(builder):
    """help() and inspect.signature list num_classes, every ModelSpec field
    and build_model's options, with their defaults (generated from the
    dataclass: adding a field shows it without writing it twice)."""
    import dataclasses
    import inspect
    import pydoc

    import keras_deeplab as kd
    from keras_deeplab.spec import ModelSpec

    function = getattr(kd, builder)
    parameters = inspect.signature(function).parameters
    fields = {f.name: f.default for f in dataclasses.fields(ModelSpec)}
    del fields["architecture"]
    if builder == "LRASPP":
        fields["backbone"] = "mobilenet_v3_large"
    expected = {**fields, "input_shape": (None, None, 3)}
    expected.update(dict.fromkeys(("backbone_weights", "weights", "name")))
    assert {name: p.default for name, p in parameters.items()} == expected
    text = pydoc.render_doc(function, renderer=pydoc.plaintext)
    assert "output_stride: int = 16" in text and "class_names" in text
