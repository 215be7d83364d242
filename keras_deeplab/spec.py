"""ModelSpec: every argument that decides a segmentation model, declared once.

The builders (`models.DeepLabV3`, `DeepLabV3Plus`, `LRASPP`), the training
config (`DeepLabConfig` extends this dataclass), loading, conversion and the
benchmark all describe a model with it, and a built model keeps its own in
its saved config. Keras-free, so the CLI can list the choices without
loading TensorFlow.
"""

import dataclasses
import math
import types
import typing

from keras_deeplab.labels import MAX_CLASSES, default_class_names
from keras_deeplab.utils.errors import UserInputError

# The head on the backbone: DeepLabV3's ASPP, V3+'s stride-4 decoder, or the
# Lite R-ASPP of MobileNetV3 (Howard et al., 2019).
ARCHITECTURES = ("deeplabv3", "deeplabv3plus", "lraspp")
RESNETS = ("resnet50", "resnet101")
MOBILENETS = ("mobilenet_v3_large",)
BACKBONES = RESNETS + MOBILENETS
# "keras_applications": the layout of keras.applications (its ImageNet
# weights load by name); "torchvision": torchvision's (its checkpoints
# convert exactly, `keras_deeplab.convert`).
VARIANTS = ("keras_applications", "torchvision")
OUTPUT_STRIDES = (8, 16, 32)
# BatchNormalization decay of the DeepLabV3 recipe (paper, section 4).
PAPER_BN_MOMENTUM = 0.9997
# Beyond this an atrous rate only reads padding, and TensorFlow aborts on
# kernels whose dilated extent overflows (rate 1e9 was seen to).
MAX_ATROUS_RATE = 256
MAX_MULTI_GRID = 16
MAX_CLASS_NAME = 64
# What a trained model can run inference in (`derived.with_precision`);
# training dtype policies are the config's TRAINING_PRECISIONS.
INFERENCE_PRECISIONS = ("float32", "bfloat16")
# Names of a model's outputs; the aux output exists for training only.
MAIN_OUTPUT = "logits"
AUX_OUTPUT = "aux_logits"


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What a segmentation model is; builders turn it into a keras.Model."""

    architecture: str = "deeplabv3"  # deeplabv3 | deeplabv3plus | lraspp
    num_classes: int = 21  # including background
    backbone: str = "resnet50"  # one of BACKBONES
    output_stride: int = 16  # 8, 16 or 32
    variant: str = "keras_applications"  # or torchvision (converted weights)
    atrous_rates: tuple[int, ...] | None = None  # ASPP; None: 6, 12, 18 at OS16
    multi_grid: tuple[int, ...] | None = (
        None  # ResNet conv5; None: the variant's
    )
    image_pooling: bool = True  # ASPP global-pooling branch
    aux_head: bool = False  # FCN head on a middle stage, training only
    backbone_width: int = 64  # ResNet stem filters; 64 = ResNet-50/101
    head_filters: int | None = None  # None: 256 (ASPP) or 128 (LR-ASPP)
    dropout_rate: float | None = None  # after ASPP; None: the variant's
    bn_momentum: float = PAPER_BN_MOMENTUM  # paper: BN decay 0.9997
    include_preprocessing: bool = True  # the model takes RGB in [0, 255]
    class_names: tuple[str, ...] | None = None  # None: class_0, class_1, ...

    def __post_init__(self):
        # Valid from birth, including dataclasses.replace.
        self.validate()

    def validate(self):
        """Type, range and cross-field checks; raises UserInputError."""
        check_field_types(self)
        check_choice("architecture", self.architecture, ARCHITECTURES)
        check_choice("backbone", self.backbone, BACKBONES)
        check_choice("output_stride", self.output_stride, OUTPUT_STRIDES)
        check_choice("variant", self.variant, VARIANTS)
        check_range("num_classes", self.num_classes, low=1, high=MAX_CLASSES)
        check_range("backbone_width", self.backbone_width, low=1)
        if self.head_filters is not None:
            check_range("head_filters", self.head_filters, low=1)
        if self.dropout_rate is not None:
            check_range(
                "dropout_rate",
                self.dropout_rate,
                low=0.0,
                high=1.0,
                open_high=True,
            )
        check_range(
            "bn_momentum", self.bn_momentum, low=0.0, high=1.0, open_high=True
        )
        if self.atrous_rates is not None:
            check_items(
                "atrous_rates",
                self.atrous_rates,
                low=1,
                high=MAX_ATROUS_RATE,
                example="[6,12,18]",
            )
        if self.multi_grid is not None:
            check_items(
                "multi_grid",
                self.multi_grid,
                low=1,
                high=MAX_MULTI_GRID,
                example="[1,2,4]",
                length=3,
            )
        self._check_backbone_fits()
        if self.class_names is not None:
            check_class_names(self.class_names, self.num_classes)
        return self

    def _check_backbone_fits(self):
        mobile = self.backbone in MOBILENETS
        if self.architecture == "lraspp" and not mobile:
            raise UserInputError(
                f"architecture='lraspp' needs a MobileNet backbone; got "
                f"backbone={self.backbone!r}. Pass --set "
                "backbone=mobilenet_v3_large."
            )
        if self.architecture == "lraspp" and self.aux_head:
            raise UserInputError(
                "aux_head=True is not supported with architecture='lraspp' "
                "(LR-ASPP has no auxiliary head); pass --set aux_head=false."
            )
        if self.architecture == "lraspp" and self.atrous_rates is not None:
            raise UserInputError(
                f"atrous_rates={self.atrous_rates!r} do not apply to "
                "architecture='lraspp' (no ASPP); leave them unset."
            )
        if mobile and self.multi_grid is not None:
            raise UserInputError(
                f"multi_grid={self.multi_grid!r} applies to ResNet backbones "
                f"only; leave it unset for backbone={self.backbone!r}."
            )
        if mobile and self.backbone_width != 64:
            raise UserInputError(
                f"backbone_width={self.backbone_width} applies to ResNet "
                f"backbones only; {self.backbone} is always built at full "
                "width (leave backbone_width unset)."
            )

    @property
    def names(self) -> tuple:
        """The class names, or class_0, class_1, ... when none were given."""
        return self.class_names or default_class_names(self.num_classes)

    def to_dict(self) -> dict:
        """JSON-ready values (tuples as lists)."""
        return {
            field.name: (list(value) if isinstance(value, tuple) else value)
            for field in dataclasses.fields(ModelSpec)
            for value in (getattr(self, field.name),)
        }

    @classmethod
    def from_dict(cls, values: dict) -> "ModelSpec":
        """The spec a `to_dict` (or a saved model's config) describes."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserInputError(
                f"unknown model arguments {unknown}; expected ModelSpec "
                f"fields: {', '.join(sorted(known))}."
            )
        return cls(
            **{
                key: tuple(value) if isinstance(value, list) else value
                for key, value in values.items()
            }
        )

    @classmethod
    def field_names(cls) -> tuple:
        return tuple(field.name for field in dataclasses.fields(cls))

    @classmethod
    def of(cls, config) -> "ModelSpec":
        """The model part of a config (any object with these fields)."""
        return cls(
            **{
                field.name: getattr(config, field.name)
                for field in dataclasses.fields(cls)
            }
        )


