"""tf.data input pipelines: read, decode, check, augment, batch, prefetch.

Every source yields (image uint8 (h, w, 3), mask uint8 (h, w), name string);
`make_dataset` turns that into batches of (float32 images in [0, 255], int32
masks) for `model.fit` / `model.evaluate`.
"""

import numpy as np
import tensorflow as tf

from keras_deeplab.data.augment import augment, pad_to_size
from keras_deeplab.data.sources import (
    IGNORE_INDEX,
    ade20k_examples,
    cityscapes_examples,
    folder_examples,
    read_image,
    read_mask,
    shifted_table,
    voc_examples,
)
from keras_deeplab.data.synthetic import synthetic_sample
from keras_deeplab.errors import UserInputError

AUTOTUNE = tf.data.AUTOTUNE
# tfds datasets that carry masks: (image feature, mask feature, label table).
TFDS_SEGMENTATION = {
    "oxford_iiit_pet": ("image", "segmentation_mask", shifted_table),
    "scene_parse150": ("image", "annotation", shifted_table),
}
_TRAIN_SPLIT_CODE, _OTHER_SPLIT_CODE = 0, 1
_RESUME_SEED_STRIDE = 7919  # a prime: resumed seeds never hit other runs' seeds


def file_examples(config, split):
    """The `Example` list of a file-based dataset split."""
    if config.dataset == "folder":
        split_list = (
            config.train_list
            if split == config.train_split
            else (config.val_list)
        )
        return folder_examples(
            config.data_dir,
            split=split,
            image_dir=config.image_dir,
            mask_dir=config.mask_dir,
            split_list=split_list,
        )
    if config.dataset == "voc":
        return voc_examples(
            config.data_dir, split=split, sbd_root=config.sbd_dir
        )
    if config.dataset == "cityscapes":
        return cityscapes_examples(config.data_dir, split=split)
    if config.dataset == "ade20k":
        return ade20k_examples(config.data_dir, split=split)
    raise UserInputError(f"dataset={config.dataset!r} has no files on disk.")


def _files_dataset(examples):
    if not examples:
        raise UserInputError(
            "the dataset split is empty; check data_dir and the split name."
        )
    images = [str(example.image) for example in examples]
    masks = [str(example.mask) for example in examples]
    tables = np.stack([example.label_table for example in examples])

    def load(index):
        index = int(index)
        return (
            read_image(images[index]),
            read_mask(masks[index], tables[index]),
        )

    def decode(index):
        image, mask = tf.numpy_function(load, [index], [tf.uint8, tf.uint8])
        image.set_shape([None, None, 3])
        mask.set_shape([None, None])
        return image, mask, tf.gather(images, index)

    return tf.data.Dataset.range(len(examples)).map(
        decode, num_parallel_calls=AUTOTUNE, deterministic=True
    )


