"""DeepLabConfig: the model (a ModelSpec) plus data, training and export."""

import dataclasses
import json
from typing import Literal

from keras_deeplab.spec import (
    ModelSpec,
    check_choice,
    check_imagenet_weights_fit,
    check_items,
    check_range,
)
from keras_deeplab.utils.errors import UserInputError
from keras_deeplab.utils.image_size import MAX_IMAGE_SIDE
from keras_deeplab.utils.names import check_model_name

DATASETS = ("synthetic", "folder", "voc", "cityscapes", "ade20k", "tfds")
OPTIMIZERS = ("sgd", "adamw")
# Keras dtype policies a run trains under (inference precisions are
# `spec.INFERENCE_PRECISIONS`).
TRAINING_PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("default", "mirrored", "multi_worker", "data_parallel")
# `loss:` terms, joined with "+" ("ce+dice"); `training.losses`.
LOSS_TERMS = ("ce", "focal", "dice", "lovasz")
# `mask_unknown_colors`: a colour not in mask_colors stops, or is ignored.
UNKNOWN_COLOR_POLICIES = ("error", "ignore")
# `class_weights: auto`: median frequency balancing of the training masks.
AUTO_CLASS_WEIGHTS = "auto"
MAX_SEED = 2**32 - 1  # what NumPy and TensorFlow seeds accept
# Evaluation scales: below 0.1 a 513 px image is a few feature pixels.
EVAL_SCALE_RANGE = (0.1, 4.0)
MAX_AUGMENT_SCALE = 8.0
# int8 calibration keeps every crop in memory (1024 at 513^2: 3.2 GB).
MAX_CALIBRATION_IMAGES = 1024
IMAGENET = "imagenet"


def check_backbone_weights_file(weights):
    """`backbone_weights` is "imagenet" or an existing keras.applications
    `*_notop.h5` file: refused here, not when training starts."""
    if weights in (None, IMAGENET):
        return
    from pathlib import Path

    path = Path(str(weights)).expanduser()
    if not path.is_file() or path.suffix != ".h5":
        raise UserInputError(
            f"backbone_weights={weights!r} is not {IMAGENET!r} nor an "
            "existing .h5 file; expected 'imagenet' (downloaded by Keras) or "
            "the path of a keras.applications *_notop.h5 weights file."
        )


# Data fields that only one dataset reads.
_DATASET_FIELDS = {
    "synthetic": (
        "synthetic_train_size",
        "synthetic_val_size",
        "synthetic_image_size",
    ),
    "folder": (
        "image_dir",
        "mask_dir",
        "train_list",
        "val_list",
        "mask_colors",
        "mask_unknown_colors",
    ),
    "voc": ("sbd_dir",),
    "tfds": ("tfds_name",),
}


def check_mask_color_count(count, num_classes):
    """One mask colour per class, inline or from a palette file."""
    if count != num_classes:
        raise UserInputError(
            f"mask_colors lists {count} colours but num_classes="
            f"{num_classes}; give one [R, G, B] per class, in class-id order."
        )


def loss_terms(loss: str) -> list:
    """["ce", "dice"] for "ce+dice"."""
    return [term.strip() for term in loss.split("+")]


