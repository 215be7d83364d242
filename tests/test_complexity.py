"""MAC counting agrees with the published figures."""

import pytest

from keras_deeplab import DeepLabV3, dilated_resnet
from keras_deeplab.complexity import model_macs

# DOMAIN.md: DeepLabV3-R50 at 513x513 ~166 GMACs at OS8, ~51 at OS16.
# He et al. (2016), table 1: ResNet-50 (v1) at 224x224 is 3.8e9 multiply-adds.


@pytest.mark.parametrize(("output_stride", "gmacs"), [(8, 166.0), (16, 51.0)])
def test_deeplab_gmacs_match_the_paper_scale(output_stride, gmacs):
    model = DeepLabV3(
        21, output_stride=output_stride, input_shape=(513, 513, 3)
    )
    assert model_macs(model) / 1e9 == pytest.approx(gmacs, rel=0.03)


def test_resnet50_gmacs_at_224():
    model = dilated_resnet(50, input_shape=(224, 224, 3))
    assert model_macs(model) / 1e9 == pytest.approx(3.8, rel=0.02)


def test_dynamic_shape_is_refused_with_a_fix():
    with pytest.raises(ValueError, match="build the model with a fixed"):
        model_macs(dilated_resnet(50, width=4))
