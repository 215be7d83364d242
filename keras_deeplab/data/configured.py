"""The data a DeepLabConfig describes: its splits, as examples and pipelines.

The config adapters of the data package: the readers (`sources`) and the
pipeline (`pipeline`) take explicit arguments, and `DataSplits` fills them
in from a config. One `DataSplits` reads each split's file list once, so a
training run (validation, sizes, both pipelines) asks for every split once;
the functions below are one-off shortcuts for the CLI and notebooks.
"""

import numpy as np

from keras_deeplab.data.colors import mask_colors_of
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
from keras_deeplab.utils.errors import UserInputError
from keras_deeplab.utils.image_size import height_width

# Synthetic splits are generated from (seed, split number): never the same.
_TRAIN_SPLIT_CODE, _OTHER_SPLIT_CODE = 0, 1
FILE_DATASETS = ("folder", "voc", "cityscapes", "ade20k")


class DataSplits:
    """The splits of one config; each file list is read once, when asked.

    Args:
        config: DeepLabConfig.
    """

    def __init__(self, config):
        self.config = config
        self._examples = {}

    def examples(self, split) -> tuple:
        """The on-disk `Example`s of a split of a file-based dataset."""
        if split not in self._examples:
            self._examples[split] = tuple(self._read_examples(split))
        return self._examples[split]

    def _read_examples(self, split):
        config = self.config
        if config.dataset == "folder":
            return folder_examples(
                config.data_dir,
                split=split,
                image_dir=config.image_dir,
                mask_dir=config.mask_dir,
                colors=mask_colors_of(config),
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
        raise UserInputError(
            f"dataset={config.dataset!r} has no files on disk."
        )

    def _synthetic(self, split):
        if split == self.config.train_split:
            return self.config.synthetic_train_size, _TRAIN_SPLIT_CODE
        return self.config.synthetic_val_size, _OTHER_SPLIT_CODE

    def source(self, split):
        """Unbatched (image uint8, mask uint8, name) examples of a split."""
        config = self.config
        if config.dataset == "synthetic":
            count, code = self._synthetic(split)
            return synthetic_dataset(
                count,
                size=config.synthetic_image_size,
                seed=(config.seed, code),
            )
        if config.dataset == "tfds":
            return tfds_dataset(
                config.tfds_name, split=split, data_dir=config.data_dir
            )
        return files_dataset(list(self.examples(split)))

    def size(self, split) -> int:
        """Number of examples in a split (from the file list, not data)."""
        config = self.config
        if config.dataset == "synthetic":
            return self._synthetic(split)[0]
        if config.dataset == "tfds":
            return tfds_size(
                config.tfds_name, split=split, data_dir=config.data_dir
            )
        return len(self.examples(split))

    def dataset(
        self, split, *, training, batch_size=None, crop_size=None, **kwargs
    ):
        """`make_dataset` of a split with the config's settings.

        Args:
            split: str. Split name.
            training: bool. Shuffle and augment.
            batch_size: int or None. Defaults to `config.batch_size`.
            crop_size: int or None. Training crop; defaults to
                `config.crop_size`.
            **kwargs: passed to `make_dataset` (e.g. first_epoch).
        """
        config = self.config
        return make_dataset(
            self.source(split),
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

    def arrays(self, split, *, size, count: int, training: bool):
        """(images, masks) numpy arrays of `count` examples at `size` (a
        side or (height, width)).

        Training examples are augmented square crops of the longer side
        (repeating a split smaller than `count`), center-cropped to `size`;
        others are padded or center-cropped to `size`, never resized.

        Raises:
            UserInputError: if the split has no examples.
        """
        height, width = height_width(size)
        dataset = self.dataset(
            split,
            training=training,
            batch_size=1,
            crop_size=max(height, width),
            fixed_size=None if training else (height, width),
        )
        if training:
            dataset = dataset.repeat()
        pairs = list(dataset.take(count).as_numpy_iterator())
        if not pairs:
            raise UserInputError(f"split {split!r} has no examples.")
        images, masks = (
            np.concatenate(arrays) for arrays in zip(*pairs, strict=True)
        )
        top = (images.shape[1] - height) // 2
        left = (images.shape[2] - width) // 2
        window = np.s_[:, top : top + height, left : left + width]
        return images[window], masks[window]


def split_dataset(config, split, *, training: bool, **kwargs):
    """`DataSplits(config).dataset(split, ...)`, for one-off use."""
    return DataSplits(config).dataset(split, training=training, **kwargs)


def split_size(config, split) -> int:
    """`DataSplits(config).size(split)`, for one-off use."""
    return DataSplits(config).size(split)


def calibration_images(config, *, size, count: int | None = None) -> list:
    """Augmented training crops (`size`: a side or (height, width)) that
    calibrate int8 activations; `count` of them, by default the config's
    `calibration_images`."""
    images, _ = DataSplits(config).arrays(
        config.train_split,
        size=size,
        count=count or config.calibration_images,
        training=True,
    )
    return list(images)


def validation_batch(config, *, size, count: int = 16):
    """(images, masks) from the validation split, padded or center-cropped
    to `size`, a side or (height, width) (the parity images of
    `verify-export`)."""
    return DataSplits(config).arrays(
        config.val_split, size=size, count=count, training=False
    )
