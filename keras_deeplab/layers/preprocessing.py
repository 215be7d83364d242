"""Preprocessing that matches where pretrained weights came from, in the
model (`ImagePreprocessing`) and as a function of `keras.ops`."""

import keras
from keras import ops

from keras_deeplab.layers.registered import PACKAGE
from keras_deeplab.utils.errors import UserInputError

# keras.applications ResNet v1 weights were trained on caffe-style input:
# BGR channel order with the ImageNet mean pixel removed, no scaling.
IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)
IMAGENET_MEAN_RGB = tuple(reversed(IMAGENET_MEAN_BGR))
_RGB_TO_BGR = (2, 1, 0)
# torchvision weights expect RGB / 255, then this mean and std per channel.
TORCH_MEAN_RGB = (0.485, 0.456, 0.406)
TORCH_STD_RGB = (0.229, 0.224, 0.225)
_MAX_PIXEL = 255.0
# keras.applications MobileNetV3 weights expect RGB scaled to [-1, 1].
_TF_SCALE = 2.0 / _MAX_PIXEL
PREPROCESSING_MODES = ("caffe", "torch", "tf")


def preprocess_images(images, mode: str = "caffe"):
    """Normalises RGB images in [0, 255] the way pretrained weights expect.

    "caffe" equals `keras.applications.resnet.preprocess_input` (BGR, ImageNet
    mean pixel removed, no scaling); "torch" equals torchvision's
    `Normalize(mean, std)` after `ToTensor` (RGB / 255, then mean and std);
    "tf" is keras.applications MobileNetV3's `Rescaling(1 / 127.5, -1)`.
    Written with `keras.ops` so it runs on every backend and inside exported
    graphs.

    Args:
        images: tensor (..., height, width, 3). RGB values in [0, 255], any
            numeric dtype.
        mode: str. "caffe" (keras.applications ResNet), "torch"
            (torchvision) or "tf" (keras.applications MobileNetV3).
            Defaults to "caffe".

    Returns:
        float32 tensor of the same shape.
    """
    _check_mode(mode)
    images = ops.cast(images, "float32")
    if mode == "tf":
        return images * _TF_SCALE - 1.0
    if mode == "torch":
        # One multiply-add per channel: x / (255 std) - mean / std.
        scale = [1.0 / (_MAX_PIXEL * s) for s in TORCH_STD_RGB]
        offset = [
            m / s for m, s in zip(TORCH_MEAN_RGB, TORCH_STD_RGB, strict=True)
        ]
        return images * ops.convert_to_tensor(scale) - ops.convert_to_tensor(
            offset
        )
    # A gather, not ops.flip: TFLite's full-int8 path mangles the REVERSE_V2
    # that flip becomes (0.62 relative error after the first conv, measured),
    # while a channel gather quantizes like any other op.
    bgr = ops.take(images, _RGB_TO_BGR, axis=-1)
    return bgr - ops.convert_to_tensor(IMAGENET_MEAN_BGR, dtype="float32")


def _check_mode(mode):
    if mode not in PREPROCESSING_MODES:
        raise UserInputError(
            f"preprocessing mode={mode!r} is not supported; expected one of "
            f"{PREPROCESSING_MODES}."
        )


@keras.saving.register_keras_serializable(package=PACKAGE)
class ImagePreprocessing(keras.layers.Layer):
    """RGB [0, 255] images -> the normalisation the ResNet weights expect.

    Runs in float32 whatever the global dtype policy, so the mean subtraction
    is exact before any cast to half precision.

    Args:
        mode: str. "caffe" (keras.applications weights) or "torch"
            (torchvision weights); see `preprocess_images`.
    """

    def __init__(self, mode="caffe", **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        _check_mode(mode)
        self.mode = mode

    def call(self, images):
        return preprocess_images(images, self.mode)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}

    def compute_output_shape(self, input_shape):
        return input_shape
