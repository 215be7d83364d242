"""Analytic compute cost (multiply-accumulates) of a built model."""

import keras

from keras_deeplab.errors import UserInputError


def conv_macs(layer: keras.layers.Conv2D) -> int:
    """Multiply-accumulates of one Conv2D call on its static output shape.

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
    return height * width * out_channels * kernel_h * kernel_w * in_per_group


def model_macs(model: keras.Model) -> int:
    """Forward-pass MACs per image of every convolution in `model`.

    Convolutions dominate DeepLabV3 (> 99% of its compute); BatchNorm,
    activations, pooling and the bilinear resizes are not counted.
    """
    return sum(
        conv_macs(layer)
        for layer in model.layers
        if isinstance(layer, keras.layers.Conv2D)
    )
