"""The data a DeepLabConfig describes: its splits, as examples and pipelines.

The config adapters of the data package: the readers (`sources`) and the
pipeline (`pipeline`) take explicit arguments, and these functions fill them
in from a config, for the CLI, the demo, training and export.
"""

import numpy as np

from keras_deeplab.data.pipeline import (
    files_dataset,
    make_dataset,
    synthetic_dataset,
    tfds_dataset,
    tfds_size,
)
from keras_deeplab.data.sources import (
    ade20k_examples,
    cityscapes_examples,
    folder_examples,
    voc_examples,
)
from keras_deeplab.errors import UserInputError

# Synthetic splits are generated from (seed, split number): never the same.
_TRAIN_SPLIT_CODE, _OTHER_SPLIT_CODE = 0, 1


def split_examples(config, split):
    """The on-disk `Example`s of a split of a file-based dataset."""
    if config.dataset == "folder":
        return folder_examples(
            config.data_dir,
            split=split,
            image_dir=config.image_dir,
            mask_dir=config.mask_dir,
            split_list=(
                config.train_list
                if split == config.train_split
                else config.val_list
            ),
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


def _synthetic_split(config, split):
    if split == config.train_split:
        return config.synthetic_train_size, _TRAIN_SPLIT_CODE
    return config.synthetic_val_size, _OTHER_SPLIT_CODE


def split_source(config, split):
    """Unbatched (image uint8, mask uint8, name) examples of one split."""
    if config.dataset == "synthetic":
        count, code = _synthetic_split(config, split)
        return synthetic_dataset(
            count, size=config.synthetic_image_size, seed=(config.seed, code)
        )
    if config.dataset == "tfds":
        return tfds_dataset(
            config.tfds_name, split=split, data_dir=config.data_dir
        )
    return files_dataset(split_examples(config, split))


def split_size(config, split) -> int:
    """Number of examples in a split (reads the file lists, not the data)."""
    if config.dataset == "synthetic":
        return _synthetic_split(config, split)[0]
    if config.dataset == "tfds":
        return tfds_size(
            config.tfds_name, split=split, data_dir=config.data_dir
        )
    return len(split_examples(config, split))


def split_dataset(
    config, split, *, training: bool, batch_size=None, crop_size=None, **kwargs
):
    """`make_dataset` of a split with the config's settings.

    Args:
        config: DeepLabConfig.
        split: str. Split name.
        training: bool. Shuffle and augment.
        batch_size: int or None. Defaults to `config.batch_size`.
        crop_size: int or None. Defaults to `config.crop_size`.
        **kwargs: passed to `make_dataset` (e.g. first_epoch).
    """
    return make_dataset(
        split_source(config, split),
        num_classes=config.num_classes,
        training=training,
        crop_size=crop_size or config.crop_size,
        batch_size=batch_size or config.batch_size,
        seed=config.seed,
        min_scale=config.min_scale,
        max_scale=config.max_scale,
        flip=config.flip,
        shuffle_buffer=config.shuffle_buffer,
        **kwargs,
    )


def split_arrays(config, split, *, size: int, count: int, training: bool):
    """(images, masks) numpy arrays of `count` examples at `size` x `size`.

    Training examples are augmented crops (repeating a split smaller than
    `count`); others are padded to `size` like evaluation examples.

    Raises:
        UserInputError: if the split has no examples.
    """
    dataset = split_dataset(
        config, split, training=training, batch_size=1, crop_size=size
    )
    if training:
        dataset = dataset.repeat()
    pairs = list(dataset.take(count).as_numpy_iterator())
    if not pairs:
        raise UserInputError(f"split {split!r} has no examples.")
    images, masks = zip(*pairs, strict=True)
    return np.concatenate(images), np.concatenate(masks)


def calibration_images(config, *, size: int, count: int = 32) -> list:
    """Augmented training crops that calibrate int8 activations."""
    images, _ = split_arrays(
        config, config.train_split, size=size, count=count, training=True
    )
    return list(images)


def validation_batch(config, *, size: int, count: int = 16):
    """(images, masks) from the validation split, padded to `size`."""
    return split_arrays(
        config, config.val_split, size=size, count=count, training=False
    )
