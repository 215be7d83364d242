"""Dilated ResNet: stage plan, dilation, keras.applications parity, weights."""

import keras
import numpy as np
import pytest

from keras_deeplab.backbones import imagenet, resnet
from keras_deeplab.backbones.imagenet import (
    load_imagenet_weights,
    transfer_weights,
)
from keras_deeplab.backbones.resnet import (
    block_rates,
    dilated_resnet,
    stage_plan,
)
from tests.helpers import (
    assert_layers_equal,
    random_images,
    saved_resnet50_reference,
)

RESNET50_NOTOP_PARAMS = 23_587_712
RESNET101_NOTOP_PARAMS = 42_658_176


def test_stage_plan_per_output_stride():
    assert stage_plan(32) == ((1, 1), (2, 1), (2, 1), (2, 1))
    assert stage_plan(16) == ((1, 1), (2, 1), (2, 1), (1, 2))
    assert stage_plan(8) == ((1, 1), (2, 1), (1, 2), (1, 4))


def test_stage_plan_rejects_other_strides_with_a_fix():
    with pytest.raises(ValueError) as info:
        stage_plan(12)
    assert str(info.value) == (
        "output_stride=12 is not supported; expected one of (8, 16, 32). "
        "Pass output_stride=16."
    )


def test_block_rates_apply_multi_grid_to_the_last_stage():
    assert block_rates(16, (1, 2, 4)) == (
        (1, 1, 1),
        (1, 1, 1, 1),
        (1,) * 6,
        (2, 4, 8),
    )
    assert block_rates(8, (1, 2, 4))[2:] == ((2,) * 6, (4, 8, 16))
    assert block_rates(8, (1, 2, 4), depth=101)[2] == (2,) * 23


def test_torchvision_first_dilated_block_keeps_the_previous_rate():
    """torchvision's replace_stride_with_dilation: OS8 is [F, T, T], OS16
    is [F, F, T]; the first block of a dilated layer keeps the old rate."""
    assert block_rates(8, (1, 1, 1), variant="torchvision")[2:] == (
        (1, 2, 2, 2, 2, 2),
        (2, 4, 4),
    )
    assert block_rates(16, (1, 1, 1), variant="torchvision")[2:] == (
        (1,) * 6,
        (1, 2, 2),
    )
    assert block_rates(32, (1, 1, 1), variant="torchvision")[3] == (1, 1, 1)


def test_torchvision_layout_strides_the_3x3_with_symmetric_padding():
    model = dilated_resnet(50, variant="torchvision", width=8)
    for name in ("conv3_block1", "conv4_block1", "conv5_block1"):
        assert model.get_layer(f"{name}_1_conv").strides == (1, 1)
        assert model.get_layer(f"{name}_2_conv").strides == (2, 2)
        assert model.get_layer(f"{name}_2_conv").padding == "valid"
        assert model.get_layer(f"{name}_2_pad").padding == ((1, 1), (1, 1))
    convs = [x for x in model.layers if isinstance(x, keras.layers.Conv2D)]
    assert not any(layer.use_bias for layer in convs)
    assert model.get_layer("conv1_bn").epsilon == resnet.TORCH_BN_EPSILON
    # Even and odd sizes give the same feature sizes as the v1 layout.
    for size, expected in ((64, 2), (65, 3)):
        assert model(random_images(1, size, size)).shape[1] == expected


@pytest.mark.parametrize("multi_grid", [(1, 2), (0, 1, 1)])
def test_block_rates_reject_bad_multi_grid(multi_grid):
    with pytest.raises(ValueError, match="multi_grid="):
        block_rates(16, multi_grid)


def _conv(model, name):
    return model.get_layer(name)


@pytest.mark.parametrize(
    ("output_stride", "conv4_rate", "conv5_rates"),
    [(32, 1, (1, 2, 4)), (16, 1, (2, 4, 8)), (8, 2, (4, 8, 16))],
)
def test_layers_are_dilated_not_strided(output_stride, conv4_rate, conv5_rates):
    model = dilated_resnet(
        50, output_stride=output_stride, multi_grid=(1, 2, 4), width=8
    )
    for block in range(1, 7):
        layer = _conv(model, f"conv4_block{block}_2_conv")
        assert layer.dilation_rate == (conv4_rate, conv4_rate)
    for block, rate in enumerate(conv5_rates, start=1):
        assert _conv(model, f"conv5_block{block}_2_conv").dilation_rate == (
            rate,
            rate,
        )
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            assert max(layer.strides) == 1 or max(layer.dilation_rate) == 1


