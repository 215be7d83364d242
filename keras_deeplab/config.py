"""DeepLabConfig: one flat, frozen configuration with presets and overrides.

Precedence: field defaults < named preset < YAML/JSON file < `--set k=v`.
"""

import dataclasses
import difflib
import json
import typing
from pathlib import Path

import yaml

from keras_deeplab.atomic import atomic_write_text
from keras_deeplab.backbones.imagenet import check_imagenet_weights_fit
from keras_deeplab.backbones.resnet import (
    OUTPUT_STRIDES,
    PAPER_BN_MOMENTUM,
    VARIANTS,
)
from keras_deeplab.errors import UserInputError
from keras_deeplab.heads.aspp import ARCHITECTURES
from keras_deeplab.labels import IGNORE_INDEX
from keras_deeplab.names import check_model_name

DATASETS = ("synthetic", "folder", "voc", "cityscapes", "ade20k", "tfds")
OPTIMIZERS = ("sgd", "adamw")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("default", "mirrored", "multi_worker", "data_parallel")


@dataclasses.dataclass(frozen=True)
class DeepLabConfig:
    """Everything a training, evaluation or export run needs."""

    # model
    architecture: str = "deeplabv3"  # or deeplabv3plus (stride-4 decoder)
    num_classes: int = 21  # including background
    backbone: str = "resnet50"  # resnet50 | resnet101
    output_stride: int = 16  # 8, 16 or 32
    variant: str = "keras_applications"  # or torchvision (converted weights)
    atrous_rates: tuple | None = None  # None: (6, 12, 18) scaled to the OS
    multi_grid: tuple | None = None  # conv5 rates; None: the variant's
    image_pooling: bool = True  # ASPP global-pooling branch
    aux_head: bool = False  # FCN head on conv4, training only
    aux_loss_weight: float = 0.4  # weight of the aux-head loss
    backbone_weights: str | None = None  # "imagenet" or a *_notop.h5 path
    init_weights: str | None = None  # whole .keras model to fine-tune from
    backbone_width: int = 64  # 64 = ResNet-50/101
    head_filters: int = 256  # ASPP filters
    dropout_rate: float | None = None  # after ASPP; None: the variant's
    bn_momentum: float = PAPER_BN_MOMENTUM  # paper: BN decay 0.9997
    freeze_bn: bool = False  # frozen BN for small per-replica batches

    # data
    dataset: str = "synthetic"  # one of DATASETS
    data_dir: str | None = None  # dataset root (folder/voc/cityscapes/ade20k)
    sbd_dir: str | None = None  # VOC: SBD "benchmark_RELEASE" root for aug
    image_dir: str = "images"  # folder: images under data_dir
    mask_dir: str = "masks"  # folder: masks under data_dir
    train_list: str | None = None  # folder: split file of stems, one a line
    val_list: str | None = None  # folder: split file for validation
    tfds_name: str | None = None  # tfds: e.g. oxford_iiit_pet
    train_split: str = "train"  # split name of the training data
    val_split: str = "val"  # split name of the validation data
    synthetic_train_size: int = 2000  # images in the synthetic train split
    synthetic_val_size: int = 200  # images in the synthetic val split
    synthetic_image_size: int = 128  # side of a synthetic image, pixels
    crop_size: int = 513  # training crop / evaluation pad size, pixels
    min_scale: float = 0.5  # random scale range (paper: 0.5-2.0)
    max_scale: float = 2.0
    flip: bool = True  # random horizontal flip
    batch_size: int = 16  # global batch (all replicas)
    shuffle_buffer: int = 1000  # examples
    seed: int = 0  # data order, augmentation and initialisation
    validate_data: bool = True  # scan every file before training starts

    # training
    epochs: int = 10
    steps_per_epoch: int | None = None  # None: one pass over the data
    optimizer: str = "sgd"  # sgd | adamw
    learning_rate: float = 0.007  # paper base LR at batch 16
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 1e-4  # conv kernels only
    poly_power: float = 0.9  # lr = base * (1 - step / total) ** power
    warmup_steps: int = 0  # linear warm-up steps
    precision: str = "float32"  # one of PRECISIONS
    jit_compile: bool = False  # XLA on TensorFlow; JAX always compiles
    strategy: str = "default"  # one of STRATEGIES
    backup_every_steps: int = 50  # BackupAndRestore frequency, batches

    # evaluation
    eval_scales: tuple = (1.0,)  # multi-scale inference, e.g. (0.5, ..., 1.75)
    eval_flip: bool = False  # add left-right flipped inference

    # export
    export_size: int = 513  # fixed-size TFLite export, pixels
    model_name: str = "deeplab"  # TF Serving model name

    def __post_init__(self):
        # Every config is valid from birth, including dataclasses.replace.
        self.validate()

    def differences(self) -> dict:
        """{field: value} of the settings that differ from the defaults."""
        return {
            field.name: getattr(self, field.name)
            for field in dataclasses.fields(self)
            if getattr(self, field.name) != field.default
        }

    def validate(self):
        """Type, range and cross-field checks; raises ValueError with a fix."""
        for field in dataclasses.fields(self):
            _check_type(field.name, getattr(self, field.name))
        _check_choice("architecture", self.architecture, ARCHITECTURES)
        _check_choice("backbone", self.backbone, ("resnet50", "resnet101"))
        _check_choice("output_stride", self.output_stride, OUTPUT_STRIDES)
        _check_choice("variant", self.variant, VARIANTS)
        check_imagenet_weights_fit(self.backbone_weights, self.variant)
        _check_choice("dataset", self.dataset, DATASETS)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("precision", self.precision, PRECISIONS)
        _check_choice("strategy", self.strategy, STRATEGIES)
        self._check_ranges()
        if self.crop_size < 2 * self.output_stride:
            raise UserInputError(
                f"crop_size={self.crop_size} is too small for output_stride="
                f"{self.output_stride}; expected >= {2 * self.output_stride}."
            )
        if self.min_scale > self.max_scale:
            raise UserInputError(
                f"min_scale={self.min_scale} and max_scale={self.max_scale} "
                "are invalid; expected 0 < min_scale <= max_scale."
            )
        if self.dataset not in ("synthetic", "tfds") and self.data_dir is None:
            raise UserInputError(
                f"dataset={self.dataset!r} needs data_dir; pass --set "
                "data_dir=/path/to/dataset."
            )
        if self.dataset == "tfds" and not self.tfds_name:
            raise UserInputError(
                "dataset='tfds' needs tfds_name; pass --set "
                "tfds_name=oxford_iiit_pet."
            )
        check_model_name(self.model_name)
        return self

    def _check_ranges(self):
        # Class ids are stored in uint8 masks where 255 means "ignore".
        _check_range("num_classes", self.num_classes, low=1, high=IGNORE_INDEX)
        for name in (
            "backbone_width",
            "head_filters",
            "synthetic_train_size",
            "synthetic_val_size",
            "crop_size",
            "batch_size",
            "shuffle_buffer",
            "epochs",
            "backup_every_steps",
            "export_size",
        ):
            _check_range(name, getattr(self, name), low=1)
        _check_range("synthetic_image_size", self.synthetic_image_size, low=8)
        for name in ("seed", "warmup_steps"):
            _check_range(name, getattr(self, name), low=0)
        for name in ("aux_loss_weight", "learning_rate", "weight_decay"):
            _check_range(name, getattr(self, name), low=0.0)
        _check_range("poly_power", self.poly_power, low=0.0)
        _check_range("min_scale", self.min_scale, low=0.0, open_low=True)
        _check_range("max_scale", self.max_scale, low=0.0, open_low=True)
        for name in ("momentum", "bn_momentum"):
            _check_range(
                name, getattr(self, name), low=0.0, high=1.0, open_high=True
            )
        if self.dropout_rate is not None:
            _check_range(
                "dropout_rate",
                self.dropout_rate,
                low=0.0,
                high=1.0,
                open_high=True,
            )
        if self.steps_per_epoch is not None:
            _check_range("steps_per_epoch", self.steps_per_epoch, low=1)
        for name in ("atrous_rates", "multi_grid"):
            values = getattr(self, name)
            if values is not None:
                _check_items(name, values, kind=int, example="(6, 12, 18)")
        _check_items(
            "eval_scales",
            self.eval_scales,
            kind=float,
            example="(0.75, 1.0, 1.25)",
        )

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)


