"""Dilated ResNet-50/101 (v1) with keras.applications layer names.

Channels-last only. Layer names, `use_bias` and BatchNormalization epsilon
equal those of `keras.applications.ResNet50/ResNet101(include_top=False)`, so
ImageNet weights transfer by name. Atrous convolution replaces the stride of
the last stage(s) to reach output stride 16 or 8 (Chen et al., 2017,
"Rethinking Atrous Convolution for Semantic Image Segmentation"); the weights
are identical for every output stride.
"""

from pathlib import Path

import keras
from keras import layers

from keras_deeplab.errors import UserInputError

STAGE_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
OUTPUT_STRIDES = (8, 16, 32)
STAGE_NAMES = ("conv2", "conv3", "conv4", "conv5")
BOTTLENECK_EXPANSION = 4
# keras.applications uses 1.001e-5; equal epsilon keeps numerics identical.
BACKBONE_BN_EPSILON = 1.001e-5
# BatchNormalization decay of the DeepLabV3 recipe (paper, section 4).
PAPER_BN_MOMENTUM = 0.9997
# Output stride reached after the stem (7x7/2 conv + 3x3/2 max-pool).
_STEM_STRIDE = 4
# The file name keras.applications downloads and caches the weights under.
IMAGENET_FILE = "resnet{depth}_weights_tf_dim_ordering_tf_kernels_notop.h5"
_REFERENCE_BUILDERS = {
    50: keras.applications.ResNet50,
    101: keras.applications.ResNet101,
}


def stage_plan(output_stride):
    """Stride and dilation rate of stages conv2..conv5 for an output stride.

    Each stage that would push the stride past `output_stride` keeps stride 1
    and multiplies the dilation rate by 2 instead.

    Args:
        output_stride: int. 8, 16 or 32.

    Returns:
        Tuple of four `(stride, rate)` pairs, one per stage.

    Raises:
        ValueError: if `output_stride` is not 8, 16 or 32.
    """
    if output_stride not in OUTPUT_STRIDES:
        raise UserInputError(
            f"output_stride={output_stride!r} is not supported; expected one "
            f"of {OUTPUT_STRIDES}. Pass output_stride=16."
        )
    plan = []
    current_stride, rate = _STEM_STRIDE, 1
    for stage_stride in (1, 2, 2, 2):
        if current_stride * stage_stride > output_stride:
            rate *= stage_stride
            plan.append((1, rate))
        else:
            current_stride *= stage_stride
            plan.append((stage_stride, rate))
    return tuple(plan)


def block_rates(output_stride, multi_grid, depth=50):
    """Dilation rate of every bottleneck's 3x3 conv, stage by stage.

    Multi-grid scales the rates of the last stage: its unit i uses
    `stage_rate * multi_grid[i]`.

    Args:
        output_stride: int. 8, 16 or 32.
        multi_grid: tuple of ints, one per block of the last stage.
        depth: int. 50 or 101.

    Returns:
        Tuple of four tuples of ints.
    """
    blocks = _validated_blocks(depth)
    if len(multi_grid) != blocks[-1] or min(multi_grid) < 1:
        raise UserInputError(
            f"multi_grid={tuple(multi_grid)!r} is invalid; expected "
            f"{blocks[-1]} positive ints, one per conv5 block, e.g. (1, 2, 4)."
        )
    plan = stage_plan(output_stride)
    rates = [(plan[i][1],) * blocks[i] for i in range(len(blocks) - 1)]
    rates.append(tuple(plan[-1][1] * unit for unit in multi_grid))
    return tuple(rates)


def _validated_blocks(depth):
    if depth not in STAGE_BLOCKS:
        raise UserInputError(
            f"depth={depth!r} is not supported; expected one of "
            f"{tuple(STAGE_BLOCKS)}."
        )
    return STAGE_BLOCKS[depth]


def _conv_bn(x, filters, kernel_size, *, name, stride=1, rate=1, bn_momentum):
    """Conv2D + BatchNormalization named like keras.applications."""
    x = layers.Conv2D(
        filters,
        kernel_size,
        strides=stride,
        dilation_rate=rate,
        padding="same" if kernel_size > 1 else "valid",
        name=f"{name}_conv",
    )(x)
    return layers.BatchNormalization(
        epsilon=BACKBONE_BN_EPSILON, momentum=bn_momentum, name=f"{name}_bn"
    )(x)


