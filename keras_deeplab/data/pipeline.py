"""tf.data input pipelines: read, decode, check, augment, batch, prefetch.

Every source (`files_dataset`, `synthetic_dataset`, `tfds_dataset`) yields
(image uint8 (h, w, 3), mask uint8 (h, w), name string); `make_dataset`
turns one into batches of (float32 images in [0, 255], int32 masks) for
`model.fit` / `model.evaluate`. Nothing here reads a DeepLabConfig: see
`keras_deeplab.data.configured` for the splits a config describes.
"""

import numpy as np
import tensorflow as tf

from keras_deeplab.data.augment import augment, center_fit
from keras_deeplab.data.sources import (
    DataError,
    read_image,
    read_mask,
    shifted_table,
)
from keras_deeplab.data.synthetic import synthetic_sample
from keras_deeplab.labels import IGNORE_INDEX
from keras_deeplab.layers import IMAGENET_MEAN_RGB
from keras_deeplab.utils.errors import UserInputError

AUTOTUNE = tf.data.AUTOTUNE
# tfds datasets that carry masks: (image feature, mask feature, label table).
TFDS_SEGMENTATION = {
    "oxford_iiit_pet": ("image", "segmentation_mask", shifted_table),
    "scene_parse150": ("image", "annotation", shifted_table),
}
# Starts every message of an in-pipeline check: the CLI prints from it on.
DATA_ERROR_MARK = "data error: "
_RESUME_SEED_STRIDE = 7919  # a prime: resumed seeds never hit other runs' seeds


def files_dataset(examples):
    """(image, mask, path) of on-disk `Example`s, decoded in order."""
    if not examples:
        raise UserInputError(
            "the dataset split is empty; check data_dir and the split name."
        )
    images = [str(example.image) for example in examples]
    masks = [str(example.mask) for example in examples]
    tables = np.stack([example.label_table for example in examples])
    colors = [example.colors for example in examples]

    def load(index):
        # A bad file becomes an in-graph assertion naming it (see decode):
        # a Python exception here would reach the user as a traceback.
        index = int(index)
        try:
            image = read_image(images[index])
            mask = read_mask(masks[index], tables[index], colors[index])
        except DataError as err:
            empty = np.zeros((1, 1), np.uint8)
            return np.zeros((1, 1, 3), np.uint8), empty, str(err).encode()
        return image, mask, b""

    def decode(index):
        image, mask, problem = tf.numpy_function(
            load, [index], [tf.uint8, tf.uint8, tf.string]
        )
        readable = tf.debugging.Assert(
            tf.equal(problem, b""), [DATA_ERROR_MARK + problem]
        )
        with tf.control_dependencies([readable]):
            image = tf.identity(image)
        image.set_shape([None, None, 3])
        mask.set_shape([None, None])
        return image, mask, tf.gather(masks, index)

    return tf.data.Dataset.range(len(examples)).map(
        decode, num_parallel_calls=AUTOTUNE, deterministic=True
    )


def synthetic_dataset(count: int, *, size: int, seed):
    """(image, mask, name) of `count` generated samples (see `synthetic`).

    Args:
        count: int. Number of samples.
        size: int. Side of every image, pixels.
        seed: int or tuple of ints. Different seeds never share a sample.
    """

    def generate(index):
        image, mask = tf.numpy_function(
            lambda i: synthetic_sample(int(i), size=size, seed=seed),
            [index],
            [tf.uint8, tf.uint8],
        )
        image.set_shape([size, size, 3])
        mask.set_shape([size, size])
        return image, mask, tf.strings.format("synthetic/{}", index)

    # Generated samples are deterministic and small: cache them once.
    return (
        tf.data.Dataset.range(count)
        .map(generate, num_parallel_calls=AUTOTUNE, deterministic=True)
        .cache()
    )


def tfds_dataset(name: str, *, split: str, data_dir=None):
    """(image, mask, name) of a tensorflow-datasets dataset with masks.

    Args:
        name: str. One of TFDS_SEGMENTATION, e.g. "oxford_iiit_pet".
        split: str. tfds split name.
        data_dir: str or None. tfds data folder.
    """
    import tensorflow_datasets as tfds  # optional extra: "datasets"

    if name not in TFDS_SEGMENTATION:
        raise UserInputError(
            f"tfds_name={name!r} has no known mask feature; "
            f"expected one of {tuple(TFDS_SEGMENTATION)}."
        )
    image_key, mask_key, table_fn = TFDS_SEGMENTATION[name]
    table = tf.constant(table_fn())
    dataset = tfds.load(
        name, split=split, data_dir=data_dir, shuffle_files=False
    )

    def adapt(example):
        mask = tf.cast(example[mask_key], tf.int32)
        mask = tf.reshape(mask, tf.shape(mask)[:2])
        return (
            example[image_key],
            tf.gather(table, mask),
            tf.constant(f"{name}/{split}"),
        )

    return dataset.map(adapt, num_parallel_calls=AUTOTUNE)


def tfds_size(name: str, *, split: str, data_dir=None) -> int:
    """Number of examples of a tfds split (from its metadata)."""
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=data_dir)
    return builder.info.splits[split].num_examples


