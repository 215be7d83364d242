"""The builders a user calls: `DeepLabV3`, `DeepLabV3Plus` and `LRASPP`.

Each takes the number of classes and, by keyword, any `ModelSpec` field and
`build_model` option; its signature (what `help()` and
`inspect.signature` show) is generated from those, so the list is written
once, in the dataclass.
"""

import dataclasses
import inspect

from keras_deeplab.models.deeplab import DeepLab, build_model
from keras_deeplab.spec import ModelSpec
from keras_deeplab.utils.errors import UserInputError

_BUILD_OPTIONS = ("input_shape", "backbone_weights", "weights", "name")
_BUILD_DEFAULTS = inspect.signature(build_model).parameters


def _shows_its_arguments(**defaults):
    """Gives a builder `fn(num_classes=21, **options)` the signature
    `help()`, `inspect.signature` and notebooks show: num_classes, then
    every ModelSpec field and `build_model` option as a keyword with its
    default (`defaults` overrides a field's), generated from the dataclass
    so the list is written once."""

    def decorate(builder):
        keyword = inspect.Parameter.KEYWORD_ONLY
        parameters = [
            inspect.Parameter(
                "num_classes",
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                default=21,
                annotation=int,
            )
        ]
        for field in dataclasses.fields(ModelSpec):
            if field.name in ("architecture", "num_classes"):
                continue
            parameters.append(
                inspect.Parameter(
                    field.name,
                    keyword,
                    default=defaults.get(field.name, field.default),
                    annotation=field.type,
                )
            )
        parameters += [
            _BUILD_DEFAULTS[name].replace(kind=keyword)
            for name in _BUILD_OPTIONS
        ]
        builder.__signature__ = inspect.Signature(
            parameters, return_annotation=DeepLab
        )
        return builder

    return decorate


def _build(architecture, num_classes, options) -> DeepLab:
    """`build_model` with `options` split into its own keywords and the
    ModelSpec fields."""
    allowed = set(_BUILD_OPTIONS) | set(ModelSpec.field_names())
    unknown = sorted(set(options) - allowed) + (
        ["architecture"] if "architecture" in options else []
    )
    if unknown:
        raise UserInputError(
            f"unknown argument(s) {unknown}; expected one of "
            f"{', '.join(_BUILD_OPTIONS)} or a ModelSpec field other than "
            "architecture (each builder sets it)."
        )
    spec_fields = {k: v for k, v in options.items() if k not in _BUILD_OPTIONS}
    spec = ModelSpec(
        architecture=architecture, num_classes=num_classes, **spec_fields
    )
    build_options = {k: v for k, v in options.items() if k in _BUILD_OPTIONS}
    return build_model(spec, **build_options)


@_shows_its_arguments()
def DeepLabV3(num_classes: int = 21, **options) -> DeepLab:  # noqa: N802
    """Builds DeepLabV3 (Chen et al., 2017) on a dilated backbone.

    ASPP (1x1, three atrous 3x3 branches and image pooling) on the last
    backbone stage at output stride 8, 16 or 32, a 1x1 classifier and
    bilinear upsampling to the input size.

    Args:
        num_classes: int. Number of classes, background included.
            Defaults to 21 (Pascal VOC).
        **options: by keyword, `build_model`'s `input_shape`,
            `backbone_weights`, `weights` and `name`, and any `ModelSpec`
            field: backbone ("resnet50", "resnet101",
            "mobilenet_v3_large"), output_stride (8, 16, 32), variant
            ("keras_applications", or "torchvision": the layout torchvision
            and VainF checkpoints convert into), atrous_rates, multi_grid,
            image_pooling, aux_head (then the model returns {"logits",
            "aux_logits"} for training), backbone_width, head_filters,
            dropout_rate, bn_momentum, include_preprocessing, class_names.

    Returns:
        `DeepLab`, a functional keras.Model: RGB images in [0, 255] of any
        size -> float32 logits (batch, height, width, num_classes).

    Raises:
        UserInputError (a ValueError): naming an invalid argument.
    """
    return _build("deeplabv3", num_classes, options)


@_shows_its_arguments(backbone="mobilenet_v3_large")
def LRASPP(num_classes: int = 21, **options) -> DeepLab:  # noqa: N802
    """Builds LR-ASPP (Howard et al., 2019) on a dilated MobileNetV3-Large.

    The mobile segmenter: the stride-16 features gated and classified, plus
    a classifier of the stride-8 features, upsampled to the input size.
    Arguments and result as `DeepLabV3`; `backbone` defaults to
    "mobilenet_v3_large" (the only backbone LR-ASPP takes) and
    `head_filters` to 128.
    """
    options.setdefault("backbone", "mobilenet_v3_large")
    return _build("lraspp", num_classes, options)


@_shows_its_arguments()
def DeepLabV3Plus(num_classes: int = 21, **options) -> DeepLab:  # noqa: N802
    """Builds DeepLabV3+ (Chen et al., 2018) on a dilated backbone.

    DeepLabV3's encoder plus a decoder on the stride-4 features: 1x1 conv to
    48 channels, the ASPP output upsampled to their exact size,
    concatenation, 3x3 convs (two in the paper's layout, one in VainF's
    `variant="torchvision"`), the 1x1 classifier and bilinear upsampling.
    Arguments and result as `DeepLabV3`.
    """
    return _build("deeplabv3plus", num_classes, options)
