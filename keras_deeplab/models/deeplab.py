"""Segmentation models: where a backbone meets a head, built from a ModelSpec.

`DeepLab` is the one model class: a functional `keras.Model` built from a
`ModelSpec`, whose saved config is that spec, so a loaded model knows its
architecture, output stride and class names. `DeepLabV3`, `DeepLabV3Plus`
and `LRASPP` are its public builders; `derived` makes models from a built
one and `model_files` loads them.
"""

import dataclasses
from pathlib import Path

import keras

from keras_deeplab.backbones.imagenet import load_imagenet_weights
from keras_deeplab.backbones.mobilenet_v3 import mobilenet_v3_features
from keras_deeplab.backbones.resnet import STAGE_BLOCKS, resnet_features
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
from keras_deeplab.heads.lraspp import (
    LOW_CLASSIFIER,
    LRASPP_FILTERS,
    LRASPP_LOGITS,
    lraspp_head,
)
from keras_deeplab.labels import default_class_names
from keras_deeplab.layers import ImagePreprocessing, ResizeToMatch
from keras_deeplab.models.files import load_weights
from keras_deeplab.spec import (
    AUX_OUTPUT,
    MAIN_OUTPUT,
    MOBILENETS,
    ModelSpec,
    check_imagenet_weights_fit,
)
from keras_deeplab.utils.errors import UserInputError

PREPROCESS = "preprocess"
# Built float32 whatever the dtype policy: the input normalisation (exact
# mean subtraction) and the logits (never half precision).
FLOAT32_LAYERS = (PREPROCESS, HEAD_CLASSIFIER, AUX_CLASSIFIER, MAIN_OUTPUT)
FLOAT32_LAYERS += (AUX_OUTPUT, LOW_CLASSIFIER, LRASPP_LOGITS)
_RESNET_DEPTHS = {f"resnet{depth}": depth for depth in STAGE_BLOCKS}


@dataclasses.dataclass(frozen=True)
class _VariantHead:
    """What a layout changes above the backbone, and its defaults."""

    multi_grid: tuple  # conv5 rate multipliers when none are given
    dropout_rate: float  # after the ASPP projection
    extra_conv: bool  # torchvision's 3x3 conv before the classifier
    decoder_convs: int  # DeepLabV3+: 3x3 convs of the decoder


_VARIANT_HEADS = {
    "keras_applications": _VariantHead(
        multi_grid=(1, 2, 4),
        dropout_rate=HEAD_DROPOUT_RATE,
        extra_conv=False,
        decoder_convs=2,  # the paper's best decoder (Table 3)
    ),
    "torchvision": _VariantHead(
        multi_grid=(1, 1, 1),
        dropout_rate=0.5,  # torchvision's ASPP projection
        extra_conv=True,
        # VainF's DeepLabV3Plus-Pytorch, which wraps torchvision's ResNet.
        decoder_convs=1,
    ),
}


def preprocessing_mode(spec) -> str:
    """The ImagePreprocessing mode the spec's pretrained weights expect."""
    if spec.variant == "torchvision":
        return "torch"
    return "tf" if spec.backbone in MOBILENETS else "caffe"


def _backbone_features(x, spec, head):
    """{"low_level": stride 4, "stride8": LR-ASPP's low input, "aux": the
    aux head's input, "out": the last stage}."""
    if spec.backbone in MOBILENETS:
        stages = mobilenet_v3_features(
            x,
            output_stride=spec.output_stride,
            bn_momentum=spec.bn_momentum,
            variant=spec.variant,
        )
        # torchvision's aux head reads C2, as LR-ASPP does.
        return {
            "low_level": stages["stride4"],
            "stride8": stages["stride8"],
            "aux": stages["stride8"],
            "out": stages["out"],
        }
    stages = resnet_features(
        x,
        depth=_RESNET_DEPTHS[spec.backbone],
        output_stride=spec.output_stride,
        multi_grid=spec.multi_grid or head.multi_grid,
        width=spec.backbone_width,
        bn_momentum=spec.bn_momentum,
        variant=spec.variant,
    )
    return {
        "low_level": stages["conv2"],
        "stride8": stages["conv3"],
        "aux": stages["conv4"],
        "out": stages["conv5"],
    }


def atrous_rates(spec) -> tuple:
    """The spec's ASPP rates, or the default of its output stride.

    torchvision's DeepLabHead always uses (12, 24, 36), ResNet's rates at
    output stride 8; on its OS16 MobileNetV3 that is twice the paper's, so
    the torchvision MobileNet layout doubles the default.
    """
    if spec.atrous_rates:
        return spec.atrous_rates
    rates = default_atrous_rates(spec.output_stride)
    if spec.variant == "torchvision" and spec.backbone in MOBILENETS:
        return tuple(2 * rate for rate in rates)
    return rates


def _head_logits(features, spec, head):
    """The architecture's head on the backbone features."""
    if spec.architecture == "lraspp":
        return lraspp_head(
            features["out"],
            features["stride8"],
            num_classes=spec.num_classes,
            filters=spec.head_filters or LRASPP_FILTERS,
            bn_momentum=spec.bn_momentum,
        )
    plus = spec.architecture == "deeplabv3plus"
    dropout_rate = spec.dropout_rate
    if dropout_rate is None:
        # Every DeepLabV3+ drops 0.1 after ASPP (research/deeplab, VainF).
        dropout_rate = HEAD_DROPOUT_RATE if plus else head.dropout_rate
    options = {
        "num_classes": spec.num_classes,
        "atrous_rates": atrous_rates(spec),
        "filters": spec.head_filters or ASPP_FILTERS,
        "image_pooling": spec.image_pooling,
        "dropout_rate": dropout_rate,
        "bn_momentum": spec.bn_momentum,
    }
    if plus:
        return deeplabv3plus_head(
            features["out"],
            features["low_level"],
            decoder_convs=head.decoder_convs,
            **options,
        )
    return deeplab_head(features["out"], extra_conv=head.extra_conv, **options)


