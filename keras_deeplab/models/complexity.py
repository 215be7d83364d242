"""Analytic compute cost (multiply-accumulates) of a built model."""

import keras

from keras_deeplab.utils.errors import UserInputError
from keras_deeplab.utils.image_size import height_width

FLOPS_PER_MAC = 2  # a multiply and an add
# A training step costs about three forward passes: the forward pass, the
# gradients of the inputs and the gradients of the weights.
TRAINING_FLOPS_PER_MAC = 3 * FLOPS_PER_MAC


_CONVOLUTIONS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)


def conv_macs(layer: keras.layers.Layer) -> int:
    """Multiply-accumulates of one Conv2D or DepthwiseConv2D call on its
    static output shape.

    Raises:
        ValueError: if the layer's output height or width is not static.
    """
    _, height, width, out_channels = layer.output.shape
    if height is None or width is None:
        raise UserInputError(
            f"layer {layer.name!r} has a dynamic output shape "
            f"{layer.output.shape}; build the model with a fixed input_shape, "
            "e.g. input_shape=(513, 513, 3), to count MACs."
        )
    kernel_h, kernel_w, in_per_group, _ = layer.kernel.shape
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        in_per_group = 1  # each output channel sees one input channel
    return height * width * out_channels * kernel_h * kernel_w * in_per_group


def model_macs(model: keras.Model) -> int:
    """Forward-pass MACs per image of every convolution in `model`.

    Convolutions dominate DeepLabV3 (> 99% of its compute); BatchNorm,
    activations, pooling and the bilinear resizes are not counted.
    """
    return sum(
        conv_macs(layer)
        for layer in model.layers
        if isinstance(layer, _CONVOLUTIONS)
    )


def graph_conv_macs(model: keras.Model, *, size) -> int:
    """MACs per image of the convolution ops TensorFlow actually runs.

    Counted by the TensorFlow profiler on the frozen inference graph of one
    image of `size` (a side or (height, width)). Unlike `model_macs` it sees
    how the backend lowers each layer: a plain Keras dilated Conv2D runs as
    SpaceToBatch + Conv2D + BatchToSpace, whose padding makes the
    convolution larger; our `AtrousConv2D` is one native op, so for our
    models the two counts agree.
    """
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    spec = tf.TensorSpec([1, *height_width(size), 3], tf.float32)
    forward = tf.function(lambda images: model(images, training=False))
    graph = convert_variables_to_constants_v2(
        forward.get_concrete_function(spec)
    ).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options.update(output="none", account_type_regexes=["Conv2D"])
    profile = tf.compat.v1.profiler.profile(graph=graph, options=options)
    return profile.total_float_ops // 2  # the profiler counts 2 FLOPs a MAC


def describe(model: keras.Model) -> str:
    """Name, parameters and forward GMACs of a model built on a fixed size."""
    height, width = model.input.shape[1:3]
    trainable = sum(int(w.numpy().size) for w in model.trainable_weights)
    return (
        f"{model.name}: {model.count_params():,} parameters "
        f"({trainable:,} trainable), {model_macs(model) / 1e9:.2f} GMACs at "
        f"{height}x{width}"
    )
