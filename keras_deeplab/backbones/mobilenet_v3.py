"""Dilated MobileNetV3-Large with keras.applications names, in two layouts.

Channels-last only. MobileNetV3 (Howard et al., 2019, "Searching for
MobileNetV3", Table 1): a 3x3 stem, 15 inverted-residual blocks (1x1
expansion, depthwise conv, optional squeeze-and-excite, 1x1 projection) and
a 1x1 conv to 960 channels. Output stride 16 turns the last strided block
into dilation 2 as torchvision's `dilated=True` does; 8 dilates the stage
before it too (rates 2 and 4), as DeepLab does for ResNet. The weights are
the same at every output stride.

- "keras_applications": `keras.applications.MobileNetV3Large` (its names,
  TF "same" padding of the stem and `correct_pad` before strided depthwise
  convs), so its ImageNet weights transfer by name; input scaled to [-1, 1].
- "torchvision": torchvision's `mobilenet_v3_large` (PyTorch's symmetric
  padding), whose DeepLabV3 and LR-ASPP checkpoints convert exactly.
"""

import dataclasses

from keras import layers

from keras_deeplab.layers import depthwise_class
from keras_deeplab.spec import OUTPUT_STRIDES
from keras_deeplab.utils.errors import UserInputError


@dataclasses.dataclass(frozen=True)
class Block:
    """One inverted-residual block of MobileNetV3-Large (paper, Table 1)."""

    kernel: int
    expanded: int  # channels after the 1x1 expansion
    out: int
    squeeze_excite: bool
    activation: str  # "relu" or "hard_swish"
    stride: int


BLOCKS = (
    Block(3, 16, 16, False, "relu", 1),
    Block(3, 64, 24, False, "relu", 2),  # stride 4
    Block(3, 72, 24, False, "relu", 1),
    Block(5, 72, 40, True, "relu", 2),  # stride 8: torchvision's "C2"
    Block(5, 120, 40, True, "relu", 1),
    Block(5, 120, 40, True, "relu", 1),
    Block(3, 240, 80, False, "hard_swish", 2),  # stride 16
    Block(3, 200, 80, False, "hard_swish", 1),
    Block(3, 184, 80, False, "hard_swish", 1),
    Block(3, 184, 80, False, "hard_swish", 1),
    Block(3, 480, 112, True, "hard_swish", 1),
    Block(3, 672, 112, True, "hard_swish", 1),
    Block(5, 672, 160, True, "hard_swish", 2),  # stride 32
    Block(5, 960, 160, True, "hard_swish", 1),
    Block(5, 960, 160, True, "hard_swish", 1),
)
STEM_FILTERS = 16
LAST_FILTERS = 960
BN_EPSILON = 1e-3  # both keras.applications and torchvision
_STEM_STRIDE = 2
# The blocks whose outputs the heads read: the end of the stride-4 stage
# (DeepLabV3+'s decoder) and the first stride-8 block, torchvision's "C2"
# (LR-ASPP's low-level input and the aux head's).
STRIDE4_BLOCK = 2
STRIDE8_BLOCK = 3
# Layer names, as keras.applications spells them.
STEM = "conv"
LAST = "conv_1"
EXPAND, DEPTHWISE, PROJECT = "expand", "depthwise", "project"
SE_REDUCE, SE_EXPAND = "squeeze_excite_conv", "squeeze_excite_conv_1"
BN_SUFFIX = "_bn"


def block_prefix(index: int) -> str:
    """keras.applications' prefix of block `index` (from 0)."""
    return "expanded_conv_" if index == 0 else f"expanded_conv_{index}_"


