"""Small registered layers shared by the backbone, the head and the model.

Channels-last only. Every `call` uses `keras.ops` (with a TensorFlow fast
path where one pays) so the layers run on the TensorFlow and JAX backends
and survive SavedModel, TFLite and ONNX export: `preprocessing` (the
normalisation pretrained weights expect), `resize` (bilinear to a run-time
size), `atrous` (dilated convolutions as one native op), `units` (layer
names).
"""

from keras_deeplab.layers.atrous import (
    DEPTHWISE_FORMS,
    AtrousConv2D,
    AtrousDepthwiseConv2D,
    conv_class,
    depthwise_class,
    dilated_depthwise_form,
    native_dilated_depthwise_runs,
)
from keras_deeplab.layers.preprocessing import (
    IMAGENET_MEAN_BGR,
    IMAGENET_MEAN_RGB,
    PREPROCESSING_MODES,
    TORCH_MEAN_RGB,
    TORCH_STD_RGB,
    ImagePreprocessing,
    preprocess_images,
)
from keras_deeplab.layers.resize import ResizeToMatch, resize_bilinear
from keras_deeplab.layers.units import bn_name, conv_name

__all__ = [
    "DEPTHWISE_FORMS",
    "IMAGENET_MEAN_BGR",
    "IMAGENET_MEAN_RGB",
    "PREPROCESSING_MODES",
    "TORCH_MEAN_RGB",
    "TORCH_STD_RGB",
    "AtrousConv2D",
    "AtrousDepthwiseConv2D",
    "ImagePreprocessing",
    "ResizeToMatch",
    "bn_name",
    "conv_class",
    "conv_name",
    "depthwise_class",
    "dilated_depthwise_form",
    "native_dilated_depthwise_runs",
    "preprocess_images",
    "resize_bilinear",
]
