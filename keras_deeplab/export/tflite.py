"""TFLite (LiteRT) conversion: fp32, fp16, dynamic-range and full int8.

Channels-last. The converted model takes RGB in [0, 255] (the Keras model's
preprocessing is inside it) and returns float32 logits, or uint8 class ids
when `argmax=True` so a phone receives the class map directly.
"""

import tempfile

import keras
import numpy as np
import tensorflow as tf

from keras_deeplab.export.layout import IO_TYPES, TFLITE_PRECISIONS
from keras_deeplab.export.runtimes import tflite_session
from keras_deeplab.export.tflite_ranges import clipped_activation_ranges
from keras_deeplab.layers import dilated_depthwise_form
from keras_deeplab.models.derived import export_model
from keras_deeplab.utils.errors import UserInputError
from keras_deeplab.utils.image_size import height_width
from keras_deeplab.utils.memory import release_freed_memory

_SIGNATURE = "serve"


def write_converter_input(model, directory, *, size, argmax):
    """A one-signature SavedModel the converter reads with frozen weights
    (`convert_saved_model` converts it).

    Converting straight from a concrete function keeps Keras 3 variables as
    uninitialised TFLite resource variables (NaN outputs); a SavedModel
    written by ExportArchive is frozen correctly by the converter.
    """
    shape = [1, *height_width(size), 3] if size else [1, None, None, 3]
    model = export_model(model)

    def serve(images):
        logits = model(images, training=False)
        if argmax:
            return {"class_ids": tf.cast(tf.argmax(logits, -1), tf.uint8)}
        return {"logits": logits}

    # TFLite has its own dilated depthwise kernel: keep it one op.
    with dilated_depthwise_form("native"):
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(
            _SIGNATURE,
            serve,
            input_signature=[tf.TensorSpec(shape, tf.float32, name="images")],
        )
        archive.write_out(str(directory), verbose=False)


def convert_tflite(
    model,
    *,
    size=None,
    quantize="fp32",
    representative_images=None,
    io_type="float32",
    argmax=False,
) -> bytes:
    """Converts a DeepLabV3 model to a TFLite flatbuffer.

    Args:
        model: DeepLabV3 keras.Model with preprocessing included.
        size: int, (height, width) or None. Fixed input size (e.g. 513 or
            (512, 1024)); None keeps height and width dynamic (call
            `resize_tensor_input` before `allocate_tensors`).
        quantize: "fp32", "fp16" (fp16 weights), "drq_int8" (dynamic range:
            int8 weights, float activations) or "int8" (full integer; needs
            `representative_images`).
        representative_images: iterable of float32 (h, w, 3) RGB images from
            the training pipeline, used to calibrate int8 activations.
        io_type: "float32", "uint8" or "int8" input type for int8 models.
        argmax: bool. Output uint8 class ids (1, h, w) instead of logits.

    Returns:
        The flatbuffer bytes.

    Raises:
        UserInputError: for an unknown option or int8 without images.
    """
    return convert_tflite_variants(
        model,
        size=size,
        quantizations=(quantize,),
        representative_images=representative_images,
        io_type=io_type,
        argmax=argmax,
    )[quantize]


def _check_options(quantizations, *, io_type, representative_images):
    for quantize in quantizations:
        if quantize not in TFLITE_PRECISIONS:
            raise UserInputError(
                f"quantize={quantize!r} is not supported; expected one of "
                f"{TFLITE_PRECISIONS}."
            )
    if io_type not in IO_TYPES or (
        io_type != "float32" and "int8" not in quantizations
    ):
        raise UserInputError(
            f"io_type={io_type!r} is invalid with quantize="
            f"{', '.join(quantizations)!r}; integer input needs "
            "quantize='int8'."
        )
    if "int8" in quantizations and representative_images is None:
        raise UserInputError(
            "quantize='int8' needs representative images to calibrate "
            "activations; pass the training data (export --config CONFIG)."
        )


def convert_tflite_variants(
    model,
    *,
    size=None,
    quantizations=TFLITE_PRECISIONS,
    representative_images=None,
    io_type="float32",
    argmax=False,
) -> dict:
    """`convert_tflite` for several quantizations of one input size.

    The frozen SavedModel the converter reads is written once and converted
    once per quantization. `io_type` applies to int8 only.

    Returns:
        {quantize: flatbuffer bytes}, in the order of `quantizations`.
    """
    _check_options(
        quantizations,
        io_type=io_type,
        representative_images=representative_images,
    )
    flatbuffers = {}
    with tempfile.TemporaryDirectory() as directory:
        write_converter_input(model, directory, size=size, argmax=argmax)
        for quantize in quantizations:
            release_freed_memory()  # the previous conversion's peak
            flatbuffers[quantize] = convert_saved_model(
                directory,
                quantize=quantize,
                io_type=io_type if quantize == "int8" else "float32",
                representative_images=representative_images,
            )
    return flatbuffers


def convert_saved_model(
    directory, *, quantize, io_type="float32", representative_images=None
) -> bytes:
    """One TFLite flatbuffer of what `write_converter_input` wrote."""
    converter = tf.lite.TFLiteConverter.from_saved_model(
        str(directory), signature_keys=[_SIGNATURE]
    )
    _configure(
        converter,
        quantize=quantize,
        io_type=io_type,
        representative_images=representative_images,
    )
    if quantize != "int8":
        return converter.convert()
    with clipped_activation_ranges():
        return converter.convert()


def _configure(converter, *, quantize, io_type, representative_images):
    if quantize != "fp32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    if quantize == "int8":
        images = [
            np.asarray(image, np.float32) for image in representative_images
        ]

        def representative_dataset():
            for image in images:
                yield [image[None]]

        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8
        ]
        converter.inference_input_type = tf.as_dtype(io_type)


def run_tflite(model_bytes, images, *, num_threads=None):
    """Runs a converted model on (batch, h, w, 3) images one at a time.

    Returns:
        numpy array (batch, h, w[, classes]) of the model's output.
    """
    return tflite_session(model_bytes, num_threads=num_threads)(images)
