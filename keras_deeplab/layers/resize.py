"""Half-pixel bilinear resizing to a size known only at run time."""

import keras
from keras import ops

from keras_deeplab.layers.registered import PACKAGE


def _source_positions(in_size, out_size):
    """Half-pixel bilinear taps along one axis: (lower, upper, weight)."""
    in_float = ops.cast(in_size, "float32")
    scale = in_float / ops.cast(out_size, "float32")
    centres = (ops.cast(ops.arange(out_size), "float32") + 0.5) * scale - 0.5
    # Clamping before the floor reproduces the edge handling of
    # tf.image.resize / ONNX Resize(half_pixel): taps outside the image
    # collapse onto the border pixel.
    centres = ops.clip(centres, 0.0, in_float - 1.0)
    lower = ops.floor(centres)
    weight = centres - lower
    lower = ops.cast(lower, "int32")
    upper = ops.minimum(lower + 1, ops.cast(in_size, "int32") - 1)
    return lower, upper, weight


def _lerp_axis(images, *, axis, out_size):
    lower, upper, weight = _source_positions(ops.shape(images)[axis], out_size)
    weight = ops.cast(weight, images.dtype)
    # Broadcast the per-position weight along the resized axis only.
    weight_shape = [1, 1, 1, 1]
    weight_shape[axis] = -1
    weight = ops.reshape(weight, weight_shape)
    below = ops.take(images, lower, axis=axis)
    above = ops.take(images, upper, axis=axis)
    return below + (above - below) * weight


def resize_bilinear(images, height, width):
    """Bilinear resize with half-pixel centres to a possibly dynamic size.

    Matches `tf.image.resize(..., "bilinear", antialias=False)` and ONNX
    `Resize(mode=linear, coordinate_transformation_mode=half_pixel)`. Written
    as two gathers and a lerp per axis because `keras.ops.image.resize`
    rejects a symbolic size on the TensorFlow backend (keras 3.14-3.15), which
    a model built on `(None, None, 3)` needs.

    Args:
        images: tensor (batch, h, w, channels).
        height: int or scalar int tensor. Output height.
        width: int or scalar int tensor. Output width.

    Returns:
        Tensor (batch, height, width, channels) with the dtype of `images`.
    """
    resized = _lerp_axis(images, axis=1, out_size=height)
    return _lerp_axis(resized, axis=2, out_size=width)


@keras.saving.register_keras_serializable(package=PACKAGE)
class ResizeToMatch(keras.layers.Layer):
    """Bilinearly resizes `inputs[0]` to the height and width of `inputs[1]`.

    Used to bring logits back to the input size and to spread the 1x1 image
    pooling features over the feature map (from 1x1 the result is an exact
    broadcast). The reference tensor only contributes its dynamic shape.

    On TensorFlow it is one `tf.image.resize` (half-pixel bilinear, which
    takes a symbolic size where `keras.ops.image.resize` does not): one
    RESIZE_BILINEAR in TFLite, one ONNX `Resize`, instead of a chain of
    gathers. Elsewhere it is `resize_bilinear`, the same function in
    `keras.ops`.
    """

    def call(self, inputs):
        images, reference = inputs
        reference_shape = ops.shape(reference)
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf  # the TensorFlow backend's fast path

            resized = tf.image.resize(
                images, reference_shape[1:3], method="bilinear"
            )
            return ops.cast(resized, images.dtype)
        return resize_bilinear(images, reference_shape[1], reference_shape[2])

    def compute_output_shape(self, input_shape):
        images_shape, reference_shape = input_shape
        return (
            images_shape[0],
            reference_shape[1],
            reference_shape[2],
            images_shape[3],
        )