def _outputs(images, spec):
    """Logits at the input size, plus the aux head's when `spec` has one."""
    head = _VARIANT_HEADS[spec.variant]
    x = images
    if spec.include_preprocessing:
        x = ImagePreprocessing(preprocessing_mode(spec), name=PREPROCESS)(x)
    features = _backbone_features(x, spec, head)
    logits = _upsample(_head_logits(features, spec, head), images, MAIN_OUTPUT)
    if not spec.aux_head:
        return logits
    # torchvision's FCNHead narrows its input 4x; ours keeps head_filters.
    aux_filters = (
        features["aux"].shape[-1] // 4
        if spec.variant == "torchvision"
        else spec.head_filters or ASPP_FILTERS
    )
    aux_logits = fcn_aux_head(
        features["aux"],
        num_classes=spec.num_classes,
        filters=aux_filters,
        bn_momentum=spec.bn_momentum,
    )
    return {
        MAIN_OUTPUT: logits,
        AUX_OUTPUT: _upsample(aux_logits, images, AUX_OUTPUT),
    }


def _upsample(logits, images, name):
    # float32 like the classifier: the logits stay full precision.
    return ResizeToMatch(name=name, dtype="float32")([logits, images])


def default_name(spec: ModelSpec) -> str:
    """e.g. "deeplabv3_resnet50_os16" ("_torchvision" for that layout)."""
    suffix = "" if spec.variant == "keras_applications" else f"_{spec.variant}"
    return f"{spec.architecture}_{spec.backbone}_os{spec.output_stride}{suffix}"


def _check_input_shape(input_shape):
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise UserInputError(
            f"input_shape={input_shape!r} is invalid; expected (height, "
            "width, 3) with None for a dynamic size, channels last."
        )
    return input_shape


@keras.saving.register_keras_serializable(package="keras_deeplab")
class DeepLab(keras.Model):
    """A segmentation model built from a `ModelSpec`, which it keeps.

    A functional model (it trains, saves and exports like one) whose config
    is its spec: saving stores the spec, loading rebuilds the graph from it
    and loads the weights, and `model.spec` (architecture, output stride,
    class names, ...) travels with every `.keras` file.

    Args:
        spec: ModelSpec, or its `to_dict()`.
        image_shape: tuple. (height, width, 3); None for any size.
        name: str or None. Model name; None gives `default_name(spec)`.
    """

    def __init__(self, spec, *, image_shape=(None, None, 3), name=None, **kw):
        if isinstance(spec, dict):
            spec = ModelSpec.from_dict(spec)
        image_shape = _check_input_shape(image_shape)
        images = keras.Input(shape=image_shape, name="images")
        outputs = _outputs(images, spec)
        super().__init__(images, outputs, name=name or default_name(spec), **kw)
        self.spec = spec
        self.image_shape = image_shape

    def get_config(self):
        return {
            "spec": self.spec.to_dict(),
            "image_shape": list(self.image_shape),
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def spec_of(model) -> ModelSpec | None:
    """The ModelSpec a model was built from (None for a model loaded from a
    file of keras_deeplab < 0.3, a plain functional model)."""
    return getattr(model, "spec", None)


def class_names(model) -> tuple:
    """The model's class names: its spec's, else class_0, class_1, ..."""
    spec = spec_of(model)
    if spec is not None:
        return spec.names
    logits = model.output
    if isinstance(logits, dict):  # the aux head's training outputs
        logits = logits[MAIN_OUTPUT]
    return default_class_names(logits.shape[-1])


def build_model(
    spec: ModelSpec,
    *,
    input_shape=(None, None, 3),
    name=None,
    backbone_weights=None,
    weights=None,
) -> DeepLab:
    """A `DeepLab` model, optionally with ImageNet or saved weights.

    Args:
        spec: ModelSpec. What to build.
        input_shape: tuple. (height, width, 3); None for any size.
        name: str or None. None gives `default_name(spec)`.
        backbone_weights: None, "imagenet" or the path of a
            keras.applications `..._notop.h5` file; loaded into the
            backbone by layer name (the "keras_applications" layout only).
        weights: None or the path of a `.weights.h5` file of this model.

    Raises:
        UserInputError: for weights that do not fit the spec.
        FileNotFoundError: for a weights path that does not exist.
    """
    check_imagenet_weights_fit(backbone_weights, spec.variant)
    if weights is not None and not Path(weights).is_file():
        raise FileNotFoundError(
            f"weights={str(weights)!r} does not exist; expected the path of "
            "a .weights.h5 file saved by model.save_weights()."
        )
    model = DeepLab(spec, image_shape=input_shape, name=name)
    if backbone_weights is not None:
        load_imagenet_weights(
            model,
            backbone=spec.backbone,
            weights=backbone_weights,
            variant=spec.variant,
        )
    if weights is not None:
        load_weights(model, weights)
    return model
