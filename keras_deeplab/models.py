"""DeepLabV3 model assembly: where the dilated backbone meets the ASPP head."""

import dataclasses
from numbers import Integral
from pathlib import Path

import keras

from keras_deeplab.backbones.resnet import (
    PAPER_BN_MOMENTUM,
    STAGE_BLOCKS,
    load_imagenet_weights,
    resnet_features,
)
from keras_deeplab.errors import UserInputError
from keras_deeplab.heads.aspp import (
    ASPP_FILTERS,
    HEAD_DROPOUT_RATE,
    deeplab_head,
    default_atrous_rates,
    fcn_aux_head,
)
from keras_deeplab.layers import ImagePreprocessing, ResizeToMatch

BACKBONES = {f"resnet{depth}": depth for depth in STAGE_BLOCKS}
MAIN_OUTPUT = "logits"
AUX_OUTPUT = "aux_logits"


def _check_positive_ints(name, values):
    if not values or not all(isinstance(v, Integral) and v > 0 for v in values):
        raise UserInputError(
            f"{name}={values!r} is invalid; expected a non-empty tuple of "
            "positive ints, e.g. (6, 12, 18)."
        )


def _validate(*, num_classes, backbone, input_shape, atrous_rates, weights):
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
    atrous_rates: tuple | None = None,
    multi_grid: tuple = (1, 2, 4),
    image_pooling: bool = True,
    aux_head: bool = False,
    input_shape: tuple = (None, None, 3),
    include_preprocessing: bool = True,
    backbone_weights: str | None = None,
    weights: str | None = None,
    name: str | None = None,
    backbone_width: int = 64,
    head_filters: int = ASPP_FILTERS,
    dropout_rate: float = HEAD_DROPOUT_RATE,
    bn_momentum: float = PAPER_BN_MOMENTUM,
) -> keras.Model:
    """Builds DeepLabV3 (Chen et al., 2017) on a dilated ResNet.

    Args:
        num_classes: int. Number of classes. Defaults to 21 (Pascal VOC).
        backbone: str. "resnet50" or "resnet101". Defaults to "resnet50".
        output_stride: int. 8, 16 or 32. Defaults to 16.
        atrous_rates: tuple of ints or None. ASPP rates; None means (6, 12,
            18) at output stride 16, doubled at 8 and halved at 32.
        multi_grid: tuple of 3 ints. Rate multipliers of the conv5 blocks.
            Defaults to (1, 2, 4).
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
        dropout_rate: float. Dropout before the classifiers. Defaults to 0.1.
        bn_momentum: float. BatchNormalization momentum. Defaults to 0.9997.

    Returns:
        Functional `keras.Model` returning float32 logits (batch, height,
        width, num_classes) at the input size.

    Raises:
        ValueError: for an unsupported argument value.
        FileNotFoundError: for a weights path that does not exist.
    """
    _validate(
        num_classes=num_classes,
        backbone=backbone,
        input_shape=input_shape,
        atrous_rates=atrous_rates,
        weights=weights,
    )
    depth = BACKBONES[backbone]
    images = keras.Input(shape=input_shape, name="images")
    x = (
        ImagePreprocessing(name="preprocess")(images)
        if (include_preprocessing)
        else images
    )
    features = resnet_features(
        x,
        depth=depth,
        output_stride=output_stride,
        multi_grid=multi_grid,
        width=backbone_width,
        bn_momentum=bn_momentum,
    )
    logits = deeplab_head(
        features["conv5"],
        num_classes=num_classes,
        atrous_rates=atrous_rates or default_atrous_rates(output_stride),
        filters=head_filters,
        image_pooling=image_pooling,
        dropout_rate=dropout_rate,
        bn_momentum=bn_momentum,
    )
    outputs = _upsample(logits, images, name=MAIN_OUTPUT)
    if aux_head:
        aux_logits = fcn_aux_head(
            features["conv4"],
            num_classes=num_classes,
            filters=head_filters,
            dropout_rate=dropout_rate,
            bn_momentum=bn_momentum,
        )
        outputs = {
            MAIN_OUTPUT: outputs,
            AUX_OUTPUT: _upsample(aux_logits, images, name=AUX_OUTPUT),
        }
    model = keras.Model(
        images, outputs, name=name or f"deeplabv3_{backbone}_os{output_stride}"
    )
    if backbone_weights is not None:
        load_imagenet_weights(model, depth=depth, weights=backbone_weights)
    if weights is not None:
        model.load_weights(weights)
    return model


