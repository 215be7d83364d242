"""The one model builder of the benchmark harness."""

from keras_deeplab.models import BUILDERS


def build_model(
    *,
    num_classes,
    output_stride,
    size=None,
    backbone="resnet50",
    variant="keras_applications",
    architecture="deeplabv3",
    backbone_width=64,
    head_filters=256,
):
    """DeepLabV3(+) on a fixed `size` x `size` input, or any size if None."""
    shape = (size, size, 3) if size else (None, None, 3)
    return BUILDERS[architecture](
        num_classes,
        backbone=backbone,
        output_stride=output_stride,
        variant=variant,
        input_shape=shape,
        backbone_width=backbone_width,
        head_filters=head_filters,
    )
