"""Scan a dataset split and report every file that would break training."""

import dataclasses
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from keras_deeplab.data.configured import split_examples, split_source
from keras_deeplab.data.sources import (
    DataError,
    read_image,
    read_mask,
)
from keras_deeplab.labels import IGNORE_INDEX

_MAX_LISTED = 20
_READ_THREADS = 4  # PIL releases the GIL while decoding


@dataclasses.dataclass
class ValidationReport:
    """Problems and label statistics of one split.

    Attributes:
        split: str. Split name.
        scanned: int. Examples read.
        problems: list of (file or example name, message).
        class_pixels: int64 (num_classes,) labelled pixels per class.
        ignored_pixels: int. Pixels labelled 255.
    """

    split: str
    scanned: int
    problems: list
    class_pixels: np.ndarray
    ignored_pixels: int

    @property
    def ok(self) -> bool:
        return not self.problems

    def format(self) -> str:
        """Human-readable report: problems first, then the histogram."""
        lines = [
            f"split {self.split!r}: {self.scanned} examples, "
            f"{len(self.problems)} problems"
        ]
        for name, message in self.problems[:_MAX_LISTED]:
            lines.append(f"  {name}: {message}")
        if len(self.problems) > _MAX_LISTED:
            lines.append(f"  ... and {len(self.problems) - _MAX_LISTED} more")
        total = max(int(self.class_pixels.sum()) + self.ignored_pixels, 1)
        lines.append("  class histogram (pixels, share):")
        for class_id, count in enumerate(self.class_pixels):
            lines.append(
                f"    {class_id:3d}: {int(count):>12,} {count / total:7.2%}"
            )
        lines.append(
            f"    255: {self.ignored_pixels:>12,} "
            f"{self.ignored_pixels / total:7.2%} (ignored)"
        )
        return "\n".join(lines)


def _mask_problems(mask, *, num_classes):
    bad = np.unique(mask[(mask >= num_classes) & (mask != IGNORE_INDEX)])
    if bad.size:
        return (
            f"labels {bad.tolist()[:10]} are >= num_classes={num_classes} "
            "and not 255 (ignore); fix the mask or num_classes."
        )
    return None


def _check(image, mask, *, num_classes, max_size):
    """Problems of one decoded pair (None when it is fine)."""
    if image.shape[:2] != mask.shape:
        return (
            f"image is {image.shape[0]}x{image.shape[1]} but its mask is "
            f"{mask.shape[0]}x{mask.shape[1]}; expected equal sizes."
        )
    if max_size and max(image.shape[:2]) > max_size:
        return (
            f"image is {image.shape[0]}x{image.shape[1]}, larger than the "
            f"evaluation crop_size={max_size}; raise crop_size."
        )
    return _mask_problems(mask, num_classes=num_classes)


def _scan_files(examples, *, num_classes, max_size):
    def scan(example):
        try:
            image = read_image(example.image)
            mask = read_mask(example.mask, example.label_table)
        except DataError as err:
            return str(example.image), str(err), None
        return (
            str(example.image),
            _check(image, mask, num_classes=num_classes, max_size=max_size),
            mask,
        )

    with ThreadPoolExecutor(_READ_THREADS) as pool:
        yield from pool.map(scan, examples)


def _scan_dataset(dataset, *, num_classes, max_size):
    for image, mask, name in dataset.as_numpy_iterator():
        yield (
            name.decode(),
            _check(image, mask, num_classes=num_classes, max_size=max_size),
            mask,
        )


def validate_split(config, split, *, evaluation: bool) -> ValidationReport:
    """Reads every example of `split` and collects problems and a histogram.

    Args:
        config: DeepLabConfig.
        split: str. Split name.
        evaluation: bool. Also check that images fit `crop_size`, which the
            evaluation pipeline pads to.
    """
    max_size = config.crop_size if evaluation else None
    if config.dataset in ("synthetic", "tfds"):
        results = _scan_dataset(
            split_source(config, split),
            num_classes=config.num_classes,
            max_size=max_size,
        )
    else:
        results = _scan_files(
            split_examples(config, split),
            num_classes=config.num_classes,
            max_size=max_size,
        )
    problems, scanned = [], 0
    histogram = np.zeros(256, dtype=np.int64)
    for name, problem, mask in results:
        scanned += 1
        if problem:
            problems.append((name, problem))
        if mask is not None:
            histogram += np.bincount(mask.ravel(), minlength=256)
    if not scanned:
        problems.append(
            (
                f"split {split!r}",
                "has no examples; check data_dir, the split name and its "
                "list file.",
            )
        )
    return ValidationReport(
        split=split,
        scanned=scanned,
        problems=problems,
        class_pixels=histogram[: config.num_classes],
        ignored_pixels=int(histogram[IGNORE_INDEX]),
    )


def validate_data(config):
    """Reports for the training and the validation split."""
    return [
        validate_split(config, config.train_split, evaluation=False),
        validate_split(config, config.val_split, evaluation=True),
    ]


def require_valid(config):
    """Raises DataError summarising the problems of both splits, if any."""
    reports = validate_data(config)
    problems = [(r.split, p) for r in reports for p in r.problems]
    if problems:
        split, (name, message) = problems[0]
        raise DataError(
            f"refusing to train: {len(problems)} problem(s) in the data, "
            f"first in split {split!r}: {name}: {message} Run "
            "`keras-deeplab validate-data` for the full list."
        )
    return reports
