"""Atrous Spatial Pyramid Pooling, the DeepLabV3 head and the DeepLabV3+
decoder.

Channels-last only. ASPP runs parallel branches on the backbone output: one
1x1 conv, one 3x3 atrous conv per rate and an image-pooling branch (global
average pool -> 1x1 conv -> BN -> ReLU -> upsample); their concatenation is
projected by a 1x1 conv (Chen et al., 2017, section 3.3). Every conv is
bias-free and followed by BatchNormalization and ReLU.

The unit names below (a unit is a conv and its BN, see `layers.conv_name`)
are the ones `keras_deeplab.convert` maps checkpoints onto.
"""

from keras import layers

from keras_deeplab.layers import ResizeToMatch, bn_name, conv_class, conv_name

ASPP_FILTERS = 256
# Rates of the paper at output stride 16; they scale with 16 / output_stride.
OS16_ATROUS_RATES = (6, 12, 18)
_REFERENCE_OUTPUT_STRIDE = 16
HEAD_BN_EPSILON = 1e-5
# TF reference code drops 10% of the projected ASPP features; so do the FCN
# aux heads of the TF reference and torchvision.
HEAD_DROPOUT_RATE = 0.1
# DeepLabV3+ (Chen et al., 2018, section 4.1): the stride-4 features are
# reduced to 48 channels before they meet the 256-channel ASPP output.
DECODER_LOW_LEVEL_FILTERS = 48

ASPP_1X1 = "aspp_1x1"
ASPP_POOL = "aspp_pool"
ASPP_PROJECT = "aspp_project"
HEAD_CONV = "head_conv"  # torchvision's 3x3 conv before the classifier
DECODER_LOW_LEVEL = "decoder_low_level"
AUX_HEAD = "aux_head"
# The 1x1 classifiers, built float32 whatever the dtype policy.
HEAD_CLASSIFIER = "head_classifier"
AUX_CLASSIFIER = "aux_classifier"
# Layers a DeepLabV3+ has and a DeepLabV3 lacks start with this.
DECODER_PREFIX = "decoder_"


def aspp_atrous_unit(index: int) -> str:
    """The unit of the `index`-th atrous branch (from 1)."""
    return f"aspp_atrous{index}"


def decoder_conv_unit(index: int) -> str:
    """The unit of the `index`-th 3x3 refinement conv of V3+ (from 1)."""
    return f"{DECODER_PREFIX}conv{index}"


def default_atrous_rates(output_stride):
    """ASPP rates for an output stride: (6, 12, 18) at 16, doubled at 8.

    Args:
        output_stride: int. 8, 16 or 32.

    Returns:
        Tuple of three ints; halved (3, 6, 9) at output stride 32.
    """
    return tuple(
        rate * _REFERENCE_OUTPUT_STRIDE // output_stride
        for rate in OS16_ATROUS_RATES
    )


def conv_bn_relu(x, filters, kernel_size, *, unit, bn_momentum, rate=1):
    """Bias-free conv (atrous when `rate` > 1), BN and ReLU, named `unit`."""
    x = conv_class(rate)(
        filters,
        kernel_size,
        dilation_rate=rate,
        padding="same",
        use_bias=False,
        name=conv_name(unit),
    )(x)
    x = layers.BatchNormalization(
        epsilon=HEAD_BN_EPSILON, momentum=bn_momentum, name=bn_name(unit)
    )(x)
    return layers.Activation("relu", name=f"{unit}_relu")(x)


def _image_pooling(features, *, filters, bn_momentum):
    pooled = layers.GlobalAveragePooling2D(keepdims=True, name="aspp_pool_gap")(
        features
    )  # (batch, 1, 1, channels)
    pooled = conv_bn_relu(
        pooled, filters, 1, unit=ASPP_POOL, bn_momentum=bn_momentum
    )
    # From 1x1, bilinear upsampling is an exact broadcast.
    return ResizeToMatch(name="aspp_pool_resize")([pooled, features])


def aspp(features, *, atrous_rates, filters, image_pooling, bn_momentum):
    """Applies ASPP to a backbone feature map.

    Args:
        features: KerasTensor (batch, h/os, w/os, channels).
        atrous_rates: tuple of ints. One 3x3 atrous branch per rate.
        filters: int. Filters of every branch and of the projection.
        image_pooling: bool. Add the global-average-pooling branch.
        bn_momentum: float. BatchNormalization momentum.

    Returns:
        KerasTensor (batch, h/os, w/os, filters).
    """
    branches = [
        conv_bn_relu(
            features, filters, 1, unit=ASPP_1X1, bn_momentum=bn_momentum
        )
    ]
    for index, rate in enumerate(atrous_rates, start=1):
        branches.append(
            conv_bn_relu(
                features,
                filters,
                3,
                rate=rate,
                unit=aspp_atrous_unit(index),
                bn_momentum=bn_momentum,
            )
        )
    if image_pooling:
        branches.append(
            _image_pooling(features, filters=filters, bn_momentum=bn_momentum)
        )
    x = layers.Concatenate(name="aspp_concat")(branches)
    return conv_bn_relu(
        x, filters, 1, unit=ASPP_PROJECT, bn_momentum=bn_momentum
    )


