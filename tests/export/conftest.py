"""The export tests' shared models and their exports (built once a module
run: exporting every format of a model takes most of a minute)."""

import keras
import pytest

from keras_deeplab.export.artefacts import export_all
from keras_deeplab.models import build_model
from keras_deeplab.spec import ModelSpec
from tests.helpers import TINY, random_images

SIZE = 65
CLASS_NAMES = ("background", "road sign", "tree")


# One ResNet model (DeepLabV3+ holds DeepLabV3's ASPP and adds the decoder)
# and one MobileNetV3 model; tests/test_convert.py exports a converted
# torchvision DeepLabV3 and the demo test a trained one.
@pytest.fixture(scope="session", params=["deeplabv3plus", "lraspp"])
def model(request):
    keras.utils.set_random_seed(0)
    # MobileNetV3 is small at full width; the ResNets are width-reduced.
    size = {} if request.param == "lraspp" else TINY
    spec = ModelSpec(
        architecture=request.param,
        num_classes=3,
        backbone="mobilenet_v3_large"
        if request.param == "lraspp"
        else "resnet50",
        class_names=CLASS_NAMES,
        **size,
    )
    return build_model(spec)


@pytest.fixture(scope="session")
def exported(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("all")
    calibration = list(random_images(8, SIZE, SIZE, seed=1))
    paths = export_all(model, out, size=SIZE, representative_images=calibration)
    return out, paths
