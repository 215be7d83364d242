"""The export tests' shared models and their exports, built once a session:
exporting every format of a model takes one to two minutes.

pytest keeps one parameter of a session fixture at a time and may switch
back and forth between modules (it did under xdist, building each export
twice), so each model and its export are kept here by parameter."""

import keras
import pytest

from keras_deeplab.export.export_all import export_all
from keras_deeplab.models.deeplab import build_model
from keras_deeplab.spec import ModelSpec
from tests.helpers import TINY, random_images

SIZE = 65
CLASS_NAMES = ("background", "road sign", "tree")


# One ResNet model (DeepLabV3+ holds DeepLabV3's ASPP and adds the decoder),
# on torchvision's layout as converted checkpoints are (tests/test_convert.py
# exports a full-size converted one to SavedModel and TFLite), and one
# MobileNetV3 model; the demo test exports a trained keras_applications one.
@pytest.fixture(scope="session", params=["deeplabv3plus", "lraspp"])
def model(request):
    if request.param not in _MODELS:
        _MODELS[request.param] = _build(request.param)
    return _MODELS[request.param]


_MODELS, _EXPORTS = {}, {}
# What `export_all` logged for each model, by model name.
EXPORT_LOGS = {}


def _build(architecture):
    keras.utils.set_random_seed(0)
    # MobileNetV3 is small at full width; the ResNets are width-reduced.
    size = (
        {} if architecture == "lraspp" else {**TINY, "variant": "torchvision"}
    )
    spec = ModelSpec(
        architecture=architecture,
        num_classes=3,
        backbone="mobilenet_v3_large"
        if architecture == "lraspp"
        else "resnet50",
        class_names=CLASS_NAMES,
        **size,
    )
    return build_model(spec)


@pytest.fixture(scope="session")
def exported(model, tmp_path_factory):
    """The ResNet model is exported as full-size models are, each step in
    a process of its own (export.steps), the MobileNetV3 one in process:
    every parity test below checks both ways."""
    if model.name not in _EXPORTS:
        out = tmp_path_factory.mktemp("all")
        calibration = list(random_images(8, SIZE, SIZE, seed=1))
        EXPORT_LOGS[model.name] = []
        paths = export_all(
            model,
            out,
            size=SIZE,
            representative_images=calibration,
            separate_processes="resnet" in model.name,
            log=EXPORT_LOGS[model.name].append,
        )
        _EXPORTS[model.name] = out, paths
    return _EXPORTS[model.name]
