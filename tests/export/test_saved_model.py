"""SavedModel export: TF Serving layout, signatures, parity, bad inputs."""

import io

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_deeplab import DeepLabV3
from keras_deeplab.export.saved_model import export_saved_model
from keras_deeplab.export.serving import decode_mask_pngs
from keras_deeplab.inference.probabilities import confidence_map
from keras_deeplab.inference.saved_model_logits import LOGITS_SIGNATURE
from tests.helpers import TINY, random_images

# Each test exports or trains: the slow lane (docs/development.md).
pytestmark = pytest.mark.slow

SIZES = [(1, 65, 65), (2, 97, 129)]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    keras.utils.set_random_seed(0)
    model = DeepLabV3(3, **TINY)
    out = tmp_path_factory.mktemp("serving")
    path = export_saved_model(
        model,
        out,
        model_name="seg",
        version=3,
        max_pixels=200 * 200,
        probabilities=True,
    )
    return model, path, tf.saved_model.load(str(path))


def test_tf_serving_layout_and_signatures(exported):
    _, path, loaded = exported
    assert path.parts[-2:] == ("seg", "3")
    assert (path / "saved_model.pb").is_file()
    assert set(loaded.signatures) == {
        "serving_default",
        "serve_image_bytes",
        "logits",
    }
    assert not list(path.parent.glob(".*partial*"))


@pytest.mark.parametrize("shape", SIZES)
def test_signatures_match_keras(exported, shape):
    model, _, loaded = exported
    images = random_images(*shape).round()
    expected = np.asarray(model(images))
    served = loaded.signatures["serving_default"](
        images=tf.constant(images.astype(np.uint8))
    )
    assert served["class_ids"].dtype == tf.uint8  # 3 classes fit a byte
    np.testing.assert_array_equal(
        served["class_ids"].numpy(), expected.argmax(-1)
    )
    softmax = tf.nn.softmax(expected).numpy()
    np.testing.assert_allclose(
        served["probabilities"].numpy(), softmax, atol=1e-5
    )
    # round(top probability x 255): 1 off where a value sits on a .5
    confidence = served["confidence"].numpy().astype(int)
    assert served["confidence"].dtype == tf.uint8
    assert np.abs(confidence - confidence_map(softmax)).max() <= 1
    logits = loaded.signatures["logits"](images=tf.constant(images))
    np.testing.assert_allclose(logits["logits"].numpy(), expected, atol=1e-4)


def _encode(image, fmt):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("fmt", "height", "width"), [("PNG", 33, 47), ("JPEG", 64, 64)]
)
def test_image_bytes_signature(exported, fmt, height, width):
    _, _, loaded = exported
    image = random_images(1, height, width)[0].astype(np.uint8)
    data = _encode(image, fmt)
    served = loaded.signatures["serve_image_bytes"](
        image_bytes=tf.constant([data, data])
    )
    assert served["mask_png_bytes"].shape == (2,)
    masks = decode_mask_pngs(served["mask_png_bytes"].numpy())
    assert masks.shape == (2, height, width) and masks.dtype == np.uint8
    decoded = tf.io.decode_image(data, channels=3)[None]
    direct = loaded.signatures["serving_default"](images=decoded)
    np.testing.assert_array_equal(masks[0], direct["class_ids"].numpy()[0])
    scores = decode_mask_pngs(served["confidence_png_bytes"].numpy())
    np.testing.assert_array_equal(scores[0], direct["confidence"].numpy()[0])


def test_probabilities_only_on_request(tmp_path):
    keras.utils.set_random_seed(0)
    model = DeepLabV3(3, **TINY)
    loaded = tf.saved_model.load(str(export_saved_model(model, tmp_path)))
    served = loaded.signatures["serving_default"](
        images=tf.zeros((1, 33, 33, 3), tf.uint8)
    )
    assert set(served) == {"class_ids", "confidence"}


