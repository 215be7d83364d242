"""Datasets, augmentation and preprocessing for segmentation.

Only the backend-neutral preprocessing is re-exported here; `pipeline`,
`augment`, `sources`, `synthetic` and `validate` are submodules (the tf.data
ones import TensorFlow, which the JAX-only GPU hosts do not have).
"""

from keras_deeplab.layers import IMAGENET_MEAN_RGB, preprocess_images

__all__ = ["IMAGENET_MEAN_RGB", "preprocess_images"]
