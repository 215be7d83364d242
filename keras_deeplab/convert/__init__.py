"""PyTorch checkpoints -> Keras models, without PyTorch.

`torch_file` reads `torch.save` files (zip and legacy formats) into numpy
arrays, refusing anything but weights; `torchvision` maps torchvision's and
VainF's checkpoints onto the `variant="torchvision"` models. `ARCHS` and
`read_torch_file` need no TensorFlow; the rest loads on first use.
"""

from keras_deeplab.convert.archs import ARCHS
from keras_deeplab.convert.torch_file import read_torch_file
from keras_deeplab.utils.lazy import lazy_attributes

_MODULE = "keras_deeplab.convert.torchvision"
__getattr__ = lazy_attributes(
    __name__, {"convert_torchvision": _MODULE, "read_checkpoint": _MODULE}
)
__all__ = ["ARCHS", "convert_torchvision", "read_checkpoint", "read_torch_file"]