def test_more_than_256_classes_keep_every_class_id(tmp_path):
    """Configs stop at 255 classes (255 is the ignore label), but any Keras
    segmentation model exports: int32 ids and 16-bit PNGs past 256."""
    images = keras.Input((None, None, 3))
    brightness = keras.layers.Conv2D(1, 1, kernel_initializer="ones")(images)
    # The class nearest to the pixel's brightness wins: ids 0 .. 299.
    distance = brightness * (299 / 765) - keras.ops.arange(300.0)
    model = keras.Model(images, -keras.ops.abs(distance))
    loaded = tf.saved_model.load(str(export_saved_model(model, tmp_path)))
    image = random_images(1, 40, 36)[0].astype(np.uint8)
    served = loaded.signatures["serving_default"](
        images=tf.constant(image[None])
    )
    class_ids = served["class_ids"].numpy()
    assert served["class_ids"].dtype == tf.int32 and class_ids.max() > 255
    np.testing.assert_array_equal(
        class_ids, np.asarray(model(image[None].astype("float32"))).argmax(-1)
    )
    pngs = loaded.signatures["serve_image_bytes"](
        image_bytes=tf.constant([_encode(image, "PNG")])
    )["mask_png_bytes"].numpy()
    np.testing.assert_array_equal(decode_mask_pngs(pngs), class_ids)


def test_bad_inputs_are_invalid_argument_errors(exported):
    _, _, loaded = exported
    by_bytes = loaded.signatures["serve_image_bytes"]
    with pytest.raises(tf.errors.InvalidArgumentError):
        by_bytes(image_bytes=tf.constant([b"definitely not an image"]))
    big = np.zeros((300, 300, 3), dtype=np.uint8)
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_pixels"):
        by_bytes(image_bytes=tf.constant([_encode(big, "PNG")]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_pixels"):
        loaded.signatures["serving_default"](images=tf.constant(big[None]))
    # A rank-3 batch used to abort the whole process inside the conv kernel
    # (signature shapes are not enforced at call time, nor by TF Serving).
    wrong_calls = [
        ("serving_default", {"images": tf.zeros((1, 8, 8, 3), tf.float32)}),
        ("serving_default", {"images": tf.zeros((8, 8, 3), tf.uint8)}),
        ("serving_default", {"images": tf.zeros((1, 8, 8, 4), tf.uint8)}),
        ("logits", {"images": tf.zeros((1, 8, 8, 3), tf.uint8)}),
        ("logits", {"images": tf.zeros((8, 8, 3), tf.float32)}),
        ("serve_image_bytes", {"image_bytes": tf.constant(b"not a batch")}),
    ]
    for name, kwargs in wrong_calls:
        with pytest.raises(tf.errors.InvalidArgumentError):
            loaded.signatures[name](**kwargs)


def test_existing_version_is_kept_unless_overwrite(exported, tmp_path):
    model, _, _ = exported
    first = export_saved_model(model, tmp_path, version=1)
    marker = first / "keep.txt"
    marker.write_text("old")
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_saved_model(model, tmp_path, version=1)
    assert marker.read_text() == "old"
    export_saved_model(model, tmp_path, version=1, overwrite=True)
    assert not marker.exists() and (first / "saved_model.pb").is_file()
    with pytest.raises(ValueError, match="version=0 is invalid"):
        export_saved_model(model, tmp_path, version=0)


_WITHOUT_EXPORT_EXTRA = """
import sys
for name in ("onnx", "tf2onnx", "onnxruntime", "openvino"):
    sys.modules[name] = None  # `import onnx` and the others now fail
from keras_deeplab import DeepLabV3
from keras_deeplab.export import export
from tests.helpers import TINY
print(export(DeepLabV3(3, **TINY), "saved_model", sys.argv[1]))
"""


def test_saved_model_export_needs_no_onnx_package(tmp_path):
    """The ONNX and OpenVINO packages come with the `export` extra; a user
    without it still exports for TF Serving."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    completed = subprocess.run(
        [sys.executable, "-c", _WITHOUT_EXPORT_EXTRA, str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(root)},
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert (Path(completed.stdout.split()[-1]) / "saved_model.pb").is_file()


def test_inference_names_the_logits_signature_it_loads(exported):
    """`inference.saved_model_logits` names the signature export writes."""
    _, _, loaded = exported
    assert LOGITS_SIGNATURE in loaded.signatures