def check_field_types(instance):
    """Every field of a dataclass has its declared type, strictly: True is
    not an int, 3 is not a str; an int is a float."""
    hints = _type_hints(type(instance))
    for field in dataclasses.fields(instance):
        value = getattr(instance, field.name)
        base, optional = field_type(hints[field.name])
        if (value is None and optional) or value in literal_values(
            hints[field.name]
        ):
            continue
        ok = any(
            _has_type(value, member)
            for member in member_types(hints[field.name])
        )
        if not ok:
            raise UserInputError(
                f"{field.name}={value!r} has the wrong type "
                f"({type(value).__name__}); expected {base.__name__}. Pass "
                f"--set {field.name}=<{base.__name__}>."
            )


def _has_type(value, kind) -> bool:
    """isinstance, strictly: True is not an int; an int is a float."""
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, kind) and (
        kind is bool or not isinstance(value, bool)
    )


_HINTS = {}


def _type_hints(cls):
    if cls not in _HINTS:  # resolved once per class
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _union_members(annotation) -> list:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return list(typing.get_args(annotation))
    return [annotation]


def field_type(annotation):
    """(base type, optional): `tuple[int, ...] | None` -> (tuple, True).
    `Literal` members of a union are the extra values it takes
    (`literal_values`), not its base type."""
    allowed = _union_members(annotation)
    base = next(
        t
        for t in allowed
        if t is not type(None) and typing.get_origin(t) is not typing.Literal
    )
    return typing.get_origin(base) or base, type(None) in allowed


