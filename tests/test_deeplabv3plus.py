"""DeepLabV3+: decoder layout, sizes, precision, saving, weights, config, and
VainF checkpoints converted with parity against a PyTorch forward pass.

The export formats and their parity thresholds are covered in tests/export
(its model fixture includes a DeepLabV3+), the CLI chain (train, evaluate,
export, verify-export, predict) by the tiny demo in tests/test_cli.py, JAX
in tests/test_backend_jax.py.
"""

import keras
import numpy as np
import pytest

from keras_deeplab import DeepLabV3, DeepLabV3Plus
from keras_deeplab.config import PRESETS, load_config
from keras_deeplab.loading import initialize_from, model_from_config
from keras_deeplab.models.complexity import model_macs
from keras_deeplab.models.derived import with_output_stride, with_precision
from keras_deeplab.spec import ModelSpec
from tests.helpers import (
    TINY,
    assert_layers_equal,
    random_images,
    saved_resnet50_reference,
)

R50_PARAMS = 39_131_285  # DeepLabV3-ResNet50, 21 classes (test_models)
# The decoder: 1x1 256->48 + BN, 3x3 304->256 + BN, 3x3 256->256 + BN.
DECODER_PARAMS = (
    256 * 48 + 4 * 48 + 9 * 304 * 256 + 4 * 256 + 9 * 256 * 256 + 4 * 256
)


def test_the_builder_names_its_architecture():
    assert DeepLabV3Plus(3, **TINY).spec == ModelSpec(
        architecture="deeplabv3plus", num_classes=3, **TINY
    )


@pytest.mark.parametrize("output_stride", [8, 16])
@pytest.mark.parametrize("variant", ["keras_applications", "torchvision"])
def test_any_input_size_gives_input_size_logits(output_stride, variant):
    model = DeepLabV3Plus(
        3, output_stride=output_stride, variant=variant, **TINY
    )
    for height, width in ((65, 65), (97, 129), (33, 47)):
        logits = model.predict_on_batch(random_images(2, height, width))
        assert logits.shape == (2, height, width, 3)
        assert logits.dtype == np.float32


def test_decoder_meets_conv2_at_its_exact_size():
    model = DeepLabV3Plus(3, output_stride=16, **TINY)
    probe = keras.Model(
        model.input,
        [
            model.get_layer("conv2_block3_out").output,
            model.get_layer("decoder_upsample").output,
            model.get_layer("decoder_concat").output,
            model.get_layer("head_classifier").output,
        ],
    )
    conv2, upsampled, concat, logits = probe.predict_on_batch(
        random_images(1, 97, 129)
    )
    # Stride 4 of 97x129 is 25x33; stride 16 (7x9) does not divide it.
    assert conv2.shape[1:3] == upsampled.shape[1:3] == (25, 33)
    assert concat.shape[-1] == 48 + TINY["head_filters"]
    assert logits.shape[1:3] == (25, 33)


def test_variants_have_their_decoder():
    paper = DeepLabV3Plus(3, **TINY)
    vainf = DeepLabV3Plus(3, variant="torchvision", **TINY)
    names = {layer.name for layer in paper.layers}
    assert {"decoder_conv1_conv", "decoder_conv2_conv"} <= names
    vainf_names = {layer.name for layer in vainf.layers}
    assert "decoder_conv1_conv" in vainf_names
    assert "decoder_conv2_conv" not in vainf_names
    assert "head_conv_conv" not in vainf_names  # torchvision V3's extra conv
    assert paper.name == "deeplabv3plus_resnet50_os16"


def test_mixed_precision_keeps_float32_logits():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = DeepLabV3Plus(3, aux_head=True, **TINY)
    finally:
        keras.config.set_dtype_policy(previous)
    outputs = model(random_images(1, 65, 65))
    assert outputs["logits"].dtype == "float32"
    assert outputs["aux_logits"].dtype == "float32"
    assert model.get_layer("decoder_conv1_conv").compute_dtype == "bfloat16"
    bf16 = with_precision(DeepLabV3Plus(3, **TINY), "bfloat16")
    assert bf16(random_images(1, 33, 33)).dtype == "float32"


def test_safe_mode_round_trip(tmp_path):
    model = DeepLabV3Plus(3, **TINY)
    path = tmp_path / "plus.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    images = random_images(2, 65, 47)
    np.testing.assert_allclose(
        loaded.predict_on_batch(images),
        model.predict_on_batch(images),
        atol=1e-5,
    )


def test_imagenet_weights_load_by_name(tmp_path):
    reference, path = saved_resnet50_reference(tmp_path)
    model = DeepLabV3Plus(21, output_stride=8, backbone_weights=str(path))
    assert_layers_equal(
        model,
        reference,
        ("conv1_conv", "conv2_block3_3_conv", "conv5_block3_3_bn"),
    )
    assert model.count_params() == R50_PARAMS + DECODER_PARAMS