def _bottleneck(x, filters, *, stride, rate, projection, name, bn_momentum):
    """ResNet v1 bottleneck: the stride sits on the first 1x1 conv.

    The 3x3 conv therefore always has stride 1 and can be dilated: no conv
    ever combines stride > 1 with dilation > 1 (Keras forbids it).
    """
    out_filters = BOTTLENECK_EXPANSION * filters
    shortcut = x
    if projection:
        shortcut = _conv_bn(
            x,
            out_filters,
            1,
            stride=stride,
            name=f"{name}_0",
            bn_momentum=bn_momentum,
        )
    x = _conv_bn(
        x, filters, 1, stride=stride, name=f"{name}_1", bn_momentum=bn_momentum
    )
    x = layers.Activation("relu", name=f"{name}_1_relu")(x)
    x = _conv_bn(
        x, filters, 3, rate=rate, name=f"{name}_2", bn_momentum=bn_momentum
    )
    x = layers.Activation("relu", name=f"{name}_2_relu")(x)
    x = _conv_bn(x, out_filters, 1, name=f"{name}_3", bn_momentum=bn_momentum)
    x = layers.Add(name=f"{name}_add")([shortcut, x])
    return layers.Activation("relu", name=f"{name}_out")(x)


def _stage(x, filters, *, stride, rates, name, bn_momentum):
    for index, rate in enumerate(rates):
        x = _bottleneck(
            x,
            filters,
            stride=stride if index == 0 else 1,
            rate=rate,
            projection=index == 0,
            name=f"{name}_block{index + 1}",
            bn_momentum=bn_momentum,
        )
    return x


