"""ONNX export through tf2onnx, with dynamic batch, height and width.

`tf2onnx.convert.from_keras` is broken on TF >= 2.16, so the model is traced
into a `tf.function`, frozen, and converted with tf2onnx's own steps
(`_function_to_onnx`).
"""

import json
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_deeplab.atomic import atomic_file
from keras_deeplab.derived import export_model
from keras_deeplab.export.runtimes import onnx_session
from keras_deeplab.layers import dilated_depthwise_form
from keras_deeplab.memory import release_freed_memory

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

    spec = [tf.TensorSpec([None, None, None, 3], tf.float32, name=INPUT_NAME)]
    model = export_model(model)

    @tf.function(input_signature=spec)
    def serve(images):
        return {OUTPUT_NAME: model(images, training=False)}

    # ONNX runtimes have their own dilated depthwise kernel: keep it one op.
    with dilated_depthwise_form("native"):
        function = serve.get_concrete_function()
    proto = _function_to_onnx(function, opset=opset)
    for key, value in (metadata or {}).items():
        proto.metadata_props.add(key=key, value=json.dumps(value))
    onnx.checker.check_model(proto)
    with atomic_file(path) as temporary:
        onnx.save(proto, str(temporary))
    return path


def _function_to_onnx(function, *, opset):
    """`tf2onnx.convert.from_function`'s steps, with garbage collected
    before each of tf2onnx's graph optimizers.

    tf2onnx deep-copies the whole ONNX graph, every weight included, before
    each optimizer (about 24 passes) and drops the previous copy as cyclic
    garbage, which Python's collector reaches only every few passes: a
    ResNet-50 at 513 px peaked at 11.4 GB. Collecting before each pass
    holds the passes to two or three copies (4.0 GB in all, grappler's
    constant folding now the peak); see docs/export.md.
    """
    import tf2onnx

    inputs = [t.name for t in function.inputs if t.dtype != tf.resource]
    outputs = [t.name for t in function.outputs if t.dtype != tf.resource]
    # ONNX names: the signature's input name and the output dict's keys.
    (image_input,) = inputs
    renames = {image_input: INPUT_NAME}
    for key, tensor in function.structured_outputs.items():
        renames[tensor.name] = key
    with tf.device("/cpu:0"):
        frozen = tf2onnx.tf_loader.from_function(function, inputs, outputs)
        with tf.Graph().as_default() as graph:
            tf.import_graph_def(frozen, name="")
            del frozen
            onnx_graph = tf2onnx.tfonnx.process_tf_graph(
                graph,
                opset=opset,
                input_names=inputs,
                output_names=outputs,
                tensors_to_rename=renames,
            )
    optimizers = {
        name: _collecting_garbage_first(factory)
        for name, factory in tf2onnx.optimizer._get_optimizers().items()
    }
    onnx_graph = tf2onnx.optimizer.optimize_graph(
        onnx_graph, optimizers=optimizers
    )
    return onnx_graph.make_model(f"converted from {function.name}")


def _collecting_garbage_first(factory):
    def collect_then_make():
        release_freed_memory()
        return factory()

    return collect_then_make


class _Calibration:
    """onnxruntime's CalibrationDataReader over float32 (h, w, 3) images.

    `set_range` lets `quantize_static` calibrate one image at a time
    (`CalibStridedMinMax`), reducing its activations to their min and max
    before the next image runs: the same ranges, where keeping every
    image's activations cost 175 MB per 513 px image for a ResNet-50.
    """

    def __init__(self, images):
        self._images = list(images)
        self.set_range(0, len(self._images))

    def __len__(self):
        return len(self._images)

    def set_range(self, start_index, end_index):
        self._pending = iter(self._images[start_index:end_index])

    def get_next(self):
        image = next(self._pending, None)
        if image is None:
            return None
        return {INPUT_NAME: np.asarray(image, np.float32)[None]}


def quantize_onnx_int8(source, path, *, representative_images):
    """A QDQ int8 copy of an fp32 ONNX export, for onnxruntime on CPU.

    uint8 activations calibrated on `representative_images` (MinMax), int8
    per-channel weights in a 7-bit range: the combination onnxruntime's x86
    kernels run fast (int8 activations with int8 weights measured 4x slower
    here) and without overflow on x86 CPUs with or without VNNI. ORT's
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
                # 7-bit weights: on x86 CPUs without VNNI (AVX2 only)
                # onnxruntime's u8s8 kernels saturate 16-bit sums of
                # 8-bit products; full-range weights there gave 88.7%
                # argmax agreement on MobileNetV3 LR-ASPP, 7-bit 98.0%.
                reduce_range=True,
                extra_options={"CalibStridedMinMax": 1},
            )
    return path


def run_onnx(path, images):
    """Logits of an exported model under onnxruntime (CPU)."""
    return onnx_session(path)(images)
