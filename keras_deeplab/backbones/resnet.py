"""Dilated ResNet-50/101 with keras.applications layer names, in two layouts.

Channels-last only. Atrous convolution replaces the stride of the last
stage(s) to reach output stride 16 or 8 (Chen et al., 2017, "Rethinking
Atrous Convolution for Semantic Image Segmentation"); the weights are
identical for every output stride.

Two layouts of the same network share one builder and one set of layer names:
- "keras_applications" (default): ResNet v1 as in
  `keras.applications.ResNet50/101(include_top=False)` (stride on the first
  1x1 conv of a block, conv biases, BN epsilon 1.001e-5), so its ImageNet
  weights transfer by name.
- "torchvision": ResNet v1.5 as in torchvision (stride on the 3x3 conv with
  PyTorch's symmetric padding, no conv bias, BN epsilon 1e-5; the first
  block of a dilated stage keeps the previous stage's rate), so torchvision
  DeepLabV3 checkpoints convert exactly (`keras_deeplab.convert`).
"""

import dataclasses

import keras
from keras import layers

from keras_deeplab.backbones.imagenet import load_imagenet_weights
from keras_deeplab.layers import bn_name, conv_class, conv_name
from keras_deeplab.spec import OUTPUT_STRIDES, PAPER_BN_MOMENTUM, VARIANTS
from keras_deeplab.utils.errors import UserInputError

STAGE_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
STAGE_NAMES = ("conv2", "conv3", "conv4", "conv5")
STEM_UNIT = "conv1"
BOTTLENECK_EXPANSION = 4
# keras.applications uses 1.001e-5; equal epsilon keeps numerics identical.
BACKBONE_BN_EPSILON = 1.001e-5
TORCH_BN_EPSILON = 1e-5  # torch.nn.BatchNorm2d's default
# Output stride reached after the stem (7x7/2 conv + 3x3/2 max-pool).
_STEM_STRIDE = 4


@dataclasses.dataclass(frozen=True)
class _Layout:
    """Where two ResNet implementations differ (same weight shapes)."""

    stride_on_3x3: bool  # v1.5 (torchvision) vs v1 (keras.applications)
    use_bias: bool  # conv biases (keras.applications) or none (torchvision)
    bn_epsilon: float
    first_block_keeps_rate: bool  # torchvision's replace_stride_with_dilation


_LAYOUTS = {
    "keras_applications": _Layout(
        stride_on_3x3=False,
        use_bias=True,
        bn_epsilon=BACKBONE_BN_EPSILON,
        first_block_keeps_rate=False,
    ),
    "torchvision": _Layout(
        stride_on_3x3=True,
        use_bias=False,
        bn_epsilon=TORCH_BN_EPSILON,
        first_block_keeps_rate=True,
    ),
}
assert tuple(_LAYOUTS) == VARIANTS


def _layout(variant):
    if variant not in _LAYOUTS:
        raise UserInputError(
            f"variant={variant!r} is not supported; expected one of {VARIANTS}."
        )
    return _LAYOUTS[variant]


def block_name(stage: str, index: int) -> str:
    """Name prefix of bottleneck `index` (from 0) of a stage, e.g. conv4."""
    return f"{stage}_block{index + 1}"


def block_unit(stage: str, index: int, unit: int) -> str:
    """A bottleneck's conv + BN unit: 1-3 the main path, 0 the projection
    shortcut (keras.applications' names, e.g. conv4_block2_2)."""
    return f"{block_name(stage, index)}_{unit}"


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


def block_rates(
    output_stride, multi_grid, depth=50, *, variant="keras_applications"
):
    """Dilation rate of every bottleneck's 3x3 conv, stage by stage.

    Every block of a stage uses the stage's rate, except in the torchvision
    layout, whose first block of a dilated stage keeps the rate of the stage
    before it (OS8: conv4 (1, 2, 2, 2, 2, 2), conv5 (2, 4, 4)). Multi-grid
    then scales the rates of the last stage: its unit i is multiplied by
    `multi_grid[i]`.

    Args:
        output_stride: int. 8, 16 or 32.
        multi_grid: tuple of ints, one per block of the last stage.
        depth: int. 50 or 101.
        variant: str. "keras_applications" or "torchvision".

    Returns:
        Tuple of four tuples of ints.
    """
    blocks = _validated_blocks(depth)
    layout = _layout(variant)
    if (
        len(multi_grid) != blocks[-1]
        or not all(isinstance(unit, int) for unit in multi_grid)
        or min(multi_grid) < 1
    ):
        raise UserInputError(
            f"multi_grid={tuple(multi_grid)!r} is invalid; expected "
            f"{blocks[-1]} positive ints, one per conv5 block, e.g. (1, 2, 4)."
        )
    rates, previous = [], 1
    for (_, rate), count in zip(stage_plan(output_stride), blocks, strict=True):
        first = previous if layout.first_block_keeps_rate else rate
        rates.append((first,) + (rate,) * (count - 1))
        previous = rate
    rates[-1] = tuple(
        r * unit for r, unit in zip(rates[-1], multi_grid, strict=True)
    )
    return tuple(rates)


