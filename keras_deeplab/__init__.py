"""DeepLabV3, DeepLabV3+ and LR-ASPP semantic segmentation for Keras 3
(channels-last).

Importing the package is cheap: the public names below load on first use,
so `keras-deeplab --help` never starts TensorFlow. The package's Keras
classes (layers, the model, its schedule, metrics and losses) are registered
the moment Keras itself is imported, so after `import keras_deeplab` a saved
model loads with plain `keras.saving.load_model(path)` in safe mode.
"""

import importlib
import sys

import wrapt

from keras_deeplab.utils.lazy import lazy_attributes

__version__ = "0.4.0"

# Public name -> the module that defines it.
_PUBLIC = {
    "DeepLabV3": "keras_deeplab.models.builders",
    "DeepLabV3Plus": "keras_deeplab.models.builders",
    "LRASPP": "keras_deeplab.models.builders",
    "ModelSpec": "keras_deeplab.spec",
    "DeepLabConfig": "keras_deeplab.config",
    "load_config": "keras_deeplab.config",
    "from_preset": "keras_deeplab.loading",
    "dilated_resnet": "keras_deeplab.backbones.resnet",
}
# The modules whose import registers a Keras class a saved file can name.
_KERAS_OBJECT_MODULES = (
    "keras_deeplab.models.deeplab",
    "keras_deeplab.training.schedules",
    "keras_deeplab.evaluation.metrics",
    "keras_deeplab.training.losses",
)

__all__ = [*_PUBLIC, "__version__"]


__getattr__ = lazy_attributes(__name__, _PUBLIC)


def __dir__():
    return sorted(__all__)


def _importing_own_module() -> bool:
    """True while a keras_deeplab module is half-way through its import.

    (`__spec__._initializing` is how importlib itself marks such modules.)
    """
    return any(
        getattr(getattr(module, "__spec__", None), "_initializing", False)
        for name, module in list(sys.modules.items())
        if name.startswith(f"{__name__}.")
    )


def _register_keras_objects(_keras):
    # When one of our own modules imported Keras, registering now would
    # import modules that need the half-imported one; that import is on
    # its way to the classes it uses (every loader goes through `models`).
    if _importing_own_module():
        return
    for module in _KERAS_OBJECT_MODULES:
        importlib.import_module(module)


wrapt.register_post_import_hook(_register_keras_objects, "keras")
