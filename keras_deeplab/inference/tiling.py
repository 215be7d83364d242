"""Sliding-window inference: images larger than memory allows, in tiles.

Tiles of a fixed size step over the image with an overlap; the last tile of
a row or column ends at the border, so any image size is covered, and an
image smaller than the tile is one tile of its own size. Tiles run a batch
at a time (with `inference.predict_probabilities`, so multi-scale and flip
apply per tile); overlapping class probabilities are blended with equal
weights ("mean") or a Gaussian window that trusts tile centres more
("gaussian", sigma = 1/8 of the tile side, as nnU-Net).

Memory: besides the image and the output, only one band of probabilities
as tall as a tile (tile height x image width x classes, float32) is kept:
rows are final, and are turned into class ids, as soon as no later tile
covers them (`finished_rows`, which also serves images that are not in
memory: `inference.raster` reads a raster's rows as the window needs them).
"""

import dataclasses

import numpy as np

from keras_deeplab.inference.probabilities import (
    confidence_map,
    predict_probabilities,
)
from keras_deeplab.utils.errors import UserInputError
from keras_deeplab.utils.image_size import parse_size

WINDOWS = ("mean", "gaussian")
_MIN_GAUSSIAN_WEIGHT = 1e-3  # of the centre weight: tile corners still count


def parse_tile(text) -> tuple:
    """(height, width) from "512" or "512x1024" (`--tile`)."""
    return parse_size(text, option="--tile")


def tile_starts(length: int, tile: int, stride: int) -> list:
    """Offsets of tiles of `tile` pixels every `stride` that cover
    [0, length); the last one ends at `length`."""
    if length <= tile:
        return [0]
    return [*range(0, length - tile, stride), length - tile]


def window_weights(height: int, width: int, window: str) -> np.ndarray:
    """Blending weights of one tile, float32 (height, width); `window` is
    one of WINDOWS (checked by `Tiling`)."""
    if window == "mean":
        return np.ones((height, width), np.float32)
    axes = []
    for side in (height, width):
        centre, sigma = (side - 1) / 2, side / 8
        axes.append(np.exp(-0.5 * ((np.arange(side) - centre) / sigma) ** 2))
    weights = np.outer(*axes)
    return np.maximum(weights, _MIN_GAUSSIAN_WEIGHT).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Tiling:
    """How `sliding_window_predict` cuts an image (`--tile`, `--overlap`)."""

    tile: tuple  # (height, width) pixels
    overlap: float = 0.25
    window: str = "mean"
    batch_size: int = 4

    def __post_init__(self):
        if not 0.0 <= self.overlap < 1.0:
            raise UserInputError(
                f"--overlap {self.overlap!r} is invalid; expected a fraction "
                "of the tile in [0, 1), e.g. 0.25."
            )
        if self.window not in WINDOWS:
            raise UserInputError(
                f"window={self.window!r} is not supported; expected one of "
                f"{WINDOWS}."
            )


def batch_class_ids(model, images, *, scales=(1.0,), flip=False, tiling=None):
    """Class ids (batch, h, w) of a batch: each image whole, or with a
    `Tiling` tile by tile."""
    if tiling is None:
        return predict_probabilities(
            model, images, scales=scales, flip=flip
        ).argmax(-1)
    return np.stack(
        [
            sliding_window_predict(
                model, image, tiling, scales=scales, flip=flip
            )
            for image in np.asarray(images)
        ]
    )


class _Band:
    """Blended probabilities of the rows [top, top + rows) of the output."""

    def __init__(self, rows, width, num_classes):
        self.top = 0
        self.total = np.zeros((rows, width, num_classes), np.float32)
        self.weight = np.zeros((rows, width, 1), np.float32)

    def add(self, y, x, probabilities, weights):
        rows, columns = probabilities.shape[:2]
        top = y - self.top
        self.total[top : top + rows, x : x + columns] += (
            probabilities * weights[..., None]
        )
        self.weight[top : top + rows, x : x + columns] += weights[..., None]

    def release(self, rows):
        """(probabilities, covered) of the first `rows` rows, the band
        moving down; `covered` is False where no tile ran (all of its tiles
        were left out as invalid), where the probabilities are 0."""
        weight = self.weight[:rows]
        covered = weight[..., 0] > 0
        done = self.total[:rows] / np.where(weight > 0, weight, 1.0)
        kept = self.total.shape[0] - rows
        for array in (self.total, self.weight):
            array[:kept] = array[rows:]  # numpy copies overlapping views
            array[kept:] = 0.0
        self.top += rows
        return done, covered


