"""DeepLabV3 model assembly: where the dilated backbone meets the ASPP head."""

import dataclasses
import zipfile
from numbers import Integral
from pathlib import Path

import keras

from keras_deeplab.backbones.imagenet import (
    check_imagenet_weights_fit,
    load_imagenet_weights,
)
from keras_deeplab.backbones.resnet import (
    PAPER_BN_MOMENTUM,
    STAGE_BLOCKS,
    VARIANTS,
    resnet_features,
)
from keras_deeplab.errors import UserInputError, first_line
from keras_deeplab.heads.aspp import (
    ASPP_FILTERS,
    AUX_CLASSIFIER,
    HEAD_CLASSIFIER,
    HEAD_DROPOUT_RATE,
    deeplab_head,
    deeplabv3plus_head,
    default_atrous_rates,
    fcn_aux_head,
)
from keras_deeplab.layers import ImagePreprocessing, ResizeToMatch

BACKBONES = {f"resnet{depth}": depth for depth in STAGE_BLOCKS}
MAIN_OUTPUT = "logits"
AUX_OUTPUT = "aux_logits"
PREPROCESS = "preprocess"
# Built float32 whatever the dtype policy: the input normalisation (exact
# mean subtraction) and the logits (never half precision).
FLOAT32_LAYERS = (PREPROCESS, HEAD_CLASSIFIER, AUX_CLASSIFIER, MAIN_OUTPUT)
FLOAT32_LAYERS += (AUX_OUTPUT,)
PRECISIONS = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class _VariantHead:
    """What a layout changes above the backbone, and its defaults."""

    preprocessing: str  # ImagePreprocessing mode of the pretrained weights
    multi_grid: tuple  # conv5 rate multipliers when none are given
    dropout_rate: float  # after the ASPP projection
    extra_conv: bool  # torchvision's 3x3 conv before the classifier
    decoder_convs: int  # DeepLabV3+: 3x3 convs of the decoder


_VARIANT_HEADS = {
    "keras_applications": _VariantHead(
        preprocessing="caffe",
        multi_grid=(1, 2, 4),
        dropout_rate=HEAD_DROPOUT_RATE,
        extra_conv=False,
        decoder_convs=2,  # the paper's best decoder (Table 3)
    ),
    "torchvision": _VariantHead(
        preprocessing="torch",
        multi_grid=(1, 1, 1),
        dropout_rate=0.5,  # torchvision's ASPP projection
        extra_conv=True,
        # VainF's DeepLabV3Plus-Pytorch, which wraps torchvision's ResNet.
        decoder_convs=1,
    ),
}


def _check_positive_ints(name, values):
    if not values or not all(isinstance(v, Integral) and v > 0 for v in values):
        raise UserInputError(
            f"{name}={values!r} is invalid; expected a non-empty tuple of "
            "positive ints, e.g. (6, 12, 18)."
        )


def _validate(
    *,
    num_classes,
    backbone,
    variant,
    input_shape,
    atrous_rates,
    backbone_weights,
    weights,
):
    if variant not in VARIANTS:
        raise UserInputError(
            f"variant={variant!r} is not supported; expected one of {VARIANTS}."
        )
    check_imagenet_weights_fit(backbone_weights, variant)
    if not isinstance(num_classes, Integral) or num_classes < 1:
        raise UserInputError(
            f"num_classes={num_classes!r} is invalid; expected an int >= 1, "
            "e.g. num_classes=21 for Pascal VOC."
        )
    if backbone not in BACKBONES:
        raise UserInputError(
            f"backbone={backbone!r} is not supported; expected one of "
            f"{tuple(BACKBONES)}."
        )
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise UserInputError(
            f"input_shape={tuple(input_shape)!r} is invalid; expected "
            "(height, width, 3) with None for a dynamic size, channels last."
        )
    if atrous_rates is not None:
        _check_positive_ints("atrous_rates", tuple(atrous_rates))
    if weights is not None and not Path(weights).is_file():
        raise FileNotFoundError(
            f"weights={str(weights)!r} does not exist; expected the path of "
            "a DeepLabV3 .weights.h5 file saved by model.save_weights()."
        )