def _make_divisible(value, divisor=8):
    """Channels rounded to a multiple of 8, never 10% below (both sources)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def squeeze_channels(block: Block) -> int:
    return _make_divisible(block.expanded // 4)


def block_plan(output_stride):
    """(stride, dilation rate) of every block for an output stride."""
    if output_stride not in OUTPUT_STRIDES:
        raise UserInputError(
            f"output_stride={output_stride!r} is not supported; expected one "
            f"of {OUTPUT_STRIDES}."
        )
    plan, current, rate = [], _STEM_STRIDE, 1
    for block in BLOCKS:
        if block.stride == 1:
            plan.append((1, rate))
        elif current * block.stride > output_stride:
            rate *= block.stride
            plan.append((1, rate))
        else:
            current *= block.stride
            plan.append((block.stride, rate))
    return tuple(plan)


def _bn(x, name, bn_momentum):
    return layers.BatchNormalization(
        epsilon=BN_EPSILON, momentum=bn_momentum, name=name + BN_SUFFIX
    )(x)


def _activation(x, kind, name):
    if kind == "relu":
        return layers.ReLU(name=name)(x)
    return layers.Activation("hard_swish", name=name)(x)


def _keras_correct_pad(x, kernel):
    """keras.applications' padding before a strided conv: one pixel less at
    the top/left unless the static input size is odd."""
    size = x.shape[1:3]
    adjust = (1, 1) if size[0] is None else (1 - size[0] % 2, 1 - size[1] % 2)
    half = kernel // 2
    return ((half - adjust[0], half), (half - adjust[1], half))


def _depthwise(x, block, *, stride, rate, prefix, torchvision, bn_momentum):
    padding = "same"
    if stride > 1:
        pad = (
            block.kernel // 2
            if torchvision
            else _keras_correct_pad(x, block.kernel)
        )
        x = layers.ZeroPadding2D(pad, name=f"{prefix}{DEPTHWISE}_pad")(x)
        padding = "valid"
    x = depthwise_class(rate)(
        block.kernel,
        strides=stride,
        dilation_rate=rate,
        padding=padding,
        use_bias=False,
        name=f"{prefix}{DEPTHWISE}",
    )(x)
    return _bn(x, f"{prefix}{DEPTHWISE}", bn_momentum)


def _squeeze_excite(x, block, prefix):
    scale = layers.GlobalAveragePooling2D(
        keepdims=True, name=f"{prefix}squeeze_excite_avg_pool"
    )(x)
    scale = layers.Conv2D(
        squeeze_channels(block), 1, name=f"{prefix}{SE_REDUCE}"
    )(scale)
    scale = layers.ReLU(name=f"{prefix}squeeze_excite_relu")(scale)
    scale = layers.Conv2D(block.expanded, 1, name=f"{prefix}{SE_EXPAND}")(scale)
    scale = layers.Activation(
        "hard_sigmoid", name=f"{prefix}squeeze_excite_hard_sigmoid"
    )(scale)
    return layers.Multiply(name=f"{prefix}squeeze_excite_mul")([x, scale])


def _inverted_residual(x, index, *, stride, rate, torchvision, bn_momentum):
    block, prefix = BLOCKS[index], block_prefix(index)
    shortcut = x
    if block.expanded != x.shape[-1]:
        x = layers.Conv2D(
            block.expanded, 1, use_bias=False, name=f"{prefix}{EXPAND}"
        )(x)
        x = _bn(x, f"{prefix}{EXPAND}", bn_momentum)
        x = _activation(x, block.activation, f"{prefix}{EXPAND}_activation")
    x = _depthwise(
        x,
        block,
        stride=stride,
        rate=rate,
        prefix=prefix,
        torchvision=torchvision,
        bn_momentum=bn_momentum,
    )
    x = _activation(x, block.activation, f"{prefix}{DEPTHWISE}_activation")
    if block.squeeze_excite:
        x = _squeeze_excite(x, block, prefix)
    x = layers.Conv2D(block.out, 1, use_bias=False, name=f"{prefix}{PROJECT}")(
        x
    )
    x = _bn(x, f"{prefix}{PROJECT}", bn_momentum)
    # The residual follows the block's design stride, not its dilation.
    if block.stride == 1 and shortcut.shape[-1] == block.out:
        x = layers.Add(name=f"{prefix}add")([shortcut, x])
    return x


def _stem(images, *, torchvision, bn_momentum):
    x = images
    padding = "same"
    if torchvision:
        x = layers.ZeroPadding2D(1, name=f"{STEM}_pad")(x)
        padding = "valid"
    x = layers.Conv2D(
        STEM_FILTERS,
        3,
        strides=_STEM_STRIDE,
        padding=padding,
        use_bias=False,
        name=STEM,
    )(x)
    x = _bn(x, STEM, bn_momentum)
    return _activation(x, "hard_swish", f"{STEM}_activation")


def mobilenet_v3_features(
    images, *, output_stride=32, bn_momentum=0.99, variant="keras_applications"
):
    """Applies the dilated MobileNetV3-Large to a symbolic tensor.

    Args:
        images: KerasTensor (batch, h, w, 3), already preprocessed.
        output_stride: int. 8, 16 or 32. Defaults to 32.
        bn_momentum: float. BatchNormalization momentum.
        variant: str. "keras_applications" or "torchvision".

    Returns:
        Dict: "stride4" (24 channels), "stride8" (40, torchvision's C2) and
        "out" (960 channels at the output stride).
    """
    torchvision = variant == "torchvision"
    x = _stem(images, torchvision=torchvision, bn_momentum=bn_momentum)
    features = {}
    for index, (stride, rate) in enumerate(block_plan(output_stride)):
        x = _inverted_residual(
            x,
            index,
            stride=stride,
            rate=rate,
            torchvision=torchvision,
            bn_momentum=bn_momentum,
        )
        if index == STRIDE4_BLOCK:
            features["stride4"] = x
        if index == STRIDE8_BLOCK:
            features["stride8"] = x
    x = layers.Conv2D(LAST_FILTERS, 1, use_bias=False, name=LAST)(x)
    x = _bn(x, LAST, bn_momentum)
    features["out"] = _activation(x, "hard_swish", f"{LAST}_activation")
    return features
