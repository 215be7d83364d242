"""TF Serving request and response bodies, and running them the way TF
Serving does.

Builders for the REST JSON body (`image_payload`, `bytes_payload`) and the
gRPC `PredictRequest` (`predict_request`, needs `tensorflow-serving-api`);
`rest_response` writes a signature's outputs as TF Serving's REST API does
and `decode_response` / `decode_mask_pngs` read them back. `serve_rest` and
`serve_grpc` decode a body or request exactly as the server would, call the
SavedModel signature in-process and (REST) go through the response JSON, so
requests and responses are checked (and notebooks run) without a server.
"""

import base64
import io
import json

import numpy as np
import tensorflow as tf

IMAGES_INPUT = "images"  # serving_default input, uint8 (B, H, W, 3)
BYTES_INPUT = "image_bytes"  # serve_image_bytes input, encoded files
CLASS_IDS_OUTPUT = "class_ids"
# uint8 top-class probability x 255 (uncalibrated), beside the class ids.
CONFIDENCE_OUTPUT = "confidence"
PROBABILITIES_OUTPUT = "probabilities"
MASK_PNG_OUTPUT = "mask_png_bytes"
CONFIDENCE_PNG_OUTPUT = "confidence_png_bytes"
LOGITS_OUTPUT = "logits"
# A one-output signature's REST response carries no output name.
_ONLY_OUTPUT = {"logits": LOGITS_OUTPUT}
# TF Serving base64-encodes (as {"b64": ...}) outputs named "*_bytes".
_BINARY_SUFFIX = "_bytes"


def image_payload(images: np.ndarray) -> dict:
    """REST body for `serving_default`: uint8 images (B, H, W, 3).

    Raises:
        ValueError: if `images` is not uint8 of shape (batch, h, w, 3).
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(
            f"images must be uint8 (batch, height, width, 3); got "
            f"{images.dtype} {images.shape}."
        )
    return {
        "signature_name": "serving_default",
        "inputs": {IMAGES_INPUT: images.tolist()},
    }


def bytes_payload(encoded: list) -> dict:
    """REST body for `serve_image_bytes`: JPEG/PNG files, base64 encoded."""
    return {
        "signature_name": "serve_image_bytes",
        "inputs": {
            BYTES_INPUT: [
                {"b64": base64.b64encode(data).decode("ascii")}
                for data in encoded
            ]
        },
    }


def predict_request(
    images: np.ndarray,
    *,
    model_name="deeplab",
    signature="serving_default",
    version=None,
):
    """A gRPC PredictRequest carrying uint8 images (B, H, W, 3)."""
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    request.inputs[IMAGES_INPUT].CopyFrom(
        tf.make_tensor_proto(np.asarray(images, dtype=np.uint8))
    )
    return request


def rest_response(outputs: dict) -> str:
    """The JSON TF Serving's REST API answers a columnar ("inputs") request
    with: {"outputs": {name: value}}, or {"outputs": value} for a single
    output; outputs named "*_bytes" as {"b64": ...} strings."""

    def value(name, array):
        if name.endswith(_BINARY_SUFFIX):
            return [
                {"b64": base64.b64encode(item).decode("ascii")}
                for item in np.asarray(array).ravel()
            ]
        return np.asarray(array).tolist()

    named = {name: value(name, array) for name, array in outputs.items()}
    only = next(iter(named.values())) if len(named) == 1 else named
    return json.dumps({"outputs": only}, separators=(",", ":"))


def decode_response(response, signature="serving_default") -> dict:
    """{output name: numpy array, or list of bytes for "*_bytes"} from a
    REST response (a JSON str or the parsed dict) of `signature`."""
    if isinstance(response, (str, bytes)):
        response = json.loads(response)
    outputs = response["outputs"]
    if not isinstance(outputs, dict):
        outputs = {_ONLY_OUTPUT[signature]: outputs}
    return {
        name: (
            [base64.b64decode(item["b64"]) for item in value]
            if name.endswith(_BINARY_SUFFIX)
            else np.asarray(value)
        )
        for name, value in outputs.items()
    }


def decode_mask_pngs(pngs) -> np.ndarray:
    """Class ids (B, H, W) from `mask_png_bytes` (PNG files of one size)."""
    from PIL import Image

    return np.stack([np.asarray(Image.open(io.BytesIO(p))) for p in pngs])


def answer_rest(loaded, body: str) -> str:
    """What TF Serving answers a REST :predict body (JSON text) with: the
    request decoded as the server decodes it, the signature called, the
    outputs written as `rest_response` (JSON text)."""
    body = json.loads(body)
    signature = loaded.signatures[body["signature_name"]]
    inputs = {}
    for name, value in body["inputs"].items():
        if isinstance(value[0], dict):  # {"b64": ...} marks binary data
            inputs[name] = tf.constant(
                [base64.b64decode(item["b64"]) for item in value]
            )
        else:
            spec = signature.structured_input_signature[1][name]
            inputs[name] = tf.constant(np.asarray(value), dtype=spec.dtype)
    return rest_response(
        {name: t.numpy() for name, t in signature(**inputs).items()}
    )


def serve_rest(loaded, payload: dict) -> dict:
    """Runs a REST body on a loaded SavedModel as TF Serving does, through
    the request and response JSON (`answer_rest`, `decode_response`).

    Args:
        loaded: the result of `tf.saved_model.load(version_dir)`.
        payload: dict from `image_payload` or `bytes_payload`.

    Returns:
        {output name: numpy array (or list of bytes)}, as in the response.
    """
    response = answer_rest(loaded, json.dumps(payload))
    return decode_response(response, payload["signature_name"])


def serve_grpc(loaded, request) -> dict:
    """Runs a PredictRequest on a loaded SavedModel as TF Serving does."""
    signature = loaded.signatures[request.model_spec.signature_name]
    inputs = {
        name: tf.constant(tf.make_ndarray(proto))
        for name, proto in request.inputs.items()
    }
    return {name: t.numpy() for name, t in signature(**inputs).items()}


def _spec_text(spec):
    if spec.shape.rank is None:  # rank is checked inside the graph
        return f"{spec.dtype.name}[any rank]"
    shape = "x".join("?" if d is None else str(d) for d in spec.shape)
    return f"{spec.dtype.name}[{shape}]"


def signature_summary(loaded) -> str:
    """One line per signature of a loaded SavedModel: inputs -> outputs."""
    lines = []
    for name, function in loaded.signatures.items():
        inputs = function.structured_input_signature[1]
        outputs = function.structured_outputs
        lines.append(
            f"{name}: "
            + ", ".join(f"{k} {_spec_text(v)}" for k, v in inputs.items())
            + " -> "
            + ", ".join(f"{k} {_spec_text(v)}" for k, v in outputs.items())
        )
    return "\n".join(sorted(lines))