@dataclasses.dataclass(frozen=True)
class DeepLabConfig(ModelSpec):
    """Everything a training, evaluation or export run needs.

    The model fields (architecture, num_classes, backbone, output_stride,
    variant, ... class_names) are `ModelSpec`'s; `ModelSpec.of(config)`
    takes them out. The fields below add how to start the weights, the
    data, the training recipe, evaluation and export.
    """

    # model weights and training-only model options
    aux_loss_weight: float = 0.4  # weight of the aux-head loss
    backbone_weights: str | None = None  # "imagenet" or a *_notop.h5 path
    init_weights: str | None = None  # .keras file or preset to fine-tune
    freeze_bn: bool = False  # frozen BN for small per-replica batches

    # data
    dataset: str = "synthetic"  # one of DATASETS
    data_dir: str | None = None  # dataset root (folder/voc/cityscapes/ade20k)
    sbd_dir: str | None = None  # VOC: SBD "benchmark_RELEASE" root for aug
    image_dir: str = "images"  # folder: images under data_dir
    mask_dir: str = "masks"  # folder: masks under data_dir
    train_list: str | None = None  # folder: split file of stems, one a line
    val_list: str | None = None  # folder: split file for validation
    # folder: RGB colour masks: one [R, G, B] per class, or a palette file
    mask_colors: tuple[tuple[int, ...], ...] | str | None = None
    mask_unknown_colors: str = "error"  # error | ignore (-> 255)
    tfds_name: str | None = None  # tfds: e.g. oxford_iiit_pet
    train_split: str = "train"  # split name of the training data
    val_split: str = "val"  # split name of the validation data
    synthetic_train_size: int = 2000  # images in the synthetic train split
    synthetic_val_size: int = 200  # images in the synthetic val split
    synthetic_image_size: int = 128  # side of a synthetic image, pixels
    crop_size: int = 513  # training crop side, pixels
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
    precision: str = "float32"  # one of TRAINING_PRECISIONS
    jit_compile: bool = False  # XLA on TensorFlow; JAX always compiles
    strategy: str = "default"  # one of STRATEGIES
    backup_every_steps: int = 50  # BackupAndRestore frequency, batches
    loss: str = "ce"  # ce | focal | dice | lovasz, or a sum: ce+dice
    loss_term_weights: tuple[float, ...] | None = None  # one per loss term
    # one weight per class, or auto (median frequency of the train masks)
    class_weights: tuple[float, ...] | Literal["auto"] | None = None
    focal_gamma: float = 2.0  # loss: focal
    ohem_threshold: float | None = None  # ce on pixels less sure (e.g. 0.7)
    ohem_min_kept: int = 100_000  # ... but at least this many a batch

    # evaluation
    eval_scales: tuple[float, ...] = (1.0,)  # multi-scale inference scales
    eval_flip: bool = False  # add left-right flipped inference

    # export
    export_size: int = 513  # fixed-size TFLite export, pixels
    calibration_images: int = 32  # training crops calibrating int8 exports
    model_name: str = "deeplab"  # TF Serving model name

    def differences(self) -> dict:
        """{field: value} of the settings that differ from the defaults."""
        return {
            field.name: getattr(self, field.name)
            for field in dataclasses.fields(self)
            if getattr(self, field.name) != field.default
        }

    def shown_differences(self) -> dict:
        """`differences` without the data fields of other datasets (a preset
        made for synthetic data, used on a folder, keeps its sizes)."""
        elsewhere = {
            name
            for dataset, names in _DATASET_FIELDS.items()
            if dataset != self.dataset
            for name in names
        }
        return {
            name: value
            for name, value in self.differences().items()
            if name not in elsewhere
        }

    def validate(self):
        """Type, range and cross-field checks; raises ValueError with a fix."""
        super().validate()
        check_imagenet_weights_fit(self.backbone_weights, self.variant)
        check_backbone_weights_file(self.backbone_weights)
        check_choice("dataset", self.dataset, DATASETS)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("precision", self.precision, TRAINING_PRECISIONS)
        check_choice("strategy", self.strategy, STRATEGIES)
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
        self._check_loss()
        self._check_mask_colors()
        return self

    def _check_mask_colors(self):
        check_choice(
            "mask_unknown_colors",
            self.mask_unknown_colors,
            UNKNOWN_COLOR_POLICIES,
        )
        if isinstance(self.mask_colors, tuple):
            for color in self.mask_colors:
                check_items(
                    "mask_colors",
                    color,
                    low=0,
                    high=255,
                    example="[[0,0,0],[128,64,128]]",
                    length=3,
                )
            check_mask_color_count(len(self.mask_colors), self.num_classes)

    def _check_loss(self):
        terms = loss_terms(self.loss)
        if len(set(terms)) != len(terms) or not set(terms) <= set(LOSS_TERMS):
            raise UserInputError(
                f"loss={self.loss!r} is not supported; expected one of "
                f"{LOSS_TERMS} or a sum of different ones, e.g. ce+dice."
            )
        if self.loss_term_weights is not None:
            check_items(
                "loss_term_weights",
                self.loss_term_weights,
                low=0.0,
                high=1e3,
                example="[1,0.5]",
                length=len(terms),
                kind=float,
            )
        if self.class_weights not in (None, AUTO_CLASS_WEIGHTS):
            check_items(
                "class_weights",
                self.class_weights,
                low=0.0,
                high=1e6,
                example=f"auto (or {self.num_classes} numbers)",
                length=self.num_classes,
                kind=float,
            )
        for name in ("loss_term_weights", "class_weights"):
            weights = getattr(self, name)
            if isinstance(weights, tuple) and not any(weights):
                raise UserInputError(
                    f"{name}={list(weights)} makes the loss zero everywhere: "
                    "nothing would train. Expected at least one weight > 0."
                )
        check_range("focal_gamma", self.focal_gamma, low=0.0, high=10.0)
        if self.ohem_threshold is not None:
            check_range(
                "ohem_threshold",
                self.ohem_threshold,
                low=0.0,
                high=1.0,
                open_low=True,
                open_high=True,
            )
        check_range("ohem_min_kept", self.ohem_min_kept, low=1)

    def _check_ranges(self):
        for name in (
            "synthetic_train_size",
            "synthetic_val_size",
            "crop_size",
            "batch_size",
            "shuffle_buffer",
            "epochs",
            "backup_every_steps",
        ):
            check_range(name, getattr(self, name), low=1)
        # Larger than any training crop, export or calibration set in use,
        # and far below what would exhaust memory before training starts.
        check_range("crop_size", self.crop_size, high=MAX_IMAGE_SIDE)
        check_range("export_size", self.export_size, low=1, high=MAX_IMAGE_SIDE)
        check_range(
            "calibration_images",
            self.calibration_images,
            low=1,
            high=MAX_CALIBRATION_IMAGES,
        )
        check_range("synthetic_image_size", self.synthetic_image_size, low=8)
        check_range("seed", self.seed, low=0, high=MAX_SEED)
        check_range("warmup_steps", self.warmup_steps, low=0)
        for name in ("aux_loss_weight", "learning_rate", "weight_decay"):
            check_range(name, getattr(self, name), low=0.0)
        check_range("poly_power", self.poly_power, low=0.0)
        for name in ("min_scale", "max_scale"):
            check_range(
                name,
                getattr(self, name),
                low=0.0,
                high=MAX_AUGMENT_SCALE,
                open_low=True,
            )
        check_range(
            "momentum", self.momentum, low=0.0, high=1.0, open_high=True
        )
        if self.steps_per_epoch is not None:
            check_range("steps_per_epoch", self.steps_per_epoch, low=1)
        check_items(
            "eval_scales",
            self.eval_scales,
            low=EVAL_SCALE_RANGE[0],
            high=EVAL_SCALE_RANGE[1],
            example="[0.75,1,1.25]",
            kind=float,
        )

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)
