"""Class weights from a training split's masks, by median frequency
balancing (Eigen & Fergus, ICCV 2015, sec. 4.2; used by SegNet):

    weight_c = median over classes of freq / freq_c,
    freq_c = pixels of class c / pixels of the images in which c appears.

A class that fills its images weighs less than one that is small where it
appears; a class never seen in the split weighs 0 (it is never a target).
Ignored (255) pixels count nowhere.
"""

import numpy as np

from keras_deeplab.labels import IGNORE_INDEX
from keras_deeplab.utils.errors import UserInputError


class ClassPixelCounts:
    """Streaming per-class counts over masks, one mask at a time."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.class_pixels = np.zeros(num_classes, np.int64)
        self.image_pixels = np.zeros(num_classes, np.int64)

    def add(self, mask):
        labels = np.asarray(mask).reshape(-1)
        labels = labels[(labels != IGNORE_INDEX) & (labels < self.num_classes)]
        counts = np.bincount(labels, minlength=self.num_classes)
        self.class_pixels += counts
        self.image_pixels += np.where(counts > 0, labels.size, 0)

    def median_frequency_weights(self, what="the masks") -> tuple:
        seen = self.class_pixels > 0
        if not seen.any():
            raise UserInputError(
                f"class_weights: auto found no labelled pixel in {what}; "
                "give the weights as a list or check the masks."
            )
        frequency = np.zeros(self.num_classes)
        frequency[seen] = self.class_pixels[seen] / self.image_pixels[seen]
        weights = np.zeros(self.num_classes)
        weights[seen] = np.median(frequency[seen]) / frequency[seen]
        return tuple(float(w) for w in weights)


def split_class_weights(splits, split: str) -> tuple:
    """Median-frequency weights of one split of a `DataSplits`, read once
    (masks only, unaugmented)."""
    counts = ClassPixelCounts(splits.config.num_classes)
    masks = splits.source(split).map(lambda image, mask, name: mask)
    for mask in masks.as_numpy_iterator():
        counts.add(mask)
    return counts.median_frequency_weights(f"split {split!r}")
