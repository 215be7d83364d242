"""Joint image + mask augmentation in tf.data (paper recipe, section 4).

Images are resized bilinearly, masks with nearest neighbour only, so a mask
never holds a value that was not in it before (plus 255 where padded). All
randomness is stateless and derived from a per-example seed, so a seeded
pipeline is reproducible.
"""

import tensorflow as tf

from keras_deeplab.labels import IGNORE_INDEX
from keras_deeplab.layers import IMAGENET_MEAN_RGB
from keras_deeplab.utils.image_size import height_width


def _split_seed(seed, count):
    return tf.unstack(tf.random.experimental.stateless_split(seed, count))


def random_scale(image, mask, *, seed, min_scale, max_scale):
    """Rescales both by one factor drawn from [min_scale, max_scale]."""
    scale = tf.random.stateless_uniform([], seed, min_scale, max_scale)
    size = tf.cast(tf.shape(image)[:2], tf.float32) * scale
    size = tf.maximum(tf.cast(tf.round(size), tf.int32), 1)
    image = tf.image.resize(image, size, method="bilinear")
    mask = tf.image.resize(mask[..., None], size, method="nearest")[..., 0]
    return image, mask


def pad_to_size(image, mask, *, height, width):
    """Pads bottom/right up to (height, width): mean pixel and ignore label.

    Padding with the mean pixel makes padded image pixels zero after
    preprocessing, and 255 keeps them out of the loss and the metric.
    """
    pad_h = tf.maximum(height - tf.shape(image)[0], 0)
    pad_w = tf.maximum(width - tf.shape(image)[1], 0)
    paddings = [[0, pad_h], [0, pad_w]]
    mean = tf.constant(IMAGENET_MEAN_RGB, dtype=image.dtype)
    image = tf.pad(image - mean, paddings + [[0, 0]]) + mean
    mask = tf.pad(mask, paddings, constant_values=IGNORE_INDEX)
    return image, mask


def center_fit(image, mask, *, size):
    """Pads (mean pixel, ignore label) and center-crops both to `size` (a
    side or (height, width)): a fixed-size batch from images of any size,
    nothing resized."""
    height, width = height_width(size)
    image, mask = pad_to_size(image, mask, height=height, width=width)
    top = (tf.shape(image)[0] - height) // 2
    left = (tf.shape(image)[1] - width) // 2
    return (
        image[top : top + height, left : left + width],
        mask[top : top + height, left : left + width],
    )


def random_crop(image, mask, *, seed, height, width):
    """Crops the same random (height, width) window from both."""
    stacked = tf.concat([image, tf.cast(mask, image.dtype)[..., None]], -1)
    stacked = tf.image.stateless_random_crop(
        stacked, size=[height, width, 4], seed=seed
    )
    return stacked[..., :3], tf.cast(stacked[..., 3], mask.dtype)


def random_flip(image, mask, *, seed):
    """Flips both left-right with probability 1/2."""
    flip = tf.random.stateless_uniform([], seed) < 0.5
    image = tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image)
    mask = tf.cond(flip, lambda: tf.reverse(mask, [1]), lambda: mask)
    return image, mask


def augment(image, mask, *, seed, crop_size, min_scale, max_scale, flip):
    """Scale, pad, crop and flip one example.

    Args:
        image: float32 (h, w, 3) RGB in [0, 255].
        mask: uint8 (h, w) class ids with 255 = ignore.
        seed: int32/int64 (2,) stateless seed of this example.
        crop_size: int. Side of the square output.
        min_scale: float. Smallest random scale.
        max_scale: float. Largest random scale.
        flip: bool. Random horizontal flips.

    Returns:
        (float32 (crop, crop, 3), uint8 (crop, crop)).
    """
    scale_seed, crop_seed, flip_seed = _split_seed(seed, 3)
    image, mask = random_scale(
        image, mask, seed=scale_seed, min_scale=min_scale, max_scale=max_scale
    )
    image, mask = pad_to_size(image, mask, height=crop_size, width=crop_size)
    image, mask = random_crop(
        image, mask, seed=crop_seed, height=crop_size, width=crop_size
    )
    if flip:
        image, mask = random_flip(image, mask, seed=flip_seed)
    return image, mask
