"""MAC counting: exact on one layer, and equal to torchvision's own figures."""

import keras
import pytest

from keras_deeplab import DeepLabV3, dilated_resnet
from keras_deeplab.models.complexity import describe, model_macs
from keras_deeplab.models.deeplab import build_model
from keras_deeplab.spec import ModelSpec

# torchvision publishes each model's forward cost in its weights metadata
# ("_ops", GMACs of one 520x520 image for segmentation, 224x224 for
# classification), to three decimals.
_PUBLISHED_DECIMALS = 3


def test_one_dilated_conv_counts_kernel_taps_once_per_output():
    inputs = keras.Input((17, 19, 5))
    outputs = keras.layers.Conv2D(
        7, 3, dilation_rate=4, padding="same", use_bias=False
    )(inputs)
    # Dilation spreads the taps but does not add any: 9 per output value.
    assert model_macs(keras.Model(inputs, outputs)) == 17 * 19 * 7 * 9 * 5


@pytest.mark.parametrize(
    ("arch", "weights_class"),
    [
        pytest.param(
            "deeplabv3_resnet50",
            "DeepLabV3_ResNet50_Weights",
            marks=pytest.mark.slow,
        ),
        pytest.param(
            "deeplabv3_resnet101",
            "DeepLabV3_ResNet101_Weights",
            marks=pytest.mark.slow,
        ),
        (
            "deeplabv3_mobilenet_v3_large",
            "DeepLabV3_MobileNet_V3_Large_Weights",
        ),
        ("lraspp_mobilenet_v3_large", "LRASPP_MobileNet_V3_Large_Weights"),
    ],
)
def test_torchvision_variant_costs_what_torchvision_publishes(
    arch, weights_class
):
    from keras_deeplab.convert import ARCHS
    from tests.torch_reference import import_torchvision

    segmentation = import_torchvision().models.segmentation
    weights = getattr(segmentation, weights_class).COCO_WITH_VOC_LABELS_V1
    architecture, backbone = ARCHS[arch]
    spec = ModelSpec(
        architecture=architecture,
        backbone=backbone,
        num_classes=len(weights.meta["categories"]),
        variant="torchvision",
        # torchvision's ResNets run at 8, its MobileNetV3 at 16
        output_stride=16 if backbone == "mobilenet_v3_large" else 8,
        aux_head=architecture != "lraspp",
    )
    model = build_model(spec, input_shape=(520, 520, 3))
    gmacs = round(model_macs(model) / 1e9, _PUBLISHED_DECIMALS)
    assert gmacs == weights.meta["_ops"]


@pytest.mark.slow
def test_resnet50_v15_costs_what_torchvision_publishes():
    from tests.torch_reference import import_torchvision

    weights = import_torchvision().models.ResNet50_Weights.IMAGENET1K_V1
    backbone = dilated_resnet(
        50, variant="torchvision", input_shape=(224, 224, 3)
    )
    classifier_macs = 2048 * 1000  # the fc layer our backbone leaves out
    gmacs = (model_macs(backbone) + classifier_macs) / 1e9
    assert round(gmacs, _PUBLISHED_DECIMALS) == weights.meta["_ops"]


def test_dynamic_shape_is_refused_with_a_fix():
    with pytest.raises(ValueError, match="build the model with a fixed"):
        model_macs(dilated_resnet(50, width=4))


def test_describe_names_parameters_and_cost():
    model = DeepLabV3(3, input_shape=(33, 33, 3), backbone_width=4)
    line = describe(model)
    assert line.startswith("deeplabv3_resnet50_os16: ")
    assert f"{model.count_params():,} parameters" in line
    assert "GMACs at 33x33" in line