def DeepLabV3(  # noqa: N802 - named like the keras.applications builders
    num_classes: int = 21,
    *,
    backbone: str = "resnet50",
    output_stride: int = 16,
    variant: str = "keras_applications",
    atrous_rates: tuple | None = None,
    multi_grid: tuple | None = None,
    image_pooling: bool = True,
    aux_head: bool = False,
    input_shape: tuple = (None, None, 3),
    include_preprocessing: bool = True,
    backbone_weights: str | None = None,
    weights: str | None = None,
    name: str | None = None,
    backbone_width: int = 64,
    head_filters: int = ASPP_FILTERS,
    dropout_rate: float | None = None,
    bn_momentum: float = PAPER_BN_MOMENTUM,
) -> keras.Model:
    """Builds DeepLabV3 (Chen et al., 2017) on a dilated ResNet.

    Args:
        num_classes: int. Number of classes. Defaults to 21 (Pascal VOC).
        backbone: str. "resnet50" or "resnet101". Defaults to "resnet50".
        output_stride: int. 8, 16 or 32. Defaults to 16.
        variant: str. "keras_applications" (default): ResNet v1 with
            keras.applications' ImageNet weights and caffe preprocessing,
            the head of the paper. "torchvision": ResNet v1.5, torchvision's
            head (extra 3x3 conv, dropout 0.5) and preprocessing (RGB / 255,
            mean/std), the layout `keras_deeplab.convert` fills with a
            torchvision or VainF DeepLabV3 checkpoint.
        atrous_rates: tuple of ints or None. ASPP rates; None means (6, 12,
            18) at output stride 16, doubled at 8 and halved at 32.
        multi_grid: tuple of 3 ints or None. Rate multipliers of the conv5
            blocks; None is (1, 2, 4), or (1, 1, 1) for "torchvision".
        image_pooling: bool. Add the image-pooling ASPP branch.
        aux_head: bool. Add an FCN head on conv4; the model then returns a
            dict {"logits": ..., "aux_logits": ...}. Defaults to False.
        input_shape: tuple. (height, width, 3); None for any size.
        include_preprocessing: bool. If True the model takes RGB images in
            [0, 255] (uint8 or float) and normalises them itself; if False
            it takes `keras_deeplab.data.preprocess_images` output.
        backbone_weights: None, "imagenet" or the path of a keras.applications
            `..._notop.h5` file; loaded into the backbone by layer name.
        weights: None or the path of a `.weights.h5` file of this model.
        name: str or None. Model name; None gives
            "deeplabv3_{backbone}_os{output_stride}".
        backbone_width: int. 64 is the real ResNet; smaller values give fast
            test models. Defaults to 64.
        head_filters: int. Filters of ASPP and the aux head. Defaults to 256.
        dropout_rate: float or None. Dropout after the ASPP projection; None
            is 0.1, or 0.5 for "torchvision". The aux head drops 0.1.
        bn_momentum: float. BatchNormalization momentum. Defaults to 0.9997.

    Returns:
        Functional `keras.Model` returning float32 logits (batch, height,
        width, num_classes) at the input size.

    Raises:
        ValueError: for an unsupported argument value.
        FileNotFoundError: for a weights path that does not exist.
    """
    # locals() is exactly the arguments: nothing is assigned before it.
    return _deeplab("deeplabv3", **locals())


def DeepLabV3Plus(  # noqa: N802 - named like the keras.applications builders
    num_classes: int = 21,
    *,
    backbone: str = "resnet50",
    output_stride: int = 16,
    variant: str = "keras_applications",
    atrous_rates: tuple | None = None,
    multi_grid: tuple | None = None,
    image_pooling: bool = True,
    aux_head: bool = False,
    input_shape: tuple = (None, None, 3),
    include_preprocessing: bool = True,
    backbone_weights: str | None = None,
    weights: str | None = None,
    name: str | None = None,
    backbone_width: int = 64,
    head_filters: int = ASPP_FILTERS,
    dropout_rate: float | None = None,
    bn_momentum: float = PAPER_BN_MOMENTUM,
) -> keras.Model:
    """Builds DeepLabV3+ (Chen et al., 2018) on a dilated ResNet.

    DeepLabV3's encoder (the same backbone and ASPP, at output stride 8 or
    16 on any input size) plus a decoder on the stride-4 features of conv2:
    1x1 conv to 48 channels, the ASPP output upsampled to their exact size,
    concatenation, 3x3 convs of `head_filters`, the 1x1 classifier, and
    bilinear upsampling to the input size. The "keras_applications" variant
    has the paper's two decoder convs; "torchvision" has VainF's
    DeepLabV3Plus-Pytorch layout (one decoder conv), which
    `keras_deeplab.convert` fills with a VainF checkpoint.

    Args: as `DeepLabV3`; `dropout_rate` None is 0.1 for both variants, and
    `name` None gives "deeplabv3plus_{backbone}_os{output_stride}".

    Returns:
        Functional `keras.Model` returning float32 logits (batch, height,
        width, num_classes) at the input size.
    """
    # locals() is exactly the arguments: nothing is assigned before it.
    return _deeplab("deeplabv3plus", **locals())