def _check_example(image, mask, name, *, num_classes):
    """Fails loudly on a mask of another size, or with labels >= num_classes
    that are not 255 (GPUs and XLA silently return NaN for those).

    Messages name the mask (`name`) and start with DATA_ERROR_MARK, which
    the CLI looks for to print one line.
    """
    same_size = tf.reduce_all(tf.equal(tf.shape(image)[:2], tf.shape(mask)))
    sized = tf.debugging.Assert(
        same_size,
        [
            tf.strings.format(
                DATA_ERROR_MARK + "mask {} is {} but its image is {}; "
                "expected equal sizes (run `keras-deeplab validate-data`).",
                (name, tf.shape(mask), tf.shape(image)[:2]),
            )
        ],
    )
    labels = tf.cast(mask, tf.int32)
    valid = (labels < num_classes) | (labels == IGNORE_INDEX)
    largest = tf.reduce_max(tf.where(labels == IGNORE_INDEX, 0, labels))
    in_range = tf.debugging.Assert(
        tf.reduce_all(valid),
        [
            tf.strings.format(
                DATA_ERROR_MARK + "mask {} holds labels >= num_classes={} "
                "that are not 255 (largest {}); run `keras-deeplab "
                "validate-data`.",
                (name, num_classes, largest),
            )
        ],
    )
    with tf.control_dependencies([sized, in_range]):
        return tf.cast(image, tf.float32), tf.identity(mask)


def _padded_batch(dataset, batch_size):
    """Batches of each batch's largest size, padded with the mean pixel
    (per channel: zero after the subtraction) and the ignore label."""
    mean = tf.constant(IMAGENET_MEAN_RGB, tf.float32)
    return (
        dataset.map(lambda image, mask: (image - mean, mask))
        .padded_batch(
            batch_size,
            padding_values=(0.0, tf.constant(IGNORE_INDEX, tf.uint8)),
        )
        .map(lambda images, masks: (images + mean, masks))
    )


def _pad_batch(images, masks, batch_size):
    """Fills a batch up to `batch_size` with zero images, ignored masks."""
    missing = batch_size - tf.shape(images)[0]
    images = tf.pad(images, [[0, missing], [0, 0], [0, 0], [0, 0]])
    masks = tf.pad(
        masks, [[0, missing], [0, 0], [0, 0]], constant_values=IGNORE_INDEX
    )
    images.set_shape([batch_size, *images.shape[1:]])
    masks.set_shape([batch_size, *masks.shape[1:]])
    return images, masks


def make_dataset(
    source,
    *,
    num_classes: int,
    training: bool,
    crop_size: int,
    batch_size: int,
    seed: int = 0,
    min_scale: float = 0.5,
    max_scale: float = 2.0,
    flip: bool = True,
    shuffle_buffer: int = 1000,
    first_epoch: int = 0,
    full_batches: bool = False,
    fixed_size=None,
):
    """Batched (images float32 (b, h, w, 3), masks int32 (b, h, w)).

    Training examples are shuffled, augmented (scale, pad, crop, flip) with
    per-example stateless seeds drawn from `seed`, into crop_size crops.
    Evaluation examples keep their own size: a batch is padded to its
    largest image with the mean pixel and the ignore label (which no metric
    counts); `fixed_size` instead pads or center-crops each to that size.
    Every mask's labels are checked against `num_classes` as it is decoded.

    Args:
        source: tf.data.Dataset of (image uint8, mask uint8, name).
        num_classes: int. Labels must be < num_classes or 255.
        training: bool. Shuffle and augment.
        crop_size: int. Training crop side, pixels.
        batch_size: int. Examples per batch.
        seed: int. Order and augmentation seed.
        min_scale: float. Smallest random scale (paper: 0.5).
        max_scale: float. Largest random scale (paper: 2.0).
        flip: bool. Random left-right flips.
        shuffle_buffer: int. Examples in the shuffle buffer.
        first_epoch: int. Epoch a resumed run starts at; it moves the seeds
            on so a resumed run does not replay the order of epoch 0.
        full_batches: bool. Evaluation only: pad a short last batch to
            `batch_size` with examples whose mask is all ignore label, which
            change no metric (data-parallel replicas need equal shares).
        fixed_size: int, (height, width) or None. Evaluation only: one size
            for all (the parity images of fixed-size exports).
    """
    seed = seed + first_epoch * _RESUME_SEED_STRIDE
    dataset = source.map(
        lambda image, mask, name: _check_example(
            image, mask, name, num_classes=num_classes
        ),
        num_parallel_calls=AUTOTUNE,
    )
    if training:
        dataset = dataset.shuffle(
            shuffle_buffer, seed=seed, reshuffle_each_iteration=True
        )
        # Per-example (random, run seed) pairs. Built with map, not batch(2):
        # tf.distribute rebatches every batch op of an input pipeline, which
        # would split these pairs across replicas.
        seeds = tf.data.Dataset.random(seed=seed).map(
            lambda value: tf.stack([value, tf.constant(seed, tf.int64)])
        )
        dataset = tf.data.Dataset.zip(dataset, seeds).map(
            lambda example, seed: augment(
                *example,
                seed=seed,
                crop_size=crop_size,
                min_scale=min_scale,
                max_scale=max_scale,
                flip=flip,
            ),
            num_parallel_calls=AUTOTUNE,
            deterministic=True,
        )
        dataset = dataset.batch(batch_size, drop_remainder=True)
    elif fixed_size:
        dataset = dataset.map(
            lambda image, mask: center_fit(image, mask, size=fixed_size),
            num_parallel_calls=AUTOTUNE,
        ).batch(batch_size)
    else:
        dataset = _padded_batch(dataset, batch_size)
    if not training and full_batches:
        dataset = dataset.map(
            lambda images, masks: _pad_batch(images, masks, batch_size)
        )
    dataset = dataset.map(lambda image, mask: (image, tf.cast(mask, tf.int32)))
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
    )
    return dataset.with_options(options).prefetch(AUTOTUNE)
