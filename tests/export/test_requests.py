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
from keras_deeplab.data.synthetic import synthetic_sample
from keras_deeplab.export import serving
from keras_deeplab.export.saved_model import export_saved_model
from tests.helpers import TINY, random_images
from tests.http_server import predicting

# Each test exports or trains: the slow lane (docs/development.md).
pytestmark = pytest.mark.slow

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
    model, loaded = served
    image = random_images(1, 40, 30).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image[0]).save(buffer, format="PNG")
    payload = serving.bytes_payload([buffer.getvalue()])
    out = serving.serve_rest(loaded, payload)
    assert set(out) == {"mask_png_bytes", "confidence_png_bytes"}
    np.testing.assert_array_equal(
        serving.decode_mask_pngs(out["mask_png_bytes"]),
        _class_ids(model, image),
    )
    direct = serving.serve_rest(loaded, serving.image_payload(image))
    np.testing.assert_array_equal(
        serving.decode_mask_pngs(out["confidence_png_bytes"]),
        direct["confidence"],
    )


def _street_scene(height, width):
    """A synthetic scene (smooth shapes) blown up to height x width."""
    image, _ = synthetic_sample(0, size=256)
    return np.asarray(Image.fromarray(image).resize((width, height)))


def test_png_response_of_a_big_image_is_small_and_exact(served):
    """1024x2048: the serve_image_bytes REST response stays under 100 KB,
    where class ids as JSON numbers take megabytes."""
    _, loaded = served
    image = _street_scene(1024, 2048)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=95)
    outputs = loaded.signatures["serve_image_bytes"](
        image_bytes=tf.constant([buffer.getvalue()])
    )
    response = serving.rest_response({k: v.numpy() for k, v in outputs.items()})
    # The class map's part of it (the confidence PNG beside it is as large
    # as the model is unsure: noisy for this untrained one).
    mask_part = serving.rest_response(
        {"mask_png_bytes": outputs["mask_png_bytes"].numpy()}
    )
    assert len(mask_part) <= 100_000, len(mask_part)
    masks = serving.decode_mask_pngs(
        serving.decode_response(response, "serve_image_bytes")["mask_png_bytes"]
    )
    decoded = tf.io.decode_jpeg(buffer.getvalue(), channels=3)[None]
    class_ids = loaded.signatures["serving_default"](images=decoded)
    np.testing.assert_array_equal(masks, class_ids["class_ids"].numpy())
    json_ids = serving.rest_response(
        {"class_ids": class_ids["class_ids"].numpy()}
    )
    assert len(json_ids) > 20 * len(mask_part)  # what the PNG saves


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


def _deployer_script(name):
    spec = importlib.util.spec_from_file_location(
        name, EXPORT_DIR / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["rest_request", "grpc_request"])
def test_deployer_scripts_use_the_library_builders(name):
    module = _deployer_script(name)
    builder = "image_payload" if name == "rest_request" else "predict_request"
    assert getattr(module, builder) is getattr(serving, builder)
    assert callable(module.send) and callable(module.main)


@pytest.mark.parametrize("as_bytes", [False, True])
def test_rest_client_against_a_tf_serving_style_server(
    served, tmp_path, as_bytes
):
    """export/rest_request.py over real HTTP: the server answers as TF
    Serving does (`serving.answer_rest`); the client writes class maps."""
    model, loaded = served
    image = random_images(1, 37, 45).astype(np.uint8)
    photo = tmp_path / "photo.png"
    Image.fromarray(image[0]).save(photo)
    client = _deployer_script("rest_request")
    with predicting(lambda body: serving.answer_rest(loaded, body)) as url:
        client.main(
            [str(photo), "--url", f"{url}/v1/models/deeplab:predict"]
            + ["--out", str(tmp_path / "masks")]
            + (["--bytes"] if as_bytes else [])
        )
    mask = np.asarray(Image.open(tmp_path / "masks" / "photo_mask.png"))
    np.testing.assert_array_equal(mask, _class_ids(model, image)[0])


def test_signature_summary_lists_every_signature(served):
    _, loaded = served
    summary = serving.signature_summary(loaded).splitlines()
    assert len(summary) == len(loaded.signatures)
    default = next(x for x in summary if x.startswith("serving_default:"))
    assert default.startswith("serving_default: images uint8[any rank] -> ")
    assert "class_ids" in default
