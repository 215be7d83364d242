"""TF Serving request bodies work against the exported signatures."""

import importlib.util
import io
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_deeplab import DeepLabV3
from keras_deeplab.export import serving
from keras_deeplab.export.saved_model import export_saved_model
from tests.helpers import TINY, random_images

EXPORT_DIR = Path(__file__).resolve().parents[2] / "export"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    keras.utils.set_random_seed(0)
    model = DeepLabV3(3, **TINY)
    path = export_saved_model(model, tmp_path_factory.mktemp("srv"))
    return model, tf.saved_model.load(str(path))


def _class_ids(model, images):
    return np.asarray(model(images.astype("float32"))).argmax(-1)


def test_rest_pixel_payload(served):
    model, loaded = served
    images = random_images(2, 33, 41).astype(np.uint8)
    out = serving.serve_rest(loaded, serving.image_payload(images))
    np.testing.assert_array_equal(out["class_ids"], _class_ids(model, images))
    with pytest.raises(ValueError, match="must be uint8"):
        serving.image_payload(images.astype("float32"))


def test_rest_bytes_payload(served):
    _, loaded = served
    buffer = io.BytesIO()
    Image.fromarray(random_images(1, 40, 30)[0].astype(np.uint8)).save(
        buffer, format="PNG"
    )
    payload = serving.bytes_payload([buffer.getvalue()])
    assert serving.serve_rest(loaded, payload)["class_ids"].shape == (1, 40, 30)


def test_grpc_predict_request(served):
    pytest.importorskip("tensorflow_serving.apis.predict_pb2")
    model, loaded = served
    images = random_images(1, 29, 37).astype(np.uint8)
    request = serving.predict_request(images, model_name="deeplab", version=1)
    assert request.model_spec.signature_name == "serving_default"
    assert request.model_spec.version.value == 1
    tensor = tf.make_ndarray(request.inputs["images"])
    assert tensor.dtype == np.uint8 and tensor.shape == (1, 29, 37, 3)
    out = serving.serve_grpc(loaded, request)
    np.testing.assert_array_equal(out["class_ids"], _class_ids(model, images))


@pytest.mark.parametrize("name", ["rest_request", "grpc_request"])
def test_deployer_scripts_use_the_library_builders(name):
    spec = importlib.util.spec_from_file_location(
        name, EXPORT_DIR / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    builder = "image_payload" if name == "rest_request" else "predict_request"
    assert getattr(module, builder) is getattr(serving, builder)
    assert callable(module.send) and callable(module.main)


def test_signature_summary_lists_every_signature(served):
    _, loaded = served
    summary = serving.signature_summary(loaded).splitlines()
    assert len(summary) == len(loaded.signatures)
    default = next(x for x in summary if x.startswith("serving_default:"))
    assert default.startswith("serving_default: images uint8[any rank] -> ")
    assert "class_ids" in default
