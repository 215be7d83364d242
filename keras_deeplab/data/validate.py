"""Scan a dataset split and report every file that would break training."""

import dataclasses
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from keras_deeplab.data.configured import FILE_DATASETS, DataSplits
from keras_deeplab.data.sources import (
    ColorMaskError,
    DataError,
    read_image,
    read_mask,
)
from keras_deeplab.labels import (
    CITYSCAPES_COLORS,
    IGNORE_INDEX,
    default_class_names,
    voc_palette,
)

_MAX_LISTED = 20
_FILES_PER_GROUP = 3
_READ_THREADS = 4  # PIL releases the GIL while decoding
_COLORS_SHOWN = 12


@dataclasses.dataclass
class ValidationReport:
    """Problems and label statistics of one split.

    Attributes:
        split: str. Split name.
        scanned: int. Examples read.
        problems: list of (file at fault, message without the file name).
        class_pixels: int64 (num_classes,) labelled pixels per class.
        ignored_pixels: int. Pixels labelled 255.
        warnings: list of str. Things that do not stop training.
        mask_colors: {(r, g, b): pixels} of masks stored as RGB colours
            without `mask_colors` in the config.
    """

    split: str
    scanned: int
    problems: list
    class_pixels: np.ndarray
    ignored_pixels: int
    warnings: list = dataclasses.field(default_factory=list)
    mask_colors: dict = dataclasses.field(default_factory=dict)
    class_names: tuple | None = None  # None: class_0, class_1, ...

    @property
    def ok(self) -> bool:
        return not self.problems

    def grouped_problems(self) -> list:
        """[(message, [files])], one entry per distinct message."""
        groups = {}
        for name, message in self.problems:
            groups.setdefault(message, []).append(name)
        return list(groups.items())

    def format(self) -> str:
        """Human-readable report: problems first, then the histogram."""
        groups = self.grouped_problems()
        lines = [
            f"split {self.split!r}: {self.scanned} examples, "
            f"{len(self.problems)} problems"
        ]
        for message, names in groups[:_MAX_LISTED]:
            if len(names) == 1:
                lines.append(f"  {names[0]}: {message}")
                continue
            shown = ", ".join(names[:_FILES_PER_GROUP])
            more = len(names) - _FILES_PER_GROUP
            lines.append(
                f"  {len(names)} files: {message} ({shown}"
                + (f" and {more} more)" if more > 0 else ")")
            )
        if len(groups) > _MAX_LISTED:
            lines.append(f"  ... and {len(groups) - _MAX_LISTED} more kinds")
        lines += [f"  warning: {warning}" for warning in self.warnings]
        lines += self._color_suggestion()
        total = max(int(self.class_pixels.sum()) + self.ignored_pixels, 1)
        lines.append("  class histogram (pixels, share):")
        names = self.class_names or default_class_names(len(self.class_pixels))
        width = max(len(name) for name in (*names, "(ignored)"))
        for class_id, (name, count) in enumerate(
            zip(names, self.class_pixels, strict=True)
        ):
            lines.append(
                f"    {class_id:3d} {name:<{width}} {int(count):>12,} "
                f"{count / total:7.2%}"
            )
        lines.append(
            f"    255 {'(ignored)':<{width}} {self.ignored_pixels:>12,} "
            f"{self.ignored_pixels / total:7.2%}"
        )
        return "\n".join(lines)

    def _color_suggestion(self) -> list:
        """What the colours of RGB masks are, and a `mask_colors` line to
        paste only where their class order is known."""
        if not self.mask_colors:
            return []
        total = sum(self.mask_colors.values())
        lines = [f"  masks are RGB colours: {len(self.mask_colors)} distinct"]
        known = _known_color_order(self.mask_colors, len(self.class_pixels))
        if known is None:
            seen = ", ".join(
                f"{list(color)} {pixels / total:.1%}"
                for color, pixels in list(self.mask_colors.items())[
                    :_COLORS_SHOWN
                ]
            )
            return lines + [
                f"  in the order the files first show them: {seen}",
                "  RGB masks do not say which colour is which class, and "
                "that order is a guess: write mask_colors yourself, one "
                "colour per class in class-id order (background first), and "
                "set mask_unknown_colors: ignore for colours to skip (e.g. a "
                "border colour).",
            ]
        convention, ordered, ignored = known
        listed = ", ".join(str(list(color)) for color in ordered)
        lines += [
            f"  they are {convention} colours, whose position is the class "
            "id (check it against your class_names):",
            f"    mask_colors: [{listed}]",
        ]
        if ignored:
            lines.append(
                f"  {list(ignored)} is {convention}'s ignore colour, left "
                "out above: add mask_unknown_colors: ignore."
            )
        return lines


def _known_color_order(colors, num_classes):
    """(convention, colours in class-id order, ignore colour or None) when
    every colour is a known palette's and fits `num_classes`; else None."""
    voc = voc_palette(256)
    candidates = [
        ("Pascal VOC's palette", voc[:num_classes], voc[IGNORE_INDEX])
    ]
    if num_classes == len(CITYSCAPES_COLORS):  # unlabelled pixels are black
        candidates.append(("Cityscapes'", CITYSCAPES_COLORS, (0, 0, 0)))
    for convention, palette, ignore in candidates:
        if set(colors) <= {*palette, ignore}:
            return convention, palette, ignore if ignore in colors else None
    return None