def resnet_features(
    images,
    *,
    depth=50,
    output_stride=32,
    multi_grid=(1, 1, 1),
    width=64,
    bn_momentum=PAPER_BN_MOMENTUM,
):
    """Applies the dilated ResNet to a symbolic tensor.

    Args:
        images: KerasTensor (batch, h, w, 3), already preprocessed.
        depth: int. 50 or 101. Defaults to 50.
        output_stride: int. 8, 16 or 32. Defaults to 32.
        multi_grid: tuple of 3 ints. Rate multipliers of the conv5 blocks.
            Defaults to (1, 1, 1).
        width: int. Filters of the stem and of the first stage's bottleneck;
            64 is ResNet-50/101, smaller values give fast test models.
        bn_momentum: float. BatchNormalization moving-average momentum.

    Returns:
        Dict from stage name ("conv2".."conv5") to its output tensor.
    """
    rates = block_rates(output_stride, multi_grid, depth)
    if width < 1:
        raise UserInputError(
            f"width={width!r} must be a positive int, e.g. 64."
        )
    x = layers.ZeroPadding2D(padding=3, name="conv1_pad")(images)
    x = layers.Conv2D(width, 7, strides=2, name="conv1_conv")(x)
    x = layers.BatchNormalization(
        epsilon=BACKBONE_BN_EPSILON, momentum=bn_momentum, name="conv1_bn"
    )(x)
    x = layers.Activation("relu", name="conv1_relu")(x)
    x = layers.ZeroPadding2D(padding=1, name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    features = {}
    plan = stage_plan(output_stride)
    for index, name in enumerate(STAGE_NAMES):
        x = _stage(
            x,
            width * 2**index,
            stride=plan[index][0],
            rates=rates[index],
            name=name,
            bn_momentum=bn_momentum,
        )
        features[name] = x  # conv5: (batch, h/os, w/os, 32 * width)
    return features


def dilated_resnet(
    depth: int = 50,
    *,
    output_stride: int = 32,
    multi_grid: tuple = (1, 1, 1),
    input_shape: tuple = (None, None, 3),
    weights: str | None = None,
    return_stages: bool = False,
    width: int = 64,
    bn_momentum: float = PAPER_BN_MOMENTUM,
) -> keras.Model:
    """Builds a dilated ResNet v1 backbone as a functional model.

    Input is preprocessed like `keras.applications.resnet.preprocess_input`.

    Args:
        depth: int. 50 or 101. Defaults to 50.
        output_stride: int. 8, 16 or 32. Defaults to 32 (plain ResNet).
        multi_grid: tuple of 3 ints. Rate multipliers of the conv5 blocks.
            Defaults to (1, 1, 1).
        input_shape: tuple. (height, width, 3); None for any size.
        weights: None, "imagenet" (downloaded and cached by Keras) or the path
            of a keras.applications `..._notop.h5` / `.weights.h5` file.
        return_stages: bool. Return a dict of all four stage outputs instead
            of the conv5 feature map. Defaults to False.
        width: int. Base width; 64 for the real ResNet. Defaults to 64.
        bn_momentum: float. BatchNormalization momentum.

    Returns:
        `keras.Model` named "resnet{depth}".
    """
    images = keras.Input(shape=input_shape, name="images")
    features = resnet_features(
        images,
        depth=depth,
        output_stride=output_stride,
        multi_grid=multi_grid,
        width=width,
        bn_momentum=bn_momentum,
    )
    outputs = features if return_stages else features["conv5"]
    model = keras.Model(images, outputs, name=f"resnet{depth}")
    if weights is not None:
        load_imagenet_weights(model, depth=depth, weights=weights)
    return model


def _reference_resnet(depth, weights):
    """keras.applications ResNet without top, holding `weights`."""
    _validated_blocks(depth)
    builder = _REFERENCE_BUILDERS[depth]
    if weights != "imagenet" and not Path(weights).is_file():
        raise FileNotFoundError(
            f"backbone weights file {weights!r} does not exist; expected "
            f"'imagenet' or the path of a resnet{depth} notop .h5 file from "
            "keras.applications."
        )
    return builder(include_top=False, weights=weights)


def cached_imagenet_weights(depth) -> Path | None:
    """The keras.applications ImageNet *_notop.h5 file if already cached.

    Keras downloads it to $KERAS_HOME/models (default ~/.keras/models) on
    first use of `weights="imagenet"`; on an offline machine copy the file
    there, or pass its path as `backbone_weights`.
    """
    import os

    _validated_blocks(depth)
    home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    path = home / "models" / IMAGENET_FILE.format(depth=depth)
    return path if path.is_file() else None


def load_imagenet_weights(model, *, depth, weights="imagenet"):
    """Copies keras.applications ResNet weights into `model` by layer name.

    Args:
        model: keras.Model containing the backbone layers (a backbone or a
            full DeepLabV3 model).
        depth: int. 50 or 101.
        weights: "imagenet" (Keras downloads and caches the file) or a path to
            a local `..._notop.h5` / `.weights.h5` file for offline machines.

    Raises:
        FileNotFoundError: if `weights` is a path that does not exist.
        ValueError: if any weighted layer is missing or differs in shape.
    """
    transfer_weights(_reference_resnet(depth, weights), model)


def transfer_weights(source, target):
    """Copies the weights of every weighted layer of `source` into `target`.

    Layers are matched by name; every weighted source layer must exist in
    `target` with identical variable shapes. Nothing is copied unless all
    layers match, so a failed transfer never leaves a half-loaded model.

    Raises:
        ValueError: listing every missing or mismatched layer name.
    """
    target_layers = {layer.name: layer for layer in target.layers}
    missing, mismatched, pairs = [], [], []
    for layer in source.layers:
        if not layer.weights:
            continue
        counterpart = target_layers.get(layer.name)
        if counterpart is None:
            missing.append(layer.name)
            continue
        source_shapes = [tuple(w.shape) for w in layer.weights]
        target_shapes = [tuple(w.shape) for w in counterpart.weights]
        if source_shapes != target_shapes:
            mismatched.append(
                f"{layer.name}: {source_shapes} vs {target_shapes}"
            )
            continue
        pairs.append((layer, counterpart))
    if missing or mismatched:
        raise UserInputError(
            f"cannot transfer weights from {source.name!r} to "
            f"{target.name!r}: {len(missing)} layers missing in the target "
            f"{missing}, {len(mismatched)} with other shapes "
            f"{mismatched}. Build the target with width=64 and the "
            "same depth as the weights."
        )
    for layer, counterpart in pairs:
        counterpart.set_weights(layer.get_weights())
    return len(pairs)
