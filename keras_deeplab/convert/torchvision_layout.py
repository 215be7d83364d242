"""Where each tensor of a torchvision or VainF checkpoint goes in our
`variant="torchvision"` models: (Keras layer, torch module, kind) for every
backbone and head, from the builders' own unit names (`heads.aspp`,
`backbones.resnet`, `backbones.mobilenet_v3`), and the tensors each kind of
layer holds.
"""

from keras_deeplab.backbones.mobilenet_v3 import (
    BLOCKS,
    BN_SUFFIX,
    DEPTHWISE,
    EXPAND,
    LAST,
    PROJECT,
    SE_EXPAND,
    SE_REDUCE,
    STEM,
    block_prefix,
)
from keras_deeplab.backbones.resnet import (
    STAGE_BLOCKS,
    STAGE_NAMES,
    STEM_UNIT,
    block_unit,
)
from keras_deeplab.heads.aspp import (
    ASPP_1X1,
    ASPP_POOL,
    ASPP_PROJECT,
    AUX_CLASSIFIER,
    AUX_HEAD,
    DECODER_LOW_LEVEL,
    HEAD_CLASSIFIER,
    HEAD_CONV,
    OS16_ATROUS_RATES,
    aspp_atrous_unit,
    decoder_conv_unit,
)
from keras_deeplab.heads.lraspp import (
    LOW_CLASSIFIER,
    LRASPP_CBR,
    LRASPP_SCALE,
)
from keras_deeplab.layers import bn_name, conv_name
from keras_deeplab.spec import MOBILENETS

# Tensors of each kind of layer, in the order Keras keeps its weights, and
# the rank of each.
TORCH_TENSORS = {
    "conv": (("weight", 4),),
    "conv_bias": (("weight", 4), ("bias", 1)),
    "depthwise": (("weight", 4),),
    # Layers whose Keras name is given whole (no unit suffix added).
    "named_conv": (("weight", 4),),
    "named_bn": (
        ("weight", 1),
        ("bias", 1),
        ("running_mean", 1),
        ("running_var", 1),
    ),
    "bn": (
        ("weight", 1),
        ("bias", 1),
        ("running_mean", 1),
        ("running_var", 1),
    ),
}
BN_COUNTER = "num_batches_tracked"  # PyTorch bookkeeping, no Keras weight
VAINF_STATE = "model_state"
DATA_PARALLEL_PREFIX = "module."
TORCHVISION_HEAD = "classifier."
VAINF_HEAD = "classifier.classifier."
VAINF_PLUS_HEAD = "classifier."
AUX = "aux_classifier."


def _mobilenet_layers():
    """(Keras layer, torch module, kind) of torchvision's MobileNetV3-Large
    `features` (its segmentation models keep them as "backbone")."""
    yield STEM, "backbone.0.0", "named_conv"
    yield STEM + BN_SUFFIX, "backbone.0.1", "named_bn"
    for index, block in enumerate(BLOCKS):
        torch_block = f"backbone.{index + 1}.block"
        prefix, position = block_prefix(index), 0
        units = [EXPAND] if index else []  # block 0 has no expansion
        units += [DEPTHWISE, "se"] if block.squeeze_excite else [DEPTHWISE]
        for unit in [*units, PROJECT]:
            module = f"{torch_block}.{position}"
            if unit == "se":
                yield f"{prefix}{SE_REDUCE}", f"{module}.fc1", "conv_bias"
                yield f"{prefix}{SE_EXPAND}", f"{module}.fc2", "conv_bias"
            else:
                kind = "depthwise" if unit == DEPTHWISE else "named_conv"
                yield f"{prefix}{unit}", f"{module}.0", kind
                yield f"{prefix}{unit}{BN_SUFFIX}", f"{module}.1", "named_bn"
            position += 1
    last = f"backbone.{len(BLOCKS) + 1}"
    yield LAST, f"{last}.0", "named_conv"
    yield LAST + BN_SUFFIX, f"{last}.1", "named_bn"


def _lraspp_layers(prefix=TORCHVISION_HEAD):
    """torchvision's LRASPPHead."""
    yield from _conv_bn(LRASPP_CBR, f"{prefix}cbr.0", f"{prefix}cbr.1")
    yield LRASPP_SCALE, f"{prefix}scale.1", "conv"
    yield LOW_CLASSIFIER, f"{prefix}low_classifier", "conv_bias"
    yield HEAD_CLASSIFIER, f"{prefix}high_classifier", "conv_bias"