@pytest.mark.parametrize(
    ("output_stride", "expected"), [(8, 65), (16, 33), (32, 17)]
)
def test_feature_size_at_513(output_stride, expected):
    model = dilated_resnet(50, output_stride=output_stride, width=4)
    features = model(random_images(1, 513, 513))
    assert features.shape == (1, expected, expected, 128)


def _layer_shapes(model):
    """{layer name: weight shapes} of every layer but the input."""
    return {
        layer.name: [tuple(w.shape) for w in layer.weights]
        for layer in model.layers
        if not isinstance(layer, keras.layers.InputLayer)
    }


def _parity_check(depth, builder, expected_params):
    reference = builder(include_top=False, weights=None)
    ours = dilated_resnet(depth)
    assert ours.count_params() == reference.count_params() == expected_params
    assert _layer_shapes(ours) == _layer_shapes(reference)
    transfer_weights(reference, ours)
    images = keras.applications.resnet.preprocess_input(
        random_images(2, 64, 80)
    )
    np.testing.assert_allclose(
        np.asarray(ours(images)), np.asarray(reference(images)), atol=1e-5
    )


def test_resnet50_matches_keras_applications():
    _parity_check(50, keras.applications.ResNet50, RESNET50_NOTOP_PARAMS)


@pytest.mark.slow
def test_resnet101_matches_keras_applications():
    _parity_check(101, keras.applications.ResNet101, RESNET101_NOTOP_PARAMS)


def test_same_weights_serve_every_output_stride():
    shapes = [
        [tuple(w.shape) for w in dilated_resnet(50, output_stride=s).weights]
        for s in (8, 16, 32)
    ]
    assert shapes[0] == shapes[1] == shapes[2]


def test_transfer_refuses_mismatched_models_and_copies_nothing():
    source = dilated_resnet(50, width=8)
    target = dilated_resnet(50, width=4)
    before = target.get_layer("conv1_conv").get_weights()[0].copy()
    with pytest.raises(ValueError) as info:
        transfer_weights(source, target)
    message = str(info.value)
    assert "0 layers missing" in message
    assert "106 with other shapes" in message  # 53 convs + 53 BN layers
    assert "conv1_conv: [(7, 7, 3, 8), (8,)] vs [(7, 7, 3, 4), (4,)]" in message
    after = target.get_layer("conv1_conv").get_weights()[0]
    np.testing.assert_array_equal(before, after)


def test_transfer_lists_missing_layers():
    source = dilated_resnet(101, width=4)
    target = dilated_resnet(50, width=4)
    with pytest.raises(ValueError, match="conv4_block23_3_bn"):
        transfer_weights(source, target)


def test_missing_weights_file_is_a_clear_error(tmp_path):
    missing = tmp_path / "nope_notop.h5"
    with pytest.raises(FileNotFoundError, match="nope_notop.h5"):
        dilated_resnet(50, weights=str(missing))


def test_local_weights_file_loads_by_name(tmp_path):
    reference, path = saved_resnet50_reference(tmp_path)
    ours = dilated_resnet(50, output_stride=8, weights=str(path))
    assert_layers_equal(
        ours,
        reference,
        ("conv1_conv", "conv4_block6_2_conv", "conv5_block3_3_bn"),
    )


def test_imagenet_goes_through_keras_download_cache(tmp_path, monkeypatch):
    reference, path = saved_resnet50_reference(tmp_path)
    requested = []

    def fake_applications_builder(*, include_top, weights, **options):
        # What keras.applications does for "imagenet": fetch through its
        # cached downloader, then load. The network is not reachable here.
        requested.append((include_top, weights))
        model = keras.applications.ResNet50(include_top=False, weights=None)
        model.load_weights(path)
        return model

    monkeypatch.setitem(
        imagenet._REFERENCES,
        "resnet50",
        (fake_applications_builder, imagenet.imagenet_file("resnet50")),
    )
    model = dilated_resnet(50, width=64)
    load_imagenet_weights(model, backbone="resnet50")
    assert requested == [(False, "imagenet")]
    np.testing.assert_array_equal(
        model.get_layer("conv1_conv").get_weights()[0],
        reference.get_layer("conv1_conv").get_weights()[0],
    )
