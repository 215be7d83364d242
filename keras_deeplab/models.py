"""DeepLabV3 model assembly: where the dilated backbone meets the ASPP head."""

import dataclasses
import zipfile
from numbers import Integral
from pathlib import Path

import keras

from keras_deeplab.backbones.resnet import (
    PAPER_BN_MOMENTUM,
    STAGE_BLOCKS,
    VARIANTS,
    check_imagenet_weights_fit,
    load_imagenet_weights,
    resnet_features,
)
from keras_deeplab.errors import UserInputError
from keras_deeplab.heads.aspp import (
    ASPP_FILTERS,
    AUX_CLASSIFIER,
    HEAD_CLASSIFIER,
    HEAD_DROPOUT_RATE,
    deeplab_head,
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


_VARIANT_HEADS = {
    "keras_applications": _VariantHead(
        preprocessing="caffe",
        multi_grid=(1, 2, 4),
        dropout_rate=HEAD_DROPOUT_RATE,
        extra_conv=False,
    ),
    "torchvision": _VariantHead(
        preprocessing="torch",
        multi_grid=(1, 1, 1),
        dropout_rate=0.5,  # torchvision's ASPP projection
        extra_conv=True,
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
    logits = deeplab_head(
        features["conv5"],
        num_classes=num_classes,
        atrous_rates=atrous_rates or default_atrous_rates(output_stride),
        filters=head_filters,
        image_pooling=image_pooling,
        dropout_rate=(
            head.dropout_rate if dropout_rate is None else dropout_rate
        ),
        extra_conv=head.extra_conv,
        bn_momentum=bn_momentum,
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
        name=name or f"deeplabv3_{backbone}_os{output_stride}{suffix}",
    )
    if backbone_weights is not None:
        load_imagenet_weights(
            model, depth=depth, weights=backbone_weights, variant=variant
        )
    if weights is not None:
        load_weights(model, weights)
    return model


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


def model_from_config(config, *, input_shape=(None, None, 3)) -> keras.Model:
    """DeepLabV3 as a DeepLabConfig describes it (BN frozen if asked)."""
    model = DeepLabV3(
        config.num_classes,
        input_shape=input_shape,
        backbone=config.backbone,
        output_stride=config.output_stride,
        variant=config.variant,
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
    if config.init_weights is not None:
        report = initialize_from(model, config.init_weights)
        print(report, flush=True)
    if config.freeze_bn:
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                # In Keras 3 a non-trainable BN also runs in inference mode.
                layer.trainable = False
    return model


# Layers that may start from scratch when initialising from another model: the
# classifiers when num_classes differs, the aux head when the source had none.
_NEW_WHEN_RESHAPED = (HEAD_CLASSIFIER, AUX_CLASSIFIER)
_NEW_WHEN_ABSENT = ("aux_head_conv", "aux_head_bn", AUX_CLASSIFIER)


def initialize_from(model, path) -> str:
    """Copies the weights of a trained `.keras` model into `model` by name.

    For fine-tuning a trained or converted model (`convert-torchvision`) on
    other data: every weighted layer must exist in the source with the same
    shapes, except the classifiers, which start afresh when `num_classes`
    differs, and the aux head, which starts afresh when the source has none.
    Nothing is copied unless all layers fit.

    Args:
        model: the keras.Model to initialise (same backbone and variant).
        path: str or Path. A `.keras` model file (loaded in safe mode).

    Returns:
        One line saying what was copied and what starts afresh.

    Raises:
        FileNotFoundError: if `path` does not exist.
        UserInputError: listing the layers that do not fit.
    """
    path = _existing_model_file(path)
    if path.suffix != ".keras":
        raise UserInputError(
            f"init_weights {str(path)!r} must be a .keras model file (e.g. "
            "from convert-torchvision or a run's best.keras)."
        )
    loaded = _load_keras(path)
    source = {layer.name: layer for layer in loaded.layers}
    pairs, fresh, problems = [], [], []
    for layer in (layer for layer in model.layers if layer.weights):
        counterpart = source.get(layer.name)
        shapes = [tuple(w.shape) for w in layer.weights]
        if counterpart is None:
            (fresh if layer.name in _NEW_WHEN_ABSENT else problems).append(
                f"{layer.name}: absent"
            )
            continue
        source_shapes = [tuple(w.shape) for w in counterpart.weights]
        if source_shapes == shapes:
            pairs.append((counterpart, layer))
        else:
            message = f"{layer.name}: {source_shapes} vs {shapes}"
            (fresh if layer.name in _NEW_WHEN_RESHAPED else problems).append(
                message
            )
    if problems:
        raise UserInputError(
            f"init_weights {str(path)!r} does not fit this model: "
            f"{len(problems)} layers differ ({'; '.join(problems[:6])}). "
            "Use the same backbone, variant and head settings as the source."
        )
    for counterpart, layer in pairs:
        layer.set_weights(counterpart.get_weights())
    started = f"; new: {', '.join(fresh)}" if fresh else ""
    return f"init_weights: {len(pairs)} layers from {path}{started}"


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
        init_weights=None,
    )
    rebuilt = model_from_config(rebuilt_config)
    rebuilt.set_weights(model.get_weights())
    return rebuilt


def _existing_model_file(path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"model file {str(path)!r} does not exist; expected a .keras file "
            "(e.g. work_dir/best.keras) or a .weights.h5 file."
        )
    return path


# What Keras raises for archives it cannot rebuild: safe-mode refusals
# (ValueError), unknown classes (TypeError), broken configs (KeyError), bad
# zip members and HDF5 weights (OSError, BadZipFile).
_LOAD_ERRORS = (ValueError, TypeError, KeyError, OSError, zipfile.BadZipFile)


def _first_line(err) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__


def _load_keras(path) -> keras.Model:
    # safe_mode refuses lambdas and arbitrary code in the archive. Every load
    # is for inference or for weights, so the optimizer and metrics saved
    # with a training checkpoint are not rebuilt.
    if not zipfile.is_zipfile(path):
        raise UserInputError(
            f"model file {str(path)!r} is not a .keras archive (a zip file): "
            "it is empty, truncated or in another format. Use a .keras file "
            "written by model.save or keras-deeplab."
        )
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except _LOAD_ERRORS as err:
        raise UserInputError(
            f"model file {str(path)!r} cannot be loaded in safe mode "
            f"({_first_line(err)}); expected a DeepLabV3 saved by "
            "keras-deeplab, without Lambda layers or custom code."
        ) from err


def load_weights(model, path):
    """`model.load_weights(path)` with a clear error for a file that does
    not fit (another architecture, another config, a damaged file)."""
    try:
        model.load_weights(path)
    except _LOAD_ERRORS as err:
        raise UserInputError(
            f"weights file {str(path)!r} does not load into {model.name} "
            f"({_first_line(err)}); expected weights saved from a model "
            "with the same backbone, variant, head and num_classes."
        ) from err


def load_trained_model(path, config=None) -> keras.Model:
    """Loads a `.keras` model (safe mode) or `.weights.h5` file for inference.

    Returns the `inference_model`: one logits output, even for a training
    checkpoint saved with its aux head.

    Args:
        path: str or Path. A `.keras` file, or a `.weights.h5` file plus the
            `config` it was trained with.
        config: DeepLabConfig or None. Needed for `.weights.h5` only.

    Raises:
        FileNotFoundError: if `path` does not exist.
        ValueError: for another suffix, or weights without a config.
    """
    path = _existing_model_file(path)
    if path.suffix == ".keras":
        return inference_model(_load_keras(path))
    if path.name.endswith(".weights.h5") and config is not None:
        model = model_from_config(config)
        load_weights(model, path)
        return inference_model(model)
    raise UserInputError(
        f"cannot load {str(path)!r}: expected a .keras file, or a "
        ".weights.h5 file together with the CONFIG it was trained with."
    )