def _backbone_layers(depth):
    """(Keras unit, torch module, kind) of a torchvision ResNet backbone."""
    yield STEM_UNIT, "backbone.conv1", "conv"
    yield STEM_UNIT, "backbone.bn1", "bn"
    stages = zip(STAGE_NAMES, STAGE_BLOCKS[depth], strict=True)
    for stage_index, (stage, blocks) in enumerate(stages, start=1):
        for index in range(blocks):
            torch_block = f"backbone.layer{stage_index}.{index}"
            for unit in (1, 2, 3):
                keras_unit = block_unit(stage, index, unit)
                yield keras_unit, f"{torch_block}.conv{unit}", "conv"
                yield keras_unit, f"{torch_block}.bn{unit}", "bn"
            if index == 0:
                shortcut = block_unit(stage, index, 0)
                yield shortcut, f"{torch_block}.downsample.0", "conv"
                yield shortcut, f"{torch_block}.downsample.1", "bn"


def _conv_bn(unit, conv_module, bn_module):
    yield unit, conv_module, "conv"
    yield unit, bn_module, "bn"


def _aspp_layers(prefix):
    """torchvision's ASPP module (VainF's is the same) under `prefix`."""
    branches = f"{prefix}convs"
    yield from _conv_bn(ASPP_1X1, f"{branches}.0.0", f"{branches}.0.1")
    for index in range(1, len(OS16_ATROUS_RATES) + 1):
        yield from _conv_bn(
            aspp_atrous_unit(index),
            f"{branches}.{index}.0",
            f"{branches}.{index}.1",
        )
    pooling = f"{branches}.{len(OS16_ATROUS_RATES) + 1}"  # .0 is the pool
    yield from _conv_bn(ASPP_POOL, f"{pooling}.1", f"{pooling}.2")
    yield from _conv_bn(
        ASPP_PROJECT, f"{prefix}project.0", f"{prefix}project.1"
    )


def _head_layers(prefix):
    """torchvision's DeepLabHead: ASPP, 3x3 conv + BN, 1x1 classifier."""
    yield from _aspp_layers(f"{prefix}0.")
    yield from _conv_bn(HEAD_CONV, f"{prefix}1", f"{prefix}2")
    yield HEAD_CLASSIFIER, f"{prefix}4", "conv_bias"


def _plus_head_layers(prefix=VAINF_PLUS_HEAD):
    """VainF's DeepLabHeadV3Plus: 1x1 48 projection of layer1, ASPP, one
    3x3 conv + BN on the concatenation, 1x1 classifier."""
    yield from _aspp_layers(f"{prefix}aspp.")
    yield from _conv_bn(
        DECODER_LOW_LEVEL, f"{prefix}project.0", f"{prefix}project.1"
    )
    yield from _conv_bn(
        decoder_conv_unit(1),
        f"{prefix}classifier.0",
        f"{prefix}classifier.1",
    )
    yield HEAD_CLASSIFIER, f"{prefix}classifier.3", "conv_bias"


def _aux_layers():
    """torchvision's FCNHead on layer3: 3x3 conv + BN, 1x1 classifier."""
    yield from _conv_bn(AUX_HEAD, f"{AUX}0", f"{AUX}1")
    yield AUX_CLASSIFIER, f"{AUX}4", "conv_bias"


def _keras_layer(unit, kind):
    """A unit's conv or BN layer; layers of the other kinds carry their own
    name (classifiers, MobileNetV3's keras.applications names)."""
    if kind == "bn":
        return bn_name(unit)
    if kind == "conv":
        return conv_name(unit)
    return unit


def layer_map(
    *,
    backbone="resnet50",
    head_prefix=TORCHVISION_HEAD,
    aux_head=False,
    architecture="deeplabv3",
):
    """[(Keras layer name, torch module name, kind)] of one architecture."""
    if backbone in MOBILENETS:
        units = list(_mobilenet_layers())
    else:
        units = list(_backbone_layers(int(backbone.removeprefix("resnet"))))
    if architecture == "deeplabv3plus":
        units += _plus_head_layers()
    elif architecture == "lraspp":
        units += _lraspp_layers()
    else:
        units += _head_layers(head_prefix)
    units += list(_aux_layers()) if aux_head else []
    return [
        (_keras_layer(unit, kind), module, kind) for unit, module, kind in units
    ]
