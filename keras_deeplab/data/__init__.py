"""Datasets, augmentation and preprocessing for segmentation."""

from keras_deeplab.data.preprocess import (
    IMAGENET_MEAN_RGB,
    preprocess_images,
)

__all__ = ["IMAGENET_MEAN_RGB", "preprocess_images"]
