"""Sliding-window inference: coverage, exactness, blending and memory."""

import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_deeplab import DeepLabV3
from keras_deeplab.inference.probabilities import predict_probabilities
from keras_deeplab.inference.tiling import (
    Tiling,
    parse_tile,
    sliding_window_predict,
    tile_starts,
    window_weights,
)
from keras_deeplab.utils.errors import UserInputError
from tests.helpers import TINY, random_images

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return DeepLabV3(3, **TINY)


def test_tiles_cover_the_image_and_end_at_its_border():
    assert tile_starts(100, 40, 30) == [0, 30, 60]
    assert tile_starts(40, 40, 30) == [0]
    assert tile_starts(20, 40, 30) == [0]
    for length, tile, stride in [(97, 32, 24), (513, 128, 96), (65, 64, 1)]:
        starts = tile_starts(length, tile, stride)
        covered = np.zeros(length, bool)
        for start in starts:
            covered[start : start + tile] = True
        assert covered.all() and starts[-1] + tile == length


def test_bad_tiles_and_overlaps_are_refused():
    assert parse_tile("512") == (512, 512)
    assert parse_tile("256x1024") == (256, 1024)
    for text in ("0", "abc", "4x4", "1x2x3"):
        with pytest.raises(UserInputError, match="--tile"):
            parse_tile(text)
    with pytest.raises(UserInputError, match="--overlap 1.0"):
        sliding_window_predict(
            None, np.zeros((8, 8, 3)), Tiling((8, 8), overlap=1.0)
        )


def test_a_window_as_large_as_the_image_is_the_whole_image(model):
    images = random_images(1, 33, 47)
    for options in ({}, {"scales": (0.75, 1.25), "flip": True}):
        whole = predict_probabilities(model, images, **options)[0]
        tiled = sliding_window_predict(
            model, images[0], Tiling((64, 64)), probabilities=True, **options
        )
        np.testing.assert_array_equal(tiled, whole)


@pytest.mark.parametrize("window", ["mean", "gaussian"])
def test_streamed_class_ids_equal_the_blended_probabilities(model, window):
    """The band that turns finished rows into class ids gives exactly the
    argmax of the whole blended probability map."""
    image = random_images(1, 71, 90, seed=3)[0]
    tiling = Tiling((24, 32), overlap=0.4, window=window, batch_size=3)
    probabilities = sliding_window_predict(
        model, image, tiling, probabilities=True
    )
    assert probabilities.shape == (71, 90, 3)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-5)
    class_ids = sliding_window_predict(model, image, tiling)
    assert class_ids.dtype == np.uint8
    np.testing.assert_array_equal(class_ids, probabilities.argmax(-1))


def test_blending_reference_on_two_tiles():
    """A model whose 'logits' are its input's x coordinate shows each tile's
    own view; the blend is their weighted mean where they overlap."""
    inputs = keras.Input((None, None, 3))
    logits = keras.layers.Conv2D(2, 1, use_bias=False)(inputs)
    model = keras.Model(inputs, logits)
    model.layers[-1].set_weights([np.array([[[[1.0, 0], [0, 0], [0, 0]]]])])
    image = np.zeros((4, 10, 3), np.float32)
    image[..., 0] = np.linspace(-2, 2, 10)
    tiling = Tiling((4, 6), overlap=0.5, window="gaussian")
    blended = sliding_window_predict(model, image, tiling, probabilities=True)
    # A 1x1 model sees the same pixel in both tiles: blending changes nothing.
    whole = predict_probabilities(model, image[None])[0]
    np.testing.assert_allclose(blended, whole, atol=1e-6)
    weights = window_weights(4, 6, "gaussian")
    assert weights.max() <= 1 and weights.min() >= 1e-3
    assert weights[1:3, 2:4].min() > weights[0, 0]


_BIG_IMAGE = """
import resource, sys
import numpy as np
import keras
from keras_deeplab.inference.tiling import Tiling, sliding_window_predict

def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

inputs = keras.Input((None, None, 3))
model = keras.Model(inputs, keras.layers.Conv2D(3, 1)(inputs))
side = int(sys.argv[1])
image = np.zeros((side, side, 3), np.uint8)
image[:, side // 2 :] = 200
model.predict_on_batch(np.zeros((1, 512, 512, 3), np.float32))  # warm up
before = peak_mb()
ids = sliding_window_predict(model, image, Tiling((512, 512), overlap=0.25))
print("RESULT", before, peak_mb(), ids.shape, len(np.unique(ids)))
"""


@pytest.mark.slow
def test_a_10000_pixel_square_image_stays_within_a_tile_band_of_memory():
    """Whole-image float32 probabilities of 10000x10000x3 alone would take
    1.2 GB (and the float image as much); tiling holds the uint8 image, the
    uint8 class map and one 512-row band."""
    completed = subprocess.run(
        [sys.executable, "-c", _BIG_IMAGE, "10000"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        check=True,
    )
    (line,) = [x for x in completed.stdout.splitlines() if "RESULT" in x]
    _, before, after, *_ = line.split(maxsplit=3)
    growth = float(after) - float(before)
    print(f"\n10000x10000 tiled: peak RSS grew {growth:.0f} MB")
    assert "(10000, 10000)" in line
    # band 512x10000x3 float32 x2 (61 MB) + class map (100 MB) + a tile
    # batch; far below the 1,200 MB of whole-image probabilities.
    assert growth < 600, line
