"""Lite Reduced ASPP (LR-ASPP), the segmentation head of MobileNetV3.

Howard et al., 2019, "Searching for MobileNetV3", section 6.2 and Figure 10:
the high-level features (stride 16) go through a 1x1 conv + BN + ReLU,
gated by a squeeze-and-excite style branch (global average pool, 1x1 conv,
sigmoid); the result is upsampled to the low-level features (stride 8) and
classified by a 1x1 conv, added to a 1x1 classifier of the low-level
features. The layout is torchvision's `LRASPPHead` (128 channels).
"""

from keras import layers

from keras_deeplab.heads.aspp import (
    HEAD_BN_EPSILON,
    HEAD_CLASSIFIER,
    classifier,
)
from keras_deeplab.layers import ResizeToMatch, bn_name, conv_name

LRASPP_FILTERS = 128
LRASPP_CBR = "lraspp_cbr"  # the 1x1 conv + BN + ReLU of the high features
LRASPP_SCALE = "lraspp_scale"  # the gate's 1x1 conv (no BN, no bias)
LOW_CLASSIFIER = "head_low_classifier"  # HEAD_CLASSIFIER is the high one
LRASPP_LOGITS = "lraspp_logits"  # their sum, float32


def lraspp_head(high, low, *, num_classes, filters=LRASPP_FILTERS, bn_momentum):
    """LR-ASPP on `high` (stride 16) and `low` (stride 8) features.

    Returns:
        float32 KerasTensor (batch, h/8, w/8, num_classes) of logits.
    """
    x = layers.Conv2D(filters, 1, use_bias=False, name=conv_name(LRASPP_CBR))(
        high
    )
    x = layers.BatchNormalization(
        epsilon=HEAD_BN_EPSILON, momentum=bn_momentum, name=bn_name(LRASPP_CBR)
    )(x)
    x = layers.ReLU(name=f"{LRASPP_CBR}_relu")(x)
    gate = layers.GlobalAveragePooling2D(
        keepdims=True, name="lraspp_scale_pool"
    )(high)
    gate = layers.Conv2D(
        filters, 1, use_bias=False, name=conv_name(LRASPP_SCALE)
    )(gate)
    gate = layers.Activation("sigmoid", name="lraspp_scale_sigmoid")(gate)
    x = layers.Multiply(name="lraspp_gated")([x, gate])
    x = ResizeToMatch(name="lraspp_upsample")([x, low])
    high_logits = classifier(x, num_classes, name=HEAD_CLASSIFIER)
    low_logits = classifier(low, num_classes, name=LOW_CLASSIFIER)
    return layers.Add(name=LRASPP_LOGITS, dtype="float32")(
        [low_logits, high_logits]
    )
