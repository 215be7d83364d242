"""Reusable sessions for exported models: SavedModel, ONNX Runtime, LiteRT,
OpenVINO.

Nothing here imports TensorFlow at module level, so a deployment-side
process (or a benchmark measuring its memory) loads only the runtime it uses.
"""

from pathlib import Path

import numpy as np

from keras_deeplab.export.layout import ANY_SIZE
from keras_deeplab.utils.errors import UserInputError, first_line
from keras_deeplab.utils.image_size import size_text


def onnx_session(path, *, num_threads=None):
    """Returns fn(images float32 (b, h, w, 3)) -> logits of an ONNX model.

    Args:
        path: str or Path. The .onnx file.
        num_threads: int or None. Intra-op threads; None lets ONNX Runtime
            use one per physical core.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if num_threads:
        options.intra_op_num_threads = num_threads
    session = onnxruntime.InferenceSession(
        str(path), options, providers=["CPUExecutionProvider"]
    )
    input_name = session.get_inputs()[0].name
    output_name = session.get_outputs()[0].name

    def run(images):
        feed = {input_name: np.asarray(images, np.float32)}
        return session.run([output_name], feed)[0]

    return run


def _quantize_input(value, detail):
    """Float images to the int8/uint8 input of a full-integer model."""
    if detail["dtype"] == np.float32:
        return value
    scale, zero_point = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(value / scale + zero_point), info.min, info.max)


def tflite_session(model_bytes, *, num_threads=None):
    """Returns fn(images float32 (b, h, w, 3)) -> outputs of a TFLite model.

    Uses `ai_edge_litert.interpreter.Interpreter` (tf.lite.Interpreter is
    deprecated). Images run one at a time, as on a phone; tensors are
    re-allocated only when the image size changes. Integer inputs are
    quantized with the model's own scale.
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(
        model_content=model_bytes, num_threads=num_threads
    )
    model_input = interpreter.get_input_details()[0]
    input_index = model_input["index"]
    # -1 where the model takes any size; a fixed-size model cannot be
    # resized (XNNPack fails with "failed to reshape").
    fixed_size = [int(side) for side in model_input["shape_signature"][1:3]]
    allocated_shape = None

    def run(images):
        nonlocal allocated_shape
        images = np.asarray(images, np.float32)
        # A dynamic-size LiteRT model runs a rank-3 or 4-channel input
        # without complaint and returns garbage: refuse it here.
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(
                f"images must be (batch, height, width, 3) RGB; got shape "
                f"{images.shape}."
            )
        if -1 not in fixed_size and list(images.shape[1:3]) != fixed_size:
            raise UserInputError(
                f"this TFLite model takes {fixed_size[0]}x{fixed_size[1]} "
                f"images (exported with --size {size_text(fixed_size)}); got "
                f"{images.shape[1]}x{images.shape[2]}. Resize the images, "
                f"or use the any-size model (*_{ANY_SIZE}.tflite)."
            )
        outputs = []
        for image in images:
            shape = [1, *image.shape]
            if shape != allocated_shape:
                interpreter.resize_tensor_input(input_index, shape)
                interpreter.allocate_tensors()
                allocated_shape = shape
            detail = interpreter.get_input_details()[0]
            value = _quantize_input(image[None], detail)
            interpreter.set_tensor(input_index, value.astype(detail["dtype"]))
            interpreter.invoke()
            output = interpreter.get_output_details()[0]
            outputs.append(interpreter.get_tensor(output["index"])[0])
        return np.stack(outputs)

    return run


def openvino_session(path, *, num_threads=None, precision="f32"):
    """Returns fn(images float32 (b, h, w, 3)) -> logits of an OpenVINO IR.

    Args:
        path: str or Path. The .xml file (its .bin beside it).
        num_threads: int or None. Inference threads; None lets OpenVINO
            choose.
        precision: str. OpenVINO's CPU inference precision hint: "f32"
            for parity; on CPUs with AVX-512 BF16 or AMX OpenVINO's own
            default is "bf16" (faster, about 1e-2 of the logit range).
    """
    import openvino

    config = {"INFERENCE_PRECISION_HINT": precision}
    if num_threads:
        config["INFERENCE_NUM_THREADS"] = num_threads
    compiled = openvino.Core().compile_model(str(path), "CPU", config)
    request = compiled.create_infer_request()

    def run(images):
        request.infer([np.asarray(images, np.float32)])
        return request.get_output_tensor(0).data.copy()

    return run


def saved_model_session(path):
    """Returns fn(images float32) -> logits via the `logits` signature."""
    import tensorflow as tf

    signature = tf.saved_model.load(str(path)).signatures["logits"]
    return lambda images: signature(images=tf.constant(images, tf.float32))[
        "logits"
    ].numpy()


def artefact_runner(path, *, num_threads=None):
    """fn(images float32 (b, h, w, 3)) -> outputs for one exported model.

    Args:
        path: a .tflite, .onnx or OpenVINO .xml file, or a SavedModel
            version folder.
        num_threads: int or None. Threads for ONNX Runtime, LiteRT and
            OpenVINO; a SavedModel uses TensorFlow's process-wide threading
            settings.
    """
    path = Path(path)
    try:
        if path.suffix == ".tflite":
            return tflite_session(path.read_bytes(), num_threads=num_threads)
        if path.suffix == ".onnx":
            return onnx_session(path, num_threads=num_threads)
        if path.suffix == ".xml":
            return openvino_session(path, num_threads=num_threads)
        return saved_model_session(path)
    except _load_errors(path.suffix) as err:
        raise UserInputError(
            f"{str(path)!r} cannot be loaded by its runtime ({first_line(err)}"
            "); expected a file written by keras-deeplab export: re-export it."
        ) from err


def _load_errors(suffix) -> tuple:
    """What each runtime raises for a file that is not a model (LiteRT:
    "not a valid Flatbuffer"; ONNX Runtime: its own exception classes;
    OpenVINO: RuntimeError; TensorFlow: OSError, or a missing signature)."""
    if suffix == ".onnx":
        from onnxruntime.capi import onnxruntime_pybind11_state as state

        return (state.InvalidProtobuf, state.InvalidGraph, state.Fail)
    if suffix == ".xml":
        return (RuntimeError,)
    if suffix == ".tflite":
        return (ValueError,)
    return (OSError, ValueError, KeyError)
