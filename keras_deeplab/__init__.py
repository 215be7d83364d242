"""DeepLabV3 and DeepLabV3+ semantic segmentation for Keras 3
(channels-last).

Importing the package registers its custom layers with Keras, so a saved
model loads with `keras.saving.load_model(path, safe_mode=True)`.
"""

from keras_deeplab.backbones.resnet import dilated_resnet
from keras_deeplab.config import DeepLabConfig, load_config
from keras_deeplab.models import DeepLabV3, DeepLabV3Plus

__version__ = "0.2.0"

__all__ = [
    "DeepLabConfig",
    "DeepLabV3",
    "DeepLabV3Plus",
    "dilated_resnet",
    "load_config",
    "__version__",
]
