"""Segmentation heads: ASPP, DeepLabV3 head and the auxiliary FCN head."""

from keras_deeplab.heads.aspp import (
    aspp,
    deeplab_head,
    default_atrous_rates,
    fcn_aux_head,
)

__all__ = ["aspp", "deeplab_head", "default_atrous_rates", "fcn_aux_head"]
