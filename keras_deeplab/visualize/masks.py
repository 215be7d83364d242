"""Colour palettes and overlays that turn class-id masks into pictures."""

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from keras_deeplab.labels import IGNORE_INDEX, voc_palette
from keras_deeplab.utils.atomic import atomic_file, atomic_write_bytes
from keras_deeplab.utils.errors import UserInputError

IGNORE_COLOUR = (255, 255, 255)
_LEGEND_MARGIN = 4
# A picture smaller than this is enlarged; the legend's text is at least
# _MIN_TEXT_PX high (a 129 px image had 8 px text).
_MIN_PICTURE_PX = 384
_MIN_TEXT_PX = 16


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


def legend(class_ids, names, *, height: int, text_px: int) -> np.ndarray:
    """A white RGB column (height, w, 3): one colour square and name per
    class id, text `text_px` high, as many rows as fit."""
    font = ImageFont.load_default(size=text_px)
    row_px = int(text_px * 1.4)
    margin = max(_LEGEND_MARGIN, text_px // 3)
    rows = [(int(c), names[int(c)]) for c in class_ids][
        : max(1, (height - margin) // row_px)
    ]
    width = (
        text_px
        + 3 * margin
        + max((int(font.getlength(name)) for _, name in rows), default=0)
    )
    picture = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(picture)
    palette = class_palette(256)
    for row, (class_id, name) in enumerate(rows):
        top = margin + row * row_px
        draw.rectangle(
            [margin, top, margin + text_px, top + text_px],
            fill=tuple(int(v) for v in palette[class_id]),
            outline=(0, 0, 0),
        )
        draw.text((2 * margin + text_px, top), name, fill=(0, 0, 0), font=font)
    return np.asarray(picture)


def prediction_picture(image, mask, names) -> np.ndarray:
    """The image and its prediction side by side, the prediction in solid
    palette colours (a blend into a saturated photo no longer matches the
    legend), with a legend of the classes present. Small images are
    enlarged (nearest neighbour, whole pixels) so that the legend's text is
    legible: the picture is scaled, never the font below `_MIN_TEXT_PX`."""
    if image.shape[:2] != mask.shape[:2]:
        raise UserInputError(
            f"image {image.shape[:2]} and mask {mask.shape[:2]} differ in "
            "size; expected equal height and width."
        )
    scale = max(1, -(-_MIN_PICTURE_PX // image.shape[0]))
    panels = [
        np.repeat(np.repeat(panel, scale, axis=0), scale, axis=1)
        for panel in (np.asarray(image, np.uint8), colorize(mask))
    ]
    height = panels[0].shape[0]
    gap = np.full((height, max(2, height // 100), 3), 255, np.uint8)
    present = [c for c in np.unique(mask) if c != IGNORE_INDEX]
    text_px = max(_MIN_TEXT_PX, height // 24)
    return np.concatenate(
        [
            panels[0],
            gap,
            panels[1],
            legend(present, names, height=height, text_px=text_px),
        ],
        axis=1,
    )


def save_png(path, array: np.ndarray) -> Path:
    """Writes an RGB uint8 array as PNG, atomically."""
    with atomic_file(path) as temporary:
        Image.fromarray(array).save(temporary, format="PNG")
    return Path(path)


def mask_png_bytes(mask: np.ndarray) -> bytes:
    """Class ids as PNG bytes: a VOC-style palette PNG (indices = class
    ids) for up to 256 classes, 16-bit grayscale above (up to 65536).

    Raises:
        UserInputError: for ids outside [0, 65535].
    """
    mask = np.asarray(mask)
    if mask.size and (mask.min() < 0 or mask.max() > 65535):
        raise UserInputError(
            f"class ids in [{mask.min()}, {mask.max()}] cannot be a PNG "
            "mask; expected 0..65535."
        )
    buffer = io.BytesIO()
    if mask.size == 0 or mask.max() <= 255:
        picture = Image.fromarray(mask.astype(np.uint8), mode="P")
        picture.putpalette(class_palette(256).ravel().tolist())
    else:
        picture = Image.fromarray(mask.astype(np.uint16))
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def gray_png_bytes(values: np.ndarray) -> bytes:
    """uint8 (h, w) as 8-bit grayscale PNG bytes (confidence maps)."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(values, np.uint8), mode="L").save(
        buffer, format="PNG"
    )
    return buffer.getvalue()


def save_mask_png(path, mask: np.ndarray) -> Path:
    """Writes class ids as `mask_png_bytes` (a palette PNG up to 256
    classes), atomically."""
    return atomic_write_bytes(path, mask_png_bytes(mask))
