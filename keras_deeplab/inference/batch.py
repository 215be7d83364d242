"""The inference core every driver shares (`predict`, Beam, Ray): images of
any sizes in, per image small encoded outputs out.

Images of one shape run stacked through the model, so a model call never
mixes shapes and a batch of mixed sizes needs no resizing or padding. What
leaves the core is PNG bytes and per-class pixel counts, not float
probabilities: a 512x512 class map is a few KB where its probabilities are
22 MB, and that is what a distributed job holds in flight and moves between
its stages.
"""

import dataclasses
import time

import numpy as np

from keras_deeplab.inference.probabilities import (
    confidence_map,
    predict_probabilities,
)
from keras_deeplab.inference.tiling import (
    Tiling,
    class_id_dtype,
    tiled_class_maps,
)
from keras_deeplab.visualize.masks import gray_png_bytes, mask_png_bytes

# Whole-image runs refuse larger images (4096 x 4096, the SavedModel's
# default): their activations would not fit a worker; --tile runs them.
DEFAULT_MAX_PIXELS = 4096 * 4096


@dataclasses.dataclass(frozen=True)
class InferenceOptions:
    """How each image is segmented (`predict`'s flags)."""

    scales: tuple = (1.0,)
    flip: bool = False
    tiling: Tiling | None = None
    confidence: bool = False
    # Whole-image runs only; with `tiling` any image the reader decodes.
    max_pixels: int = DEFAULT_MAX_PIXELS


@dataclasses.dataclass(frozen=True)
class Segmented:
    """One image's outputs, encoded."""

    key: object
    size: tuple  # (height, width)
    mask_png: bytes
    confidence_png: bytes | None
    pixels_per_class: dict  # {class id: pixels}, classes present only
    seconds: float  # its share of the model calls


def oversized(image, options: InferenceOptions) -> str | None:
    """Why `image` cannot run whole under `options`, or None."""
    height, width = image.shape[:2]
    if options.tiling is None and height * width > options.max_pixels:
        return (
            f"{width}x{height} pixels is more than the {options.max_pixels:,} "
            "a whole-image run takes (--max-pixels); pass --tile 512 to "
            "segment it in tiles"
        )
    return None


def class_maps(model, images, options: InferenceOptions):
    """(class ids (b, h, w), confidence (b, h, w) uint8 or None) of a stack
    of same-sized images (b, h, w, 3), each whole or tiled."""
    if options.tiling is not None:
        maps = [
            tiled_class_maps(
                model,
                image,
                options.tiling,
                scales=options.scales,
                flip=options.flip,
                confidence=options.confidence,
            )
            for image in images
        ]
        ids, scores = zip(*maps, strict=True)
        return np.stack(ids), (np.stack(scores) if options.confidence else None)
    probabilities = predict_probabilities(
        model,
        np.asarray(images, np.float32),
        scales=options.scales,
        flip=options.flip,
    )
    ids = probabilities.argmax(-1).astype(
        class_id_dtype(probabilities.shape[-1])
    )
    scores = confidence_map(probabilities) if options.confidence else None
    return ids, scores


def pixels_per_class(ids) -> dict:
    """{class id: pixels} of the classes present in a class map."""
    counts = np.bincount(np.asarray(ids).ravel())
    return {int(c): int(n) for c, n in enumerate(counts) if n}


def segment_images(model, items, options: InferenceOptions) -> list:
    """`Segmented` outputs of (key, image) pairs, in their order.

    Args:
        model: inference model (one logits output), or anything with
            `predict_on_batch` and `output_shape` (a SavedModel's logits).
        items: (key, uint8 (h, w, 3)) pairs of any sizes; images of one
            shape run as one model call.
        options: `InferenceOptions`.
    """
    items = list(items)
    by_shape = {}
    for index, (_, image) in enumerate(items):
        by_shape.setdefault(np.shape(image), []).append(index)
    results = [None] * len(items)
    for indices in by_shape.values():
        start = time.perf_counter()
        ids, scores = class_maps(
            model, np.stack([items[i][1] for i in indices]), options
        )
        share = (time.perf_counter() - start) / len(indices)
        for row, index in enumerate(indices):
            results[index] = Segmented(
                key=items[index][0],
                size=tuple(ids[row].shape),
                mask_png=mask_png_bytes(ids[row]),
                confidence_png=(
                    None if scores is None else gray_png_bytes(scores[row])
                ),
                pixels_per_class=pixels_per_class(ids[row]),
                seconds=share,
            )
    return results