def member_types(annotation) -> tuple:
    """Every non-None, non-Literal type a field takes, as classes:
    `tuple[tuple[int, ...], ...] | str | None` -> (tuple, str)."""
    return tuple(
        typing.get_origin(member) or member
        for member in _union_members(annotation)
        if member is not type(None)
        and typing.get_origin(member) is not typing.Literal
    )


def literal_values(annotation) -> tuple:
    """The fixed values a field takes besides its type:
    `tuple[float, ...] | Literal["auto"] | None` -> ("auto",)."""
    return tuple(
        value
        for member in _union_members(annotation)
        if typing.get_origin(member) is typing.Literal
        for value in typing.get_args(member)
    )


def item_type(annotation):
    """The element type of a `tuple[X, ...]` field (None for others)."""
    allowed = typing.get_args(annotation) or (annotation,)
    for candidate in (annotation, *allowed):
        if typing.get_origin(candidate) is tuple:
            return typing.get_args(candidate)[0]
    return None


def check_range(
    name, value, *, low=None, high=None, open_low=False, open_high=False
):
    """Raises unless `low` <= value <= `high` (or strictly, when open); NaN
    and infinities are refused (they pass every comparison test)."""
    finite = not isinstance(value, float) or math.isfinite(value)
    too_low = low is not None and (value <= low if open_low else value < low)
    too_high = high is not None and (
        value >= high if open_high else value > high
    )
    if too_low or too_high or not finite:
        bounds = []
        if low is not None:
            bounds.append(f"{'>' if open_low else '>='} {low}")
        if high is not None:
            bounds.append(f"{'<' if open_high else '<='} {high}")
        problem = "is out of range" if finite else "is not a finite number"
        raise UserInputError(
            f"{name}={value!r} {problem}; expected a value "
            f"{' and '.join(bounds)}."
        )


def check_items(name, values, *, low, high, example, length=None, kind=int):
    """A non-empty tuple (of `length`) of `kind` numbers in [low, high]."""
    numbers = (int, float) if kind is float else (int,)
    valid = (
        bool(values)
        and (length is None or len(values) == length)
        and all(
            isinstance(v, numbers)
            and not isinstance(v, bool)
            and math.isfinite(v)
            and low <= v <= high
            for v in values
        )
    )
    if not valid:
        count = f"{length} " if length else "a non-empty list of "
        raise UserInputError(
            f"{name}={values!r} is invalid; expected {count}{kind.__name__}s "
            f"in [{low}, {high}], e.g. --set {name}={example}."
        )


def check_imagenet_weights_fit(weights, variant):
    """Raises unless keras.applications weights fit the `variant` layout."""
    if weights is not None and variant != "keras_applications":
        raise UserInputError(
            f"backbone_weights={weights!r} are keras.applications weights, "
            f"which do not fit variant={variant!r}; convert a torchvision "
            "checkpoint instead (keras-deeplab convert-torchvision, or a "
            "preset: keras-deeplab presets) or use "
            "variant='keras_applications'."
        )


def check_choice(name, value, choices):
    if value not in choices:
        raise UserInputError(
            f"{name}={value!r} is not supported; expected one of {choices}."
        )


def check_class_names(names, num_classes):
    """One short, printable, unique name per class."""
    if len(names) != num_classes:
        raise UserInputError(
            f"class_names has {len(names)} names but num_classes="
            f"{num_classes}; give one name per class, background included."
        )
    for name in names:
        if (
            not isinstance(name, str)
            or not name.strip()
            or len(name) > MAX_CLASS_NAME
            or not name.isprintable()
        ):
            raise UserInputError(
                f"class name {name!r} is invalid; expected printable text of "
                f"1 to {MAX_CLASS_NAME} characters on one line."
            )
    if len(set(names)) != len(names):
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise UserInputError(
            f"class_names repeats {repeated}; every class needs its own name."
        )
