"""Colour palettes and overlays that turn class-id masks into pictures."""

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from keras_deeplab.atomic import atomic_file
from keras_deeplab.errors import UserInputError
from keras_deeplab.labels import IGNORE_INDEX, voc_palette

IGNORE_COLOUR = (255, 255, 255)
_SWATCH = 12  # legend colour square, pixels
_LEGEND_ROW = 16
_LEGEND_MARGIN = 4


def class_palette(num_classes: int = 256) -> np.ndarray:
    """The Pascal VOC colour map as (num_classes, 3) uint8, class 0 black."""
    return np.asarray(voc_palette(num_classes), dtype=np.uint8)


def colorize(mask: np.ndarray) -> np.ndarray:
    """Class-id mask (h, w) -> RGB uint8 (h, w, 3); 255 (ignore) is white."""
    palette = class_palette(256)
    palette[IGNORE_INDEX] = IGNORE_COLOUR
    return palette[np.asarray(mask, dtype=np.uint8)]


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5):
    """Blends the colourised mask over an RGB uint8 image."""
    if image.shape[:2] != mask.shape[:2]:
        raise UserInputError(
            f"image {image.shape[:2]} and mask {mask.shape[:2]} differ in "
            "size; expected equal height and width."
        )
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colorize(mask)
    return np.clip(blended, 0, 255).astype(np.uint8)


def legend(class_ids, names, *, height: int) -> np.ndarray:
    """A white RGB column (height, w, 3): one colour square and name per
    class id, in palette colours, as many rows as fit."""
    font = ImageFont.load_default()
    rows = [(int(c), names[int(c)]) for c in class_ids][
        : max(1, (height - _LEGEND_MARGIN) // _LEGEND_ROW)
    ]
    width = (
        _SWATCH
        + 3 * _LEGEND_MARGIN
        + max((int(font.getlength(name)) for _, name in rows), default=0)
    )
    picture = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(picture)
    palette = class_palette(256)
    for row, (class_id, name) in enumerate(rows):
        top = _LEGEND_MARGIN + row * _LEGEND_ROW
        draw.rectangle(
            [_LEGEND_MARGIN, top, _LEGEND_MARGIN + _SWATCH, top + _SWATCH],
            fill=tuple(int(v) for v in palette[class_id]),
            outline=(0, 0, 0),
        )
        draw.text(
            (2 * _LEGEND_MARGIN + _SWATCH, top), name, fill=(0, 0, 0), font=font
        )
    return np.asarray(picture)


def overlay_with_legend(image, mask, names) -> np.ndarray:
    """`overlay` with a legend of the classes present in `mask` on its
    right."""
    blended = overlay(image, mask)
    present = [c for c in np.unique(mask) if c != IGNORE_INDEX]
    return np.concatenate(
        [blended, legend(present, names, height=blended.shape[0])], axis=1
    )


def save_png(path, array: np.ndarray) -> Path:
    """Writes an RGB uint8 array as PNG, atomically."""
    with atomic_file(path) as temporary:
        Image.fromarray(array).save(temporary, format="PNG")
    return Path(path)


def save_mask_png(path, mask: np.ndarray) -> Path:
    """Writes class ids as a VOC-style palette PNG (indices = class ids)."""
    picture = Image.fromarray(np.asarray(mask, dtype=np.uint8), mode="P")
    picture.putpalette(class_palette(256).ravel().tolist())
    with atomic_file(path) as temporary:
        picture.save(temporary, format="PNG")
    return Path(path)
