"""Augmentation invariants: masks stay class ids, sizes, reproducibility."""

import numpy as np
import pytest
import tensorflow as tf

from keras_deeplab.data.augment import augment, pad_to_size, random_scale
from keras_deeplab.layers import IMAGENET_MEAN_RGB


def _example(seed, height=37, width=53, num_classes=6):
    rng = np.random.default_rng(seed)
    image = rng.uniform(0, 255, (height, width, 3)).astype("float32")
    mask = rng.integers(0, num_classes, (height, width)).astype("uint8")
    mask[rng.random((height, width)) < 0.1] = 255
    return tf.constant(image), tf.constant(mask)


@pytest.mark.parametrize("seed", range(12))
def test_masks_keep_only_known_values(seed):
    image, mask = _example(seed)
    out_image, out_mask = augment(
        image,
        mask,
        seed=tf.constant([seed, 7]),
        crop_size=48,
        min_scale=0.5,
        max_scale=2.0,
        flip=True,
    )
    assert out_image.shape == (48, 48, 3) and out_mask.shape == (48, 48)
    allowed = set(np.unique(mask.numpy())) | {255}
    assert set(np.unique(out_mask.numpy())) <= allowed
    assert out_mask.dtype == tf.uint8


def test_same_seed_same_result_other_seed_differs():
    image, mask = _example(0)
    kwargs = dict(crop_size=32, min_scale=0.5, max_scale=2.0, flip=True)
    first = augment(image, mask, seed=tf.constant([1, 2]), **kwargs)
    again = augment(image, mask, seed=tf.constant([1, 2]), **kwargs)
    other = augment(image, mask, seed=tf.constant([3, 4]), **kwargs)
    np.testing.assert_array_equal(first[0].numpy(), again[0].numpy())
    np.testing.assert_array_equal(first[1].numpy(), again[1].numpy())
    assert not np.array_equal(first[0].numpy(), other[0].numpy())


def test_padding_uses_mean_pixel_and_ignore_label():
    image, mask = _example(1, height=10, width=12)
    padded, padded_mask = pad_to_size(image, mask, height=16, width=20)
    np.testing.assert_allclose(
        padded[10:, :].numpy().reshape(-1, 3),
        np.tile(IMAGENET_MEAN_RGB, (6 * 20, 1)),
        atol=1e-4,
    )
    assert (padded_mask[:, 12:].numpy() == 255).all()
    np.testing.assert_array_equal(padded_mask[:10, :12].numpy(), mask.numpy())


def test_mask_scaling_is_nearest_neighbour():
    image, mask = _example(2, height=20, width=20, num_classes=2)
    _, scaled = random_scale(
        image, mask, seed=tf.constant([0, 0]), min_scale=2.0, max_scale=2.0
    )
    assert scaled.shape == (40, 40)
    np.testing.assert_array_equal(scaled.numpy()[::2, ::2], mask.numpy())