def _synthetic_dataset(config, split):
    split_code = (
        _TRAIN_SPLIT_CODE
        if split == config.train_split
        else (_OTHER_SPLIT_CODE)
    )
    count = (
        config.synthetic_train_size
        if split_code == _TRAIN_SPLIT_CODE
        else config.synthetic_val_size
    )
    size = config.synthetic_image_size

    def generate(index):
        image, mask = tf.numpy_function(
            lambda i: synthetic_sample(
                int(i), size=size, seed=(config.seed, split_code)
            ),
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


def _tfds_dataset(config, split):
    import tensorflow_datasets as tfds  # optional extra: "datasets"

    if config.tfds_name not in TFDS_SEGMENTATION:
        raise UserInputError(
            f"tfds_name={config.tfds_name!r} has no known mask feature; "
            f"expected one of {tuple(TFDS_SEGMENTATION)}."
        )
    image_key, mask_key, table_fn = TFDS_SEGMENTATION[config.tfds_name]
    table = tf.constant(table_fn())
    dataset = tfds.load(
        config.tfds_name,
        split=split,
        data_dir=config.data_dir,
        shuffle_files=False,
    )

    def adapt(example):
        mask = tf.cast(example[mask_key], tf.int32)
        mask = tf.reshape(mask, tf.shape(mask)[:2])
        return (
            example[image_key],
            tf.gather(table, mask),
            tf.constant(f"{config.tfds_name}/{split}"),
        )

    return dataset.map(adapt, num_parallel_calls=AUTOTUNE)


def source_dataset(config, split):
    """Unbatched (image uint8, mask uint8, name) examples of one split."""
    if config.dataset == "synthetic":
        return _synthetic_dataset(config, split)
    if config.dataset == "tfds":
        return _tfds_dataset(config, split)
    return _files_dataset(file_examples(config, split))


def num_examples(config, split) -> int:
    """Number of examples in a split (reads the file lists, not the data)."""
    if config.dataset == "synthetic":
        return (
            config.synthetic_train_size
            if split == config.train_split
            else config.synthetic_val_size
        )
    if config.dataset == "tfds":
        import tensorflow_datasets as tfds

        builder = tfds.builder(config.tfds_name, data_dir=config.data_dir)
        return builder.info.splits[split].num_examples
    return len(file_examples(config, split))


def _check_labels(image, mask, name, *, num_classes):
    """Fails loudly on labels >= num_classes that are not 255.

    GPUs and XLA silently return NaN/garbage for out-of-range sparse labels.
    """
    valid = (tf.cast(mask, tf.int32) < num_classes) | (mask == IGNORE_INDEX)
    check = tf.debugging.Assert(
        tf.reduce_all(valid),
        [
            tf.strings.format(
                "mask {} holds labels >= num_classes={} that are not 255 "
                "(max {}); run `keras-deeplab validate-data`.",
                (name, num_classes, tf.reduce_max(mask)),
            )
        ],
    )
    with tf.control_dependencies([check]):
        return tf.cast(image, tf.float32), tf.identity(mask)


def _check_fits(image, mask, *, size):
    fits = tf.debugging.assert_less_equal(
        tf.shape(image)[:2],
        size,
        message=f"an evaluation image is larger than crop_size={size}; "
        "pass --set crop_size=<largest image side>.",
    )
    with tf.control_dependencies([fits]):
        return pad_to_size(image, mask, height=size, width=size)


def make_dataset(
    config, split, *, training: bool, batch_size=None, first_epoch=0
):
    """Batched (images float32 (b, s, s, 3), masks int32 (b, s, s)).

    Training examples are shuffled, augmented (scale, pad, crop, flip) with
    per-example stateless seeds drawn from `config.seed`; evaluation examples
    are padded to `crop_size` with the mean pixel and the ignore label.

    Args:
        config: DeepLabConfig.
        split: str. Split name.
        training: bool. Shuffle and augment.
        batch_size: int or None. Defaults to `config.batch_size`.
        first_epoch: int. Epoch a resumed run starts at; it moves the seeds
            on so a resumed run does not replay the order of epoch 0.
    """
    seed = config.seed + first_epoch * _RESUME_SEED_STRIDE
    dataset = source_dataset(config, split).map(
        lambda image, mask, name: _check_labels(
            image, mask, name, num_classes=config.num_classes
        ),
        num_parallel_calls=AUTOTUNE,
    )
    batch_size = batch_size or config.batch_size
    if training:
        dataset = dataset.shuffle(
            config.shuffle_buffer,
            seed=seed,
            reshuffle_each_iteration=True,
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
                crop_size=config.crop_size,
                min_scale=config.min_scale,
                max_scale=config.max_scale,
                flip=config.flip,
            ),
            num_parallel_calls=AUTOTUNE,
            deterministic=True,
        )
        dataset = dataset.batch(batch_size, drop_remainder=True)
    else:
        dataset = dataset.map(
            lambda image, mask: _check_fits(image, mask, size=config.crop_size),
            num_parallel_calls=AUTOTUNE,
        ).batch(batch_size)
    dataset = dataset.map(lambda image, mask: (image, tf.cast(mask, tf.int32)))
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
    )
    return dataset.with_options(options).prefetch(AUTOTUNE)