def test_complexity_counts_the_decoder():
    shape = (65, 65, 3)
    plus = DeepLabV3Plus(3, input_shape=shape, **TINY)
    v3 = DeepLabV3(3, input_shape=shape, **TINY)
    low, filters = 4 * TINY["backbone_width"], TINY["head_filters"]
    # At stride 4 (17x17): 1x1 low->48, 3x3 (48+filters)->filters, 3x3
    # filters->filters; the classifier moves from stride 16 (5x5) to 4.
    decoder = (
        17
        * 17
        * (low * 48 + 9 * (48 + filters) * filters + 9 * filters * filters)
    )
    classifier = (17 * 17 - 5 * 5) * filters * 3
    assert model_macs(plus) - model_macs(v3) == decoder + classifier


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_takes_deeplabv3plus(preset):
    config = load_config(
        preset, ["architecture=deeplabv3plus", "data_dir=/datasets"]
    )
    assert config.architecture == "deeplabv3plus"


def test_config_builds_and_moves_deeplabv3plus():
    config = load_config(
        "demo",
        [
            "architecture=deeplabv3plus",
            "backbone_width=8",
            "head_filters=16",
            "output_stride=16",
        ],
    )
    model = model_from_config(config)
    assert model.name.startswith("deeplabv3plus_")
    at_os8 = with_output_stride(model, 8)
    assert at_os8.name.startswith("deeplabv3plus_resnet50_os8")
    images = random_images(1, 65, 65)
    assert at_os8.predict_on_batch(images).shape == (1, 65, 65, 5)


def test_unknown_architecture_is_named():
    with pytest.raises(ValueError, match="architecture"):
        load_config("demo", ["architecture=deeplabv4"])


def test_deeplabv3plus_starts_from_a_trained_deeplabv3(tmp_path):
    source = DeepLabV3(3, **TINY)
    path = tmp_path / "v3.keras"
    source.save(path)
    target = DeepLabV3Plus(3, **TINY)
    report = initialize_from(target, path)
    assert "decoder_conv1_conv" in report
    np.testing.assert_array_equal(
        target.get_layer("aspp_project_conv").get_weights()[0],
        source.get_layer("aspp_project_conv").get_weights()[0],
    )


@pytest.fixture(scope="module")
def vainf_plus_file(tmp_path_factory):
    """A VainF DeepLabV3+-ResNet50 checkpoint of the reference model."""
    from tests.torch_reference import torch, vainf_deeplabv3plus

    reference = vainf_deeplabv3plus("deeplabv3plus_resnet50", output_stride=16)
    path = tmp_path_factory.mktemp("vainf") / "best_deeplabv3plus.pth"
    torch.save(
        {
            "cur_itrs": 30000,
            "model_state": reference.state_dict(),
            "best_score": np.float64(0.772),
        },
        path,
    )
    return path, reference.state_dict()


@pytest.mark.slow
@pytest.mark.parametrize("output_stride", [8, 16])
def test_vainf_deeplabv3plus_matches_its_pytorch_forward(
    vainf_plus_file, output_stride
):
    from keras_deeplab.convert import convert_torchvision
    from tests.test_convert import assert_parity
    from tests.torch_reference import torch_logits, vainf_deeplabv3plus

    path, state = vainf_plus_file
    reference = vainf_deeplabv3plus(
        "deeplabv3plus_resnet50", output_stride=output_stride
    )
    reference.load_state_dict(state)
    converted = convert_torchvision(
        path,
        arch="deeplabv3plus_resnet50",
        output_stride=output_stride,
    )
    assert converted.name.startswith("deeplabv3plus_resnet50")
    images = random_images(2, 97, 129, seed=output_stride)
    assert_parity(
        torch_logits(reference, images)["out"],
        converted.predict_on_batch(images),
    )
    trainable = sum(int(np.prod(w.shape)) for w in converted.trainable_weights)
    assert trainable == sum(p.numel() for p in reference.parameters())


@pytest.mark.slow
def test_a_vainf_deeplabv3plus_file_is_not_a_deeplabv3(vainf_plus_file):
    from keras_deeplab.convert import convert_torchvision
    from keras_deeplab.utils.errors import UserInputError

    path, _ = vainf_plus_file
    with pytest.raises(UserInputError, match="deeplabv3plus_resnet50"):
        convert_torchvision(path, arch="deeplabv3_resnet50")


def test_deeplabv3_stays_the_default():
    assert load_config("demo").architecture == "deeplabv3"