def _check_type(name, value):
    """The declared type, strictly: True is not an int, 3 is not a str."""
    annotation = _FIELD_TYPES[name]
    allowed = typing.get_args(annotation) or (annotation,)
    if value is None and type(None) in allowed:
        return
    base = next(t for t in allowed if t is not type(None))
    ok = isinstance(value, base) and not (
        base is not bool and isinstance(value, bool)
    )
    if base is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok:
        raise UserInputError(
            f"{name}={value!r} has the wrong type ({type(value).__name__}); "
            f"expected {base.__name__}. Pass --set {name}=<{base.__name__}>."
        )


def _check_range(
    name, value, *, low=None, high=None, open_low=False, open_high=False
):
    too_low = low is not None and (value <= low if open_low else value < low)
    too_high = high is not None and (
        value >= high if open_high else value > high
    )
    if too_low or too_high:
        bounds = []
        if low is not None:
            bounds.append(f"{'>' if open_low else '>='} {low}")
        if high is not None:
            bounds.append(f"{'<' if open_high else '<='} {high}")
        raise UserInputError(
            f"{name}={value!r} is out of range; expected a value "
            f"{' and '.join(bounds)}."
        )


def _check_items(name, values, *, kind, example):
    """A non-empty tuple of positive numbers of one kind."""
    if not values or not all(
        isinstance(v, (int, float) if kind is float else int)
        and not isinstance(v, bool)
        and v > 0
        for v in values
    ):
        raise UserInputError(
            f"{name}={values!r} is invalid; expected a non-empty list of "
            f"positive {kind.__name__}s, e.g. {example}."
        )