def _validated_blocks(depth):
    if depth not in STAGE_BLOCKS:
        raise UserInputError(
            f"depth={depth!r} is not supported; expected one of "
            f"{tuple(STAGE_BLOCKS)}."
        )
    return STAGE_BLOCKS[depth]


def _conv_bn(
    x, filters, kernel_size, *, name, layout, bn_momentum, stride=1, rate=1
):
    """Conv2D + BatchNormalization named like keras.applications.

    A strided 3x3 conv pads explicitly by 1 on every side, as PyTorch does;
    TF "same" would pad 0 before and 1 after on even sizes.
    """
    padding = "same" if kernel_size > 1 else "valid"
    if kernel_size > 1 and stride > 1:
        x = layers.ZeroPadding2D(kernel_size // 2, name=f"{name}_pad")(x)
        padding = "valid"
    x = conv_class(rate)(
        filters,
        kernel_size,
        strides=stride,
        dilation_rate=rate,
        padding=padding,
        use_bias=layout.use_bias,
        name=conv_name(name),
    )(x)
    return layers.BatchNormalization(
        epsilon=layout.bn_epsilon, momentum=bn_momentum, name=bn_name(name)
    )(x)


def _bottleneck(x, filters, *, stride, rate, stage, index, layout, bn_momentum):
    """Bottleneck `index` of `stage`; the stride sits on the first 1x1 conv
    (v1) or on the 3x3 conv (v1.5), and the first block of a stage projects
    its shortcut.

    A dilated stage has stride 1, so no conv ever combines stride > 1 with
    dilation > 1 (Keras forbids it).
    """
    out_filters = BOTTLENECK_EXPANSION * filters
    stride_1x1, stride_3x3 = (
        (1, stride) if layout.stride_on_3x3 else (stride, 1)
    )
    common = {"layout": layout, "bn_momentum": bn_momentum}
    name = block_name(stage, index)
    shortcut = x
    if index == 0:
        shortcut = _conv_bn(
            x,
            out_filters,
            1,
            stride=stride,
            name=block_unit(stage, index, 0),
            **common,
        )
    x = _conv_bn(
        x,
        filters,
        1,
        stride=stride_1x1,
        name=block_unit(stage, index, 1),
        **common,
    )
    x = layers.Activation("relu", name=f"{name}_1_relu")(x)
    x = _conv_bn(
        x,
        filters,
        3,
        stride=stride_3x3,
        rate=rate,
        name=block_unit(stage, index, 2),
        **common,
    )
    x = layers.Activation("relu", name=f"{name}_2_relu")(x)
    x = _conv_bn(x, out_filters, 1, name=block_unit(stage, index, 3), **common)
    x = layers.Add(name=f"{name}_add")([shortcut, x])
    return layers.Activation("relu", name=f"{name}_out")(x)


def _stage(x, filters, *, stride, rates, name, layout, bn_momentum):
    for index, rate in enumerate(rates):
        x = _bottleneck(
            x,
            filters,
            stride=stride if index == 0 else 1,
            rate=rate,
            stage=name,
            index=index,
            layout=layout,
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
    variant="keras_applications",
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
        variant: str. "keras_applications" (v1) or "torchvision" (v1.5).

    Returns:
        Dict from stage name ("conv2".."conv5") to its output tensor.
    """
    rates = block_rates(output_stride, multi_grid, depth, variant=variant)
    layout = _layout(variant)
    if not isinstance(width, int) or width < 1:
        raise UserInputError(
            f"width={width!r} must be a positive int, e.g. 64."
        )
    x = layers.ZeroPadding2D(padding=3, name="conv1_pad")(images)
    x = layers.Conv2D(
        width, 7, strides=2, use_bias=layout.use_bias, name=conv_name(STEM_UNIT)
    )(x)
    x = layers.BatchNormalization(
        epsilon=layout.bn_epsilon,
        momentum=bn_momentum,
        name=bn_name(STEM_UNIT),
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
            layout=layout,
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
    variant: str = "keras_applications",
) -> keras.Model:
    """Builds a dilated ResNet backbone as a functional model.

    Input is preprocessed like `keras.applications.resnet.preprocess_input`
    ("keras_applications") or torchvision's `Normalize` ("torchvision").

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
        variant: str. "keras_applications" (ResNet v1, the default) or
            "torchvision" (ResNet v1.5); see the module docstring.

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
        variant=variant,
    )
    outputs = features if return_stages else features["conv5"]
    model = keras.Model(images, outputs, name=f"resnet{depth}")
    if weights is not None:
        load_imagenet_weights(
            model, backbone=f"resnet{depth}", weights=weights, variant=variant
        )
    return model
