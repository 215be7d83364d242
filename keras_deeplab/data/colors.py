"""Masks stored as RGB colours (CamVid, Cityscapes `_color`, most labelling
tools' exports): the colour of each class, mapped to class ids on reading.

`mask_colors` in a config lists one (R, G, B) per class in class-id order,
inline or as a palette file: one class a line, its first three integers
the colour (anything after them, such as a class name, is ignored; `#`
starts a comment), which reads CamVid's `label_colors.txt` as it is.
A colour not in the list is an error naming the file, the colour and its
pixel count, or the ignore label with `mask_unknown_colors: ignore`.
"""

from pathlib import Path

import numpy as np

from keras_deeplab.config.fields import (
    UNKNOWN_COLOR_POLICIES,
    check_mask_color_count,
)
from keras_deeplab.labels import IGNORE_INDEX
from keras_deeplab.spec import check_choice
from keras_deeplab.utils.errors import UserInputError, read_text_file

_CHANNEL_WEIGHTS = np.array([65536, 256, 1], np.int64)


def color_keys(rgb) -> np.ndarray:
    """One int64 per pixel: R * 65536 + G * 256 + B."""
    return np.asarray(rgb)[..., :3].astype(np.int64) @ _CHANNEL_WEIGHTS


def distinct_colors(rgb):
    """(colours (n, 3) int, pixel counts (n,)), most frequent first."""
    keys, counts = np.unique(color_keys(rgb), return_counts=True)
    order = np.argsort(-counts, kind="stable")
    keys, counts = keys[order], counts[order]
    colors = np.stack([keys // 65536, keys // 256 % 256, keys % 256], -1)
    return colors, counts


class MaskColors:
    """Colours -> class ids (a colour's index in `colors`).

    Args:
        colors: sequence of (R, G, B), one per class, class-id order.
        unknown: "error" or "ignore" for colours not in `colors`.
    """

    def __init__(self, colors, unknown="error"):
        check_choice("mask_unknown_colors", unknown, UNKNOWN_COLOR_POLICIES)
        keys = color_keys(np.asarray(colors, np.int64).reshape(-1, 3))
        if len(np.unique(keys)) != len(keys):
            raise UserInputError(
                "mask_colors lists a colour twice; give each class its own "
                "colour."
            )
        self.class_ids = np.argsort(keys, kind="stable")
        self.keys = keys[self.class_ids]
        self.unknown = unknown

    def to_class_ids(self, rgb, path) -> np.ndarray:
        """uint8 (h, w) class ids of an RGB(A) mask; the alpha is ignored."""
        keys = color_keys(rgb)
        position = np.clip(
            np.searchsorted(self.keys, keys), 0, len(self.keys) - 1
        )
        known = self.keys[position] == keys
        if not known.all() and self.unknown == "error":
            colors, counts = distinct_colors(np.asarray(rgb)[~known])
            raise UserInputError(
                f"mask {str(path)!r} has {int(counts.sum())} pixels in "
                f"{len(colors)} colours not in mask_colors, e.g. "
                f"{tuple(int(c) for c in colors[0])} on {int(counts[0])} "
                "pixels; add them to mask_colors or set "
                "mask_unknown_colors: ignore."
            )
        return np.where(known, self.class_ids[position], IGNORE_INDEX).astype(
            np.uint8
        )


def read_palette(path) -> tuple:
    """((R, G, B), ...) from a palette file (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(
            f"mask_colors palette file {str(path)!r} does not exist; expected "
            "a file of one 'R G B' line per class, or an inline list."
        )
    text = read_text_file(path, what="mask_colors palette file")
    colors = []
    for number, line in enumerate(text.splitlines(), start=1):
        text = line.split("#")[0].replace(",", " ").split()
        if not text:
            continue
        try:
            color = tuple(int(value) for value in text[:3])
        except ValueError:
            color = ()
        if len(color) != 3 or not all(0 <= c <= 255 for c in color):
            raise UserInputError(
                f"mask_colors palette file {str(path)!r}, line {number}: "
                f"{line.strip()!r} does not start with three integers "
                "0..255 (R G B)."
            )
        colors.append(color)
    return tuple(colors)


def mask_colors_of(config):
    """The config's `MaskColors`, or None when masks hold class ids."""
    if config.mask_colors is None:
        return None
    colors = config.mask_colors
    if isinstance(colors, str):
        colors = read_palette(colors)
    check_mask_color_count(len(colors), config.num_classes)
    return MaskColors(colors, config.mask_unknown_colors)
