"""The export formats, their options and the one artefact layout.

    <out>/serving/<model_name>/<version>/         SavedModel (TF Serving)
    <out>/tflite/deeplab_<precision>_<size|HxW|anysize>[_<io>][_argmax].tflite
    <out>/tflite/labels.txt                        class names, one a line
    <out>/onnx/deeplab.onnx, deeplab_int8.onnx     (QDQ, for onnxruntime)
    <out>/openvino/deeplab.xml, deeplab.bin        OpenVINO IR (fp32)

TFLite precisions are named for what they hold: `fp32`, `fp16` (fp16
weights), `drq_int8` (dynamic-range: int8 weights, float activations) and
`int8` (full integer); `anysize` files take any height and width. Pure
Python, so the CLI and the docs tests read it without TensorFlow.
"""

from pathlib import Path

from keras_deeplab.utils.image_size import size_text

FORMATS = ("saved_model", "tflite", "onnx", "openvino")
TFLITE_PRECISIONS = ("fp32", "fp16", "drq_int8", "int8")
# Names of releases <= 0.2, still accepted on the command line.
LEGACY_QUANTIZE = {"none": "fp32", "dynamic": "drq_int8"}
IO_TYPES = ("float32", "uint8", "int8")
ONNX_PRECISIONS = ("fp32", "int8")

SERVING_DIR = "serving"
TFLITE_DIR = "tflite"
LABELS_FILE = "labels.txt"
ONNX_FILE = Path("onnx") / "deeplab.onnx"
ONNX_INT8_FILE = ONNX_FILE.with_name("deeplab_int8.onnx")
OPENVINO_FILE = Path("openvino") / "deeplab.xml"  # + deeplab.bin beside it
ANY_SIZE = "anysize"
# ONNX and OpenVINO tensor names.
ONNX_INPUT = "images"
ONNX_OUTPUT = "logits"
_TFLITE_PREFIX = "deeplab"


def size_name(size) -> str:
    """A TFLite input size as file names show it: "513", "512x1024" or
    "anysize" for None."""
    return size_text(size) if size else ANY_SIZE


def tflite_name(
    *, precision="fp32", size=None, io_type="float32", argmax=False
) -> str:
    """File name of a TFLite variant, e.g. deeplab_int8_513_uint8.tflite
    or deeplab_fp32_512x1024.tflite (`size`: a side or (height, width))."""
    parts = [_TFLITE_PREFIX, precision, size_name(size)]
    if io_type != "float32":
        parts.append(io_type)
    if argmax:
        parts.append("argmax")
    return "_".join(parts) + ".tflite"


def saved_model_dir(out_dir, *, model_name="deeplab", version=1) -> Path:
    """Where TF Serving finds one version: <out>/serving/<name>/<version>."""
    return Path(out_dir) / SERVING_DIR / model_name / str(version)


def serving_model_base(out_dir, *, model_name="deeplab") -> Path:
    """The folder to mount as TF Serving's `/models/<model_name>`."""
    return Path(out_dir) / SERVING_DIR / model_name