def _deeplab(
    architecture,
    *,
    num_classes,
    backbone,
    output_stride,
    variant,
    atrous_rates,
    multi_grid,
    image_pooling,
    aux_head,
    input_shape,
    include_preprocessing,
    backbone_weights,
    weights,
    name,
    backbone_width,
    head_filters,
    dropout_rate,
    bn_momentum,
):
    _validate(
        num_classes=num_classes,
        backbone=backbone,
        variant=variant,
        input_shape=input_shape,
        atrous_rates=atrous_rates,
        backbone_weights=backbone_weights,
        weights=weights,
    )
    depth = BACKBONES[backbone]
    head = _VARIANT_HEADS[variant]
    images = keras.Input(shape=input_shape, name="images")
    x = images
    if include_preprocessing:
        x = ImagePreprocessing(head.preprocessing, name=PREPROCESS)(x)
    features = resnet_features(
        x,
        depth=depth,
        output_stride=output_stride,
        multi_grid=multi_grid or head.multi_grid,
        width=backbone_width,
        bn_momentum=bn_momentum,
        variant=variant,
    )
    plus = architecture == "deeplabv3plus"
    if dropout_rate is None:
        # Every DeepLabV3+ drops 0.1 after ASPP (research/deeplab, VainF).
        dropout_rate = HEAD_DROPOUT_RATE if plus else head.dropout_rate
    head_options = {
        "num_classes": num_classes,
        "atrous_rates": atrous_rates or default_atrous_rates(output_stride),
        "filters": head_filters,
        "image_pooling": image_pooling,
        "dropout_rate": dropout_rate,
        "bn_momentum": bn_momentum,
    }
    if plus:
        logits = deeplabv3plus_head(
            features["conv5"],
            features["conv2"],
            decoder_convs=head.decoder_convs,
            **head_options,
        )
    else:
        logits = deeplab_head(
            features["conv5"], extra_conv=head.extra_conv, **head_options
        )
    outputs = _upsample(logits, images, name=MAIN_OUTPUT)
    if aux_head:
        aux_logits = fcn_aux_head(
            features["conv4"],
            num_classes=num_classes,
            filters=head_filters,
            bn_momentum=bn_momentum,
        )
        outputs = {
            MAIN_OUTPUT: outputs,
            AUX_OUTPUT: _upsample(aux_logits, images, name=AUX_OUTPUT),
        }
    suffix = "" if variant == "keras_applications" else f"_{variant}"
    model = keras.Model(
        images,
        outputs,
        name=name or f"{architecture}_{backbone}_os{output_stride}{suffix}",
    )
    if backbone_weights is not None:
        load_imagenet_weights(
            model, depth=depth, weights=backbone_weights, variant=variant
        )
    if weights is not None:
        load_weights(model, weights)
    return model


BUILDERS = {"deeplabv3": DeepLabV3, "deeplabv3plus": DeepLabV3Plus}


def inference_model(model) -> keras.Model:
    """The model that returns the segmentation logits tensor, and only that.

    A model built with `aux_head=True` returns {"logits", "aux_logits"} for
    training; every load and export boundary (`load_trained_model`, the
    exporters, evaluation) calls this once, so everything after it sees one
    float32 logits tensor. Layers and weights are shared, not copied.
    """
    if not isinstance(model.output, dict):
        return model
    return keras.Model(model.input, model.output[MAIN_OUTPUT], name=model.name)


def with_precision(model, precision: str) -> keras.Model:
    """The same model computing in "bfloat16" (or "float32"), for inference.

    Every layer but the input normalisation and the logits (FLOAT32_LAYERS)
    runs under the `mixed_bfloat16` policy: weights stay float32, compute is
    bf16, the logits come back float32. Worth it on CPUs with AVX512_BF16 or
    AMX and on accelerators; elsewhere bf16 is emulated and slower.

    Args:
        model: a DeepLabV3 keras.Model.
        precision: str. "bfloat16" or "float32" (returns `model` itself).

    Returns:
        A new model with copies of the weights (float32 is `model` itself).
    """
    if precision not in PRECISIONS:
        raise UserInputError(
            f"precision={precision!r} is not supported; expected one of "
            f"{PRECISIONS}."
        )
    if precision == "float32":
        return model
    policy = keras.dtype_policies.DTypePolicy("mixed_bfloat16")

    def clone_layer(layer):
        config = layer.get_config()
        if layer.name not in FLOAT32_LAYERS:
            config["dtype"] = policy
        return layer.__class__.from_config(config)

    clone = keras.models.clone_model(model, clone_function=clone_layer)
    clone.set_weights(model.get_weights())
    return clone


def _upsample(logits, images, *, name):
    # float32 like the classifier: the logits stay full precision.
    return ResizeToMatch(name=name, dtype="float32")([logits, images])


# What Keras raises for archives it cannot rebuild: safe-mode refusals
# (ValueError), unknown classes (TypeError), broken configs (KeyError), bad
# zip members and HDF5 weights (OSError, BadZipFile).
MODEL_FILE_ERRORS = (
    ValueError,
    TypeError,
    KeyError,
    OSError,
    zipfile.BadZipFile,
)


def load_weights(model, path):
    """`model.load_weights(path)` with a clear error for a file that does
    not fit (another architecture, another config, a damaged file)."""
    try:
        model.load_weights(path)
    except MODEL_FILE_ERRORS as err:
        raise UserInputError(
            f"weights file {str(path)!r} does not load into {model.name} "
            f"({first_line(err)}); expected weights saved from a model "
            "with the same backbone, variant, head and num_classes."
        ) from err