def _check_choice(name, value, choices):
    if value not in choices:
        raise UserInputError(
            f"{name}={value!r} is not supported; expected one of {choices}."
        )


# Named overrides of the defaults. "demo" fits the README demo in about 15
# minutes on a 2-core CPU with no pretrained weights: small synthetic images,
# ASPP rates scaled to their 8x8 feature maps, a quarter-width ResNet-50
# (same 50-layer, dilated layout; ~16x fewer backbone FLOPs), AdamW from
# scratch, and BN momentum 0.99 because 0.9997 needs thousands of steps to
# warm its moving averages.
PRESETS = {
    "demo": {
        "num_classes": 5,
        "dataset": "synthetic",
        "synthetic_image_size": 128,
        "synthetic_train_size": 2000,
        "synthetic_val_size": 100,
        "crop_size": 128,
        "atrous_rates": (2, 4, 6),
        "backbone_width": 16,
        "head_filters": 64,
        "min_scale": 0.75,
        "max_scale": 1.25,
        "batch_size": 8,
        "epochs": 11,
        "optimizer": "adamw",
        "learning_rate": 1e-3,
        "weight_decay": 1e-4,
        "bn_momentum": 0.99,
        "export_size": 128,
    },
    "voc_aug": {
        "num_classes": 21,
        "dataset": "voc",
        "train_split": "train_aug",
        "val_split": "val",
        "backbone_weights": "imagenet",
        "crop_size": 513,
        "batch_size": 16,
        "epochs": 46,  # ~30K iterations of batch 16 over 10,582 images
    },
    "cityscapes": {
        "num_classes": 19,
        "dataset": "cityscapes",
        "backbone_weights": "imagenet",
        "crop_size": 769,
        "batch_size": 8,
        "learning_rate": 0.01,
    },
    "ade20k": {
        "num_classes": 150,
        "dataset": "ade20k",
        "train_split": "training",
        "val_split": "validation",
        "backbone_weights": "imagenet",
        "crop_size": 513,
        "learning_rate": 0.01,
    },
    "pets": {
        "num_classes": 3,
        "dataset": "tfds",
        "tfds_name": "oxford_iiit_pet",
        "val_split": "test",
        "backbone_weights": "imagenet",
        "crop_size": 321,
    },
}

_MAX_CONFIG_BYTES = 1_000_000
# Resolved once: field name -> declared type (annotations are real types).
_FIELD_TYPES = typing.get_type_hints(DeepLabConfig)


def _unknown_key_error(key, source):
    close = difflib.get_close_matches(key, _FIELD_TYPES, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return UserInputError(f"unknown config key {key!r} in {source}.{hint}")


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader without anchors and aliases: a config never needs them,
    and a few nested aliases expand exponentially ("billion laughs")."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None,
                None,
                "YAML aliases (*name) are not allowed in a config",
                event.start_mark,
            )
        return super().compose_node(parent, index)


def _yaml(text):
    return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - safe subclass


