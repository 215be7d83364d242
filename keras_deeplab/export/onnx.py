"""ONNX export through tf2onnx, with dynamic batch, height and width.

`tf2onnx.convert.from_keras` is broken on TF >= 2.16, so the model is traced
into a `tf.function` and converted with `tf2onnx.convert.from_function`.
"""

import tensorflow as tf

from keras_deeplab.atomic import atomic_file
from keras_deeplab.export.runtimes import onnx_session
from keras_deeplab.models import inference_model

ONNX_OPSET = 17
INPUT_NAME = "images"
OUTPUT_NAME = "logits"


def export_onnx(model, path, *, opset=ONNX_OPSET):
    """Writes float32 RGB images (B, H, W, 3) -> logits as ONNX, atomically.

    The graph is checked with `onnx.checker` before it is moved into place.

    Returns:
        The path written.
    """
    import onnx
    import tf2onnx

    spec = [tf.TensorSpec([None, None, None, 3], tf.float32, name=INPUT_NAME)]
    model = inference_model(model)

    @tf.function(input_signature=spec)
    def serve(images):
        return {OUTPUT_NAME: model(images, training=False)}

    proto, _ = tf2onnx.convert.from_function(
        serve, input_signature=spec, opset=opset
    )
    onnx.checker.check_model(proto)
    with atomic_file(path) as temporary:
        onnx.save(proto, str(temporary))
    return path


def run_onnx(path, images):
    """Logits of an exported model under onnxruntime (CPU)."""
    return onnx_session(path)(images)
