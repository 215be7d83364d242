"""Colour palettes and overlays that turn class-id masks into pictures."""

from pathlib import Path

import numpy as np
from PIL import Image

from keras_deeplab.atomic import atomic_file
from keras_deeplab.errors import UserInputError

IGNORE_COLOUR = (255, 255, 255)


def class_palette(num_classes: int = 256) -> np.ndarray:
    """The Pascal VOC colour map: (num_classes, 3) uint8, class 0 black.

    Each class id's bits are spread over the high bits of R, G and B, which is
    what VOC-style palette PNGs store.
    """
    palette = np.zeros((num_classes, 3), dtype=np.uint8)
    for class_id in range(num_classes):
        value, colour = class_id, [0, 0, 0]
        for shift in range(7, -1, -1):
            for channel in range(3):
                colour[channel] |= ((value >> channel) & 1) << shift
            value >>= 3
        palette[class_id] = colour
    return palette


def colorize(mask: np.ndarray) -> np.ndarray:
    """Class-id mask (h, w) -> RGB uint8 (h, w, 3); 255 (ignore) is white."""
    palette = class_palette(256)
    palette[255] = IGNORE_COLOUR
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