def _parse_text(text, base):
    """A value typed on the command line or in a file as a string."""
    if base in (int, float):
        try:
            # Python's parser: YAML 1.1 would read "3e-3" as a string.
            return base(text)
        except ValueError:
            pass
    try:
        return _yaml(text)  # "true" -> True, "[6, 12]" -> [6, 12]
    except yaml.YAMLError:
        return text  # left as typed; the type check names the field


def _coerce(key, value, source):
    """Converts a YAML/JSON/CLI value to the field's declared type."""
    annotation = _FIELD_TYPES[key]
    optional = type(None) in typing.get_args(annotation)
    if value is None or (optional and value in ("none", "None", "null")):
        if not optional:
            raise UserInputError(f"{key} in {source} cannot be None.")
        return None
    base = next(
        (t for t in typing.get_args(annotation) if t is not type(None)),
        annotation,
    )
    if isinstance(value, str) and base is not str:
        value = _parse_text(value, base)
    try:
        if base is bool:
            if not isinstance(value, bool):
                raise TypeError
            return value
        if base is tuple:
            return tuple(value)
        if base is int and isinstance(value, float) and value.is_integer():
            return int(value)
        if base is float and isinstance(value, int):
            return float(value)
        if not isinstance(value, base):
            raise TypeError
        return value
    except TypeError as err:
        raise UserInputError(
            f"{key}={value!r} in {source} has the wrong type; expected "
            f"{base.__name__}."
        ) from err


def _merge(values, overrides, source):
    for key, value in overrides.items():
        if key not in _FIELD_TYPES:
            raise _unknown_key_error(key, source)
        values[key] = _coerce(key, value, source)


def parse_overrides(pairs):
    """["a=1", "b=x"] -> {"a": "1", "b": "x"}; values are coerced later."""
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserInputError(
                f"--set {pair!r} is invalid; expected key=value, e.g. "
                "--set batch_size=8."
            )
        overrides[key.strip()] = value.strip()
    return overrides


def _read_file(path):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"config file {str(path)!r} does not exist; expected a YAML or "
            f"JSON file or a preset name: {', '.join(PRESETS)}."
        )
    if path.stat().st_size > _MAX_CONFIG_BYTES:
        raise UserInputError(
            f"config file {str(path)!r} is {path.stat().st_size:,} bytes; a "
            f"config is a few hundred (at most {_MAX_CONFIG_BYTES:,})."
        )
    try:
        data = _yaml(path.read_text(encoding="utf-8"))  # YAML covers JSON
    except UnicodeDecodeError as err:
        raise UserInputError(
            f"config file {str(path)!r} is not UTF-8 text; expected a YAML "
            "or JSON file."
        ) from err
    except yaml.YAMLError as err:
        reason = " ".join(str(err).split())
        raise UserInputError(
            f"config file {str(path)!r} is not valid YAML/JSON: {reason}"
        ) from err
    if not isinstance(data, dict):
        raise UserInputError(
            f"config file {str(path)!r} must hold a mapping of keys to "
            f"values; got {type(data).__name__}."
        )
    return data


def load_config(source: str | None = None, overrides=()) -> DeepLabConfig:
    """Resolves a config from a preset name or file plus `--set` overrides.

    Args:
        source: None (defaults), a preset name from PRESETS, or a YAML/JSON
            file; a file may name a base preset with the key `preset`.
        overrides: iterable of "key=value" strings, applied last.

    Returns:
        A validated DeepLabConfig.

    Raises:
        FileNotFoundError: if `source` is neither a preset nor a file.
        ValueError: for unknown keys, wrong types or invalid values.
    """
    values = {}
    file_values = {}
    if source is not None and source in PRESETS:
        _merge(values, PRESETS[source], f"preset {source!r}")
    elif source is not None:
        file_values = dict(_read_file(source))
        preset = file_values.pop("preset", None)
        if preset is not None:
            if preset not in PRESETS:
                raise UserInputError(
                    f"preset={preset!r} in {source} is unknown; expected one "
                    f"of {tuple(PRESETS)}."
                )
            _merge(values, PRESETS[preset], f"preset {preset!r}")
        _merge(values, file_values, f"config file {source}")
    _merge(values, parse_overrides(overrides), "--set")
    return DeepLabConfig(**values)


def save_config(config: DeepLabConfig, path) -> Path:
    """Writes the resolved config as JSON (atomically) and returns the path."""
    return atomic_write_text(Path(path), config.to_json() + "\n")
