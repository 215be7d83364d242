"""The request formats in export/ work against the exported signatures."""

import base64
import importlib.util
import io
import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_deeplab import DeepLabV3
from keras_deeplab.export.saved_model import export_saved_model
from tests.helpers import TINY, random_images

EXPORT_DIR = Path(__file__).resolve().parents[2] / "export"


def _load(name):
    spec = importlib.util.spec_from_file_location(
        name, EXPORT_DIR / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    keras.utils.set_random_seed(0)
    model = DeepLabV3(3, **TINY)
    path = export_saved_model(model, tmp_path_factory.mktemp("srv"))
    return model, tf.saved_model.load(str(path))


def _as_tf_serving(payload, loaded):
    """Decodes a REST JSON body the way TF Serving does and runs it."""
    body = json.loads(json.dumps(payload))  # exactly what goes on the wire
    signature = loaded.signatures[body["signature_name"]]
    inputs = {}
    for name, value in body["inputs"].items():
        if isinstance(value[0], dict):  # {"b64": ...} means bytes
            inputs[name] = tf.constant(
                [base64.b64decode(v["b64"]) for v in value]
            )
        else:
            spec = signature.structured_input_signature[1][name]
            inputs[name] = tf.constant(np.asarray(value), dtype=spec.dtype)
    return signature(**inputs)


def test_rest_pixel_payload(served):
    model, loaded = served
    rest = _load("rest_request")
    images = random_images(2, 33, 41).astype(np.uint8)
    out = _as_tf_serving(rest.image_payload(images), loaded)
    np.testing.assert_array_equal(
        out["class_ids"].numpy(),
        np.asarray(model(images.astype("float32"))).argmax(-1),
    )
    with pytest.raises(ValueError, match="must be uint8"):
        rest.image_payload(images.astype("float32"))


def test_rest_bytes_payload(served):
    _, loaded = served
    rest = _load("rest_request")
    buffer = io.BytesIO()
    Image.fromarray(random_images(1, 40, 30)[0].astype(np.uint8)).save(
        buffer, format="PNG"
    )
    out = _as_tf_serving(rest.bytes_payload([buffer.getvalue()]), loaded)
    assert out["class_ids"].shape == (1, 40, 30)


def test_grpc_predict_request(served):
    pytest.importorskip("tensorflow_serving.apis.predict_pb2")
    model, loaded = served
    grpc_request = _load("grpc_request")
    images = random_images(1, 29, 37).astype(np.uint8)
    request = grpc_request.predict_request(
        images, model_name="deeplab", version=1
    )
    assert request.model_spec.signature_name == "serving_default"
    assert request.model_spec.version.value == 1
    # TF Serving turns each TensorProto into a tensor for the signature.
    tensor = tf.make_ndarray(request.inputs["images"])
    assert tensor.dtype == np.uint8 and tensor.shape == (1, 29, 37, 3)
    out = loaded.signatures[request.model_spec.signature_name](
        images=tf.constant(tensor)
    )
    np.testing.assert_array_equal(
        out["class_ids"].numpy(),
        np.asarray(model(images.astype("float32"))).argmax(-1),
    )
