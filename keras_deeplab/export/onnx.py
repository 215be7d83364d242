"""ONNX export through tf2onnx, with dynamic batch, height and width.

`tf2onnx.convert.from_keras` is broken on TF >= 2.16, so the model is traced
into a `tf.function` and converted with `tf2onnx.convert.from_function`.
"""

import json
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_deeplab.atomic import atomic_file
from keras_deeplab.derived import export_model
from keras_deeplab.export.runtimes import onnx_session

ONNX_OPSET = 17
INPUT_NAME = "images"
OUTPUT_NAME = "logits"


def export_onnx(model, path, *, opset=ONNX_OPSET, metadata=None):
    """Writes float32 RGB images (B, H, W, 3) -> logits as ONNX, atomically.

    The graph is checked with `onnx.checker` before it is moved into place.
    `metadata` ({key: JSON-able value}) goes into the model's
    `metadata_props` as JSON (e.g. "class_names").

    Returns:
        The path written.
    """
    import onnx
    import tf2onnx

    spec = [tf.TensorSpec([None, None, None, 3], tf.float32, name=INPUT_NAME)]
    model = export_model(model)

    @tf.function(input_signature=spec)
    def serve(images):
        return {OUTPUT_NAME: model(images, training=False)}

    proto, _ = tf2onnx.convert.from_function(
        serve, input_signature=spec, opset=opset
    )
    for key, value in (metadata or {}).items():
        proto.metadata_props.add(key=key, value=json.dumps(value))
    onnx.checker.check_model(proto)
    with atomic_file(path) as temporary:
        onnx.save(proto, str(temporary))
    return path


class _Calibration:
    """onnxruntime's CalibrationDataReader over float32 (h, w, 3) images."""

    def __init__(self, images):
        self._batches = iter(
            [
                {INPUT_NAME: np.asarray(image, np.float32)[None]}
                for image in images
            ]
        )

    def get_next(self):
        return next(self._batches, None)


def quantize_onnx_int8(source, path, *, representative_images):
    """A QDQ int8 copy of an fp32 ONNX export, for onnxruntime on CPU.

    uint8 activations calibrated on `representative_images` (MinMax), int8
    per-channel weights: the combination onnxruntime's x86 kernels run fast
    (int8 activations with int8 weights measured 4x slower here). ORT's
    pre-processing (symbolic shape inference, graph optimisation) runs first,
    as its quantization guide asks. Batch, height and width stay dynamic.

    Returns:
        The path written.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as directory:
        prepared = Path(directory) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared))
        with atomic_file(path) as temporary:
            quantize_static(
                prepared,
                temporary,
                _Calibration(representative_images),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
            )
    return path


def run_onnx(path, images):
    """Logits of an exported model under onnxruntime (CPU)."""
    return onnx_session(path)(images)