def _mask_problem(mask, *, num_classes):
    bad = np.unique(mask[(mask >= num_classes) & (mask != IGNORE_INDEX)])
    if bad.size:
        return (
            f"labels {bad.tolist()[:10]} are >= num_classes={num_classes} "
            "and not 255 (ignore); fix the mask or num_classes."
        )
    return None


def _pair_problem(image, mask, *, num_classes):
    """The file at fault ("image"/"mask") and its problem, or None."""
    if image.shape[:2] != mask.shape:
        return "mask", (
            f"is {mask.shape[0]}x{mask.shape[1]} but its image is "
            f"{image.shape[0]}x{image.shape[1]}; expected equal sizes."
        )
    problem = _mask_problem(mask, num_classes=num_classes)
    return ("mask", problem) if problem else None


def _without_name(err, path):
    """A reader's message with the file's own name taken out (the report
    names the file once, and identical problems group)."""
    message = str(err)
    for form in (repr(str(path)), str(path)):
        message = message.replace(f" {form}", "", 1)
    return message


def _scan_files(examples, *, num_classes):
    def scan(example):
        files = {"image": example.image, "mask": example.mask}
        try:
            image = read_image(example.image)
        except DataError as err:
            return str(example.image), _without_name(err, example.image), None
        try:
            mask = read_mask(example.mask, example.label_table, example.colors)
        except ColorMaskError as err:
            colors = dict(
                zip(
                    map(tuple, err.colors.tolist()),
                    err.counts.tolist(),
                    strict=True,
                )
            )
            return str(example.mask), _without_name(err, example.mask), colors
        except DataError as err:
            return str(example.mask), _without_name(err, example.mask), None
        fault = _pair_problem(image, mask, num_classes=num_classes)
        if fault is None:
            return str(example.mask), None, mask
        kind, message = fault
        return str(files[kind]), message, mask

    with ThreadPoolExecutor(_READ_THREADS) as pool:
        yield from pool.map(scan, examples)


def _scan_dataset(dataset, *, num_classes):
    for image, mask, name in dataset.as_numpy_iterator():
        fault = _pair_problem(image, mask, num_classes=num_classes)
        yield name.decode(), fault[1] if fault else None, mask


def validate_split(splits, split) -> ValidationReport:
    """Reads every example of `split` and collects problems and a histogram.

    Args:
        splits: DataSplits of the config.
        split: str. Split name.
    """
    config = splits.config
    if config.dataset in FILE_DATASETS:
        results = _scan_files(
            splits.examples(split), num_classes=config.num_classes
        )
    else:
        results = _scan_dataset(
            splits.source(split), num_classes=config.num_classes
        )
    problems, scanned, colors = [], 0, {}
    histogram = np.zeros(256, dtype=np.int64)
    for name, problem, mask in results:
        scanned += 1
        if problem:
            problems.append((name, problem))
        if isinstance(mask, dict):  # the colours of an RGB mask
            for color, pixels in mask.items():
                colors[color] = colors.get(color, 0) + int(pixels)
        elif mask is not None:
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
        mask_colors=colors,
        class_names=config.names,
    )


def split_overlap(splits) -> list:
    """Image files that the training and the validation split both list."""
    config = splits.config
    if config.dataset not in FILE_DATASETS:
        return []
    train = {str(e.image) for e in splits.examples(config.train_split)}
    val = {str(e.image) for e in splits.examples(config.val_split)}
    return sorted(train & val)


def validate_data(config, splits=None):
    """Reports for the training and the validation split; the training
    report warns about files that are in both.

    Args:
        config: DeepLabConfig.
        splits: DataSplits of `config` to reuse, or None.
    """
    splits = splits or DataSplits(config)
    reports = [
        validate_split(splits, config.train_split),
        validate_split(splits, config.val_split),
    ]
    shared = split_overlap(splits)
    if shared:
        shown = ", ".join(shared[:_FILES_PER_GROUP])
        reports[0].warnings.append(
            f"{len(shared)} images are in both {config.train_split!r} and "
            f"{config.val_split!r} (e.g. {shown}): validation scores them "
            "after training on them; fix the split lists."
        )
    return reports


def require_valid(config, splits=None):
    """Raises DataError summarising the problems of both splits, if any;
    prints the warnings."""
    reports = validate_data(config, splits)
    for report in reports:
        for warning in report.warnings:
            print(f"warning: {warning}", flush=True)
    problems = [(r.split, p) for r in reports for p in r.problems]
    if problems:
        split, (name, message) = problems[0]
        raise DataError(
            f"refusing to train: {len(problems)} problem(s) in the data, "
            f"first in split {split!r}: {name}: {message} Run "
            "`keras-deeplab validate-data` for the full list."
        )
    return reports
