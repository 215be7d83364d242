"""DeepLabV3 semantic segmentation for Keras 3 (channels-last)."""

from keras_deeplab.backbones.resnet import dilated_resnet
from keras_deeplab.config import DeepLabConfig, load_config
from keras_deeplab.models import DeepLabV3

__version__ = "0.1.0"

__all__ = [
    "DeepLabConfig",
    "DeepLabV3",
    "dilated_resnet",
    "load_config",
    "__version__",
]