def _training_objects():
    # Imported here: the training package imports this module.
    from keras_deeplab.training.metrics import PixelAccuracy
    from keras_deeplab.training.schedules import PolyDecay

    return {
        "keras_deeplab>PixelAccuracy": PixelAccuracy,
        "keras_deeplab>PolyDecay": PolyDecay,
    }


def main_logits(outputs):
    """The segmentation logits of a model call, with or without aux head."""
    return outputs[MAIN_OUTPUT] if isinstance(outputs, dict) else outputs


def _upsample(logits, images, *, name):
    # float32 like the classifier: the logits stay full precision.
    return ResizeToMatch(name=name, dtype="float32")([logits, images])


def model_from_config(config) -> keras.Model:
    """DeepLabV3 as a DeepLabConfig describes it (BN frozen if asked)."""
    model = DeepLabV3(
        config.num_classes,
        backbone=config.backbone,
        output_stride=config.output_stride,
        atrous_rates=config.atrous_rates,
        multi_grid=config.multi_grid,
        image_pooling=config.image_pooling,
        aux_head=config.aux_head,
        backbone_weights=config.backbone_weights,
        backbone_width=config.backbone_width,
        head_filters=config.head_filters,
        dropout_rate=config.dropout_rate,
        bn_momentum=config.bn_momentum,
    )
    if config.freeze_bn:
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                # In Keras 3 a non-trainable BN also runs in inference mode.
                layer.trainable = False
    return model


def with_output_stride(model, config, output_stride: int) -> keras.Model:
    """The same trained weights in a model of another output stride.

    Dilation changes no weight shape, so a model trained at output stride 16
    can be evaluated at 8 (denser features, ~3x the compute; +1-1.5 mIoU in
    the paper). Explicit `config.atrous_rates` are scaled with the stride
    (6, 12, 18 at 16 become 12, 24, 36 at 8); None scales automatically.

    Args:
        model: the trained keras.Model, built from `config`.
        config: DeepLabConfig the model was built (and trained) with.
        output_stride: int. 8, 16 or 32.
    """
    rates = config.atrous_rates
    if rates is not None:
        scale = config.output_stride / output_stride
        rates = tuple(int(rate * scale) for rate in rates)
    rebuilt_config = dataclasses.replace(
        config,
        output_stride=output_stride,
        atrous_rates=rates,
        backbone_weights=None,  # every weight comes from `model`
    ).validate()
    rebuilt = model_from_config(rebuilt_config)
    rebuilt.set_weights(model.get_weights())
    return rebuilt


def load_trained_model(path, config=None) -> keras.Model:
    """Loads a `.keras` model (safe mode) or `.weights.h5` weights.

    Args:
        path: str or Path. A `.keras` file, or a `.weights.h5` file plus the
            `config` it was trained with.
        config: DeepLabConfig or None. Needed for `.weights.h5` only.

    Raises:
        FileNotFoundError: if `path` does not exist.
        ValueError: for another suffix, or weights without a config.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"model file {str(path)!r} does not exist; expected a .keras file "
            "(e.g. work_dir/best.keras) or a .weights.h5 file."
        )
    if path.suffix == ".keras":
        # safe_mode refuses lambdas and arbitrary code in the archive. The
        # training objects are named so a fresh process can rebuild the
        # compiled optimizer and metrics saved with the model.
        return keras.saving.load_model(
            path, safe_mode=True, custom_objects=_training_objects()
        )
    if path.name.endswith(".weights.h5") and config is not None:
        model = model_from_config(config)
        model.load_weights(path)
        return model
    raise UserInputError(
        f"cannot load {str(path)!r}: expected a .keras file, or a "
        ".weights.h5 file together with the CONFIG it was trained with."
    )