def finished_rows(
    model,
    read_rows,
    shape,
    tiling,
    *,
    scales=(1.0,),
    flip=False,
    run_tile=None,
):
    """Yields (top, probabilities, covered) for rows of the output as soon
    as no later tile covers them, top to bottom: the sliding window over an
    image that need not be in memory.

    Args:
        model: inference model returning logits (batch, h, w, classes).
        read_rows: fn(top, count) -> (count, width, 3) RGB in [0, 255] of
            the rows [top, top + count): the image, or a raster's window.
        shape: (height, width) of the image.
        tiling: `Tiling`.
        scales, flip: multi-scale and flipped inference of each tile.
        run_tile: fn(rows (tile_height, width, 3), x, width) -> bool, or
            None: whether the tile at column x of these rows is predicted
            (a raster leaves out tiles that are all nodata).

    Yields:
        top: int. First row.
        probabilities: float32 (rows, width, classes), blended.
        covered: bool (rows, width): False where no tile ran.
    """
    height, width = shape
    tile_height = min(tiling.tile[0], height)
    tile_width = min(tiling.tile[1], width)
    rows = tile_starts(
        height, tile_height, max(1, round(tile_height * (1 - tiling.overlap)))
    )
    columns = tile_starts(
        width, tile_width, max(1, round(tile_width * (1 - tiling.overlap)))
    )
    weights = window_weights(tile_height, tile_width, tiling.window)
    band = _Band(tile_height, width, _num_classes(model))
    for y in rows:
        if y > band.top:
            top = band.top
            yield (top, *band.release(y - top))
        strip = read_rows(y, tile_height)
        starts = [
            x
            for x in columns
            if run_tile is None or run_tile(strip, x, tile_width)
        ]
        for first in range(0, len(starts), tiling.batch_size):
            batch = starts[first : first + tiling.batch_size]
            crops = np.stack(
                [strip[:, x : x + tile_width] for x in batch]
            ).astype(np.float32)
            tile_probabilities = predict_probabilities(
                model, crops, scales=scales, flip=flip
            )
            for x, probability in zip(batch, tile_probabilities, strict=True):
                band.add(y, x, probability, weights)
    top = band.top
    yield (top, *band.release(height - top))


def _num_classes(model) -> int:
    return int(model.output_shape[-1])


def class_id_dtype(num_classes: int):
    """uint8 for up to 256 classes, else int32."""
    return np.uint8 if num_classes <= 256 else np.int32


def _rows_of(model, image, tiling, scales, flip):
    """`finished_rows` of an image in memory."""
    return finished_rows(
        model,
        lambda y, count: image[y : y + count],
        image.shape[:2],
        tiling,
        scales=scales,
        flip=flip,
    )


def tiled_class_maps(
    model, image, tiling, *, scales=(1.0,), flip=False, confidence=False
):
    """(class ids, confidence or None) of one image, tile by tile; only a
    band of probabilities as tall as a tile is held.

    Returns:
        (height, width) uint8 class ids (int32 past 256 classes), and with
        `confidence` the uint8 top-class probability x 255, else None.
    """
    height, width = image.shape[:2]
    ids = np.zeros((height, width), class_id_dtype(_num_classes(model)))
    scores = np.zeros((height, width), np.uint8) if confidence else None
    for top, done, _ in _rows_of(model, image, tiling, scales, flip):
        ids[top : top + len(done)] = done.argmax(-1)
        if confidence:
            scores[top : top + len(done)] = confidence_map(done)
    return ids, scores


def sliding_window_predict(
    model, image, tiling, *, scales=(1.0,), flip=False, probabilities=False
):
    """Class ids of one image, predicted tile by tile.

    Args:
        model: inference model returning logits (batch, h, w, classes).
        image: array (height, width, 3), RGB in [0, 255] (uint8 keeps a
            large image small: tiles are made float32 one batch at a time).
        tiling: `Tiling`: tile (height, width) in pixels, the fraction of a
            tile the next one overlaps, "mean" or "gaussian" blending, and
            tiles per model call (memory grows with it).
        scales, flip: multi-scale and flipped inference of each tile.
        probabilities: return the blended probabilities (height, width,
            classes) float32 instead; they need memory for the whole image.

    Returns:
        (height, width) uint8 class ids (int32 past 256 classes), or the
        probabilities.
    """
    if not probabilities:
        return tiled_class_maps(model, image, tiling, scales=scales, flip=flip)[
            0
        ]
    height, width = image.shape[:2]
    output = np.zeros((height, width, _num_classes(model)), np.float32)
    for top, done, _ in _rows_of(model, image, tiling, scales, flip):
        output[top : top + len(done)] = done
    return output