def _dropped_aspp(features, *, dropout_rate, **aspp_options):
    """ASPP, then the dropout both heads apply to its projection."""
    x = aspp(features, **aspp_options)
    return layers.Dropout(dropout_rate, name="head_dropout")(x)


def classifier(x, num_classes, *, name):
    """The 1x1 conv to class logits, float32 so that mixed precision never
    hands back half-precision logits."""
    return layers.Conv2D(num_classes, 1, name=name, dtype="float32")(x)


def deeplab_head(
    features,
    *,
    num_classes,
    atrous_rates,
    filters=ASPP_FILTERS,
    image_pooling=True,
    dropout_rate=HEAD_DROPOUT_RATE,
    extra_conv=False,
    bn_momentum,
):
    """ASPP, dropout, [3x3 conv + BN + ReLU,] 1x1 classifier.

    Args:
        extra_conv: bool. Add torchvision's 3x3 conv (`filters`, no bias)
            + BN + ReLU between the ASPP projection and the classifier.
            Defaults to False (the paper and the TF reference).

    Returns:
        float32 KerasTensor (batch, h/os, w/os, num_classes) of logits.
    """
    x = _dropped_aspp(
        features,
        atrous_rates=atrous_rates,
        filters=filters,
        image_pooling=image_pooling,
        dropout_rate=dropout_rate,
        bn_momentum=bn_momentum,
    )
    if extra_conv:
        x = conv_bn_relu(x, filters, 3, unit=HEAD_CONV, bn_momentum=bn_momentum)
    return classifier(x, num_classes, name=HEAD_CLASSIFIER)


def deeplabv3plus_head(
    features,
    low_level,
    *,
    num_classes,
    atrous_rates,
    filters=ASPP_FILTERS,
    image_pooling=True,
    dropout_rate=HEAD_DROPOUT_RATE,
    decoder_convs=2,
    bn_momentum,
):
    """ASPP, dropout, then the DeepLabV3+ decoder and a 1x1 classifier.

    The decoder reduces the stride-4 `low_level` features to 48 channels
    (1x1 conv + BN + ReLU), upsamples the ASPP output bilinearly to their
    exact size (stride 4 and stride 8/16 maps need not divide evenly for odd
    inputs), concatenates both (low-level first) and refines them with
    `decoder_convs` 3x3 convs (`filters`, no bias) + BN + ReLU.

    Args:
        features: KerasTensor of the last backbone stage (stride 8 or 16).
        low_level: KerasTensor of the stride-4 features (ResNet's conv2).
        decoder_convs: int. 3x3 refinement convs: 2 in the paper's best
            decoder (Table 3), 1 in VainF's DeepLabV3Plus-Pytorch.

    Returns:
        float32 KerasTensor (batch, h/4, w/4, num_classes) of logits.
    """
    x = _dropped_aspp(
        features,
        atrous_rates=atrous_rates,
        filters=filters,
        image_pooling=image_pooling,
        dropout_rate=dropout_rate,
        bn_momentum=bn_momentum,
    )
    low_level = conv_bn_relu(
        low_level,
        DECODER_LOW_LEVEL_FILTERS,
        1,
        unit=DECODER_LOW_LEVEL,
        bn_momentum=bn_momentum,
    )
    x = ResizeToMatch(name=f"{DECODER_PREFIX}upsample")([x, low_level])
    # Low-level channels first, as VainF's checkpoints expect (the order is
    # a convention for a fresh model: research/deeplab puts ASPP first).
    x = layers.Concatenate(name=f"{DECODER_PREFIX}concat")([low_level, x])
    for index in range(1, decoder_convs + 1):
        x = conv_bn_relu(
            x,
            filters,
            3,
            unit=decoder_conv_unit(index),
            bn_momentum=bn_momentum,
        )
    return classifier(x, num_classes, name=HEAD_CLASSIFIER)


def fcn_aux_head(features, *, num_classes, filters, bn_momentum):
    """Auxiliary FCN head (3x3 conv, BN, ReLU, dropout 0.1, 1x1) for training.

    Returns:
        float32 KerasTensor (batch, h/os, w/os, num_classes) of logits.
    """
    x = conv_bn_relu(
        features, filters, 3, unit=AUX_HEAD, bn_momentum=bn_momentum
    )
    x = layers.Dropout(HEAD_DROPOUT_RATE, name="aux_dropout")(x)
    return classifier(x, num_classes, name=AUX_CLASSIFIER)
