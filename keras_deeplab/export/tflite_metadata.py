"""TFLite model metadata for MediaPipe's ImageSegmenter (and LiteRT tools).

A `.tflite` file carries metadata as a flatbuffer of the TFLite metadata
schema (mediapipe/tasks/metadata/metadata_schema.fbs, file identifier
"M001") in a model buffer named "TFLITE_METADATA", and its associated files
(the class names) as a zip archive appended to the model. MediaPipe reads
both: the input's normalisation, the output's labels and, in the
"SEGMENTER_METADATA" custom metadata, the activation of the scores.

Why our own writer: MediaPipe's `metadata_writers` do not import from the
PyPI wheels (1.2.3: "No module named 'mediapipe.tasks.cc'"), and
tflite-support, the older writer, needs protobuf < 4, which TensorFlow 2.21
does not install beside. The tables written here are the ten the schema
needs for an image segmenter, built with the `flatbuffers` package that
TensorFlow already depends on; the tests read them back with MediaPipe's
generated schema code and run the files in MediaPipe's ImageSegmenter.
"""

import io
import zipfile

import flatbuffers
from tensorflow.lite.python import schema_py_generated as tflite_schema

METADATA_BUFFER = "TFLITE_METADATA"  # the model metadata entry MediaPipe reads
_METADATA_IDENTIFIER = b"M001"
_SEGMENTER_IDENTIFIER = b"V001"
_SEGMENTER_METADATA = "SEGMENTER_METADATA"
_MODEL_IDENTIFIER = b"TFL3"
# Schema 1.5.0 added SubGraphMetadata.custom_metadata, the newest field used.
_MIN_PARSER_VERSION = "1.5.0"
# Enum values of metadata_schema.fbs and image_segmenter_metadata_schema.fbs.
_RGB, _GRAYSCALE = 1, 2
_IMAGE_PROPERTIES = 2  # ContentProperties
_NORMALIZATION_OPTIONS = 1  # ProcessUnitOptions
_TENSOR_AXIS_LABELS = 2  # AssociatedFileType
_SOFTMAX = 2  # ImageSegmenterOptions.activation


class _Writer:
    """Tables of the metadata schema, each field in its schema slot."""

    def __init__(self):
        self.builder = flatbuffers.Builder(1024)

    def table(self, fields):
        """fields: [(slot, kind, value)], kind "offset", "int8" or "uint8"
        (value None: field absent)."""
        b = self.builder
        b.StartObject(max(slot for slot, _, _ in fields) + 1)
        for slot, kind, value in fields:
            if value is None:
                continue
            if kind == "offset":
                b.PrependUOffsetTRelativeSlot(slot, value, 0)
            elif kind == "int8":
                b.PrependInt8Slot(slot, value, 0)
            else:
                b.PrependUint8Slot(slot, value, 0)
        return b.EndObject()

    def string(self, text):
        return self.builder.CreateString(text)

    def offsets(self, items):
        b = self.builder
        b.StartVector(4, len(items), 4)
        for item in reversed(items):
            b.PrependUOffsetTRelative(item)
        return b.EndVector()

    def floats(self, values):
        b = self.builder
        b.StartVector(4, len(values), 4)
        for value in reversed(values):
            b.PrependFloat32(value)
        return b.EndVector()

    def image_content(self, color_space):
        properties = self.table([(0, "int8", color_space)])
        return self.table(
            [
                (0, "uint8", _IMAGE_PROPERTIES),
                (1, "offset", properties),
            ]
        )


def _segmenter_options(activation):
    builder = flatbuffers.Builder(64)
    builder.StartObject(2)
    builder.PrependInt8Slot(0, activation, 0)
    builder.Finish(builder.EndObject(), _SEGMENTER_IDENTIFIER)
    return bytes(builder.Output())


def segmenter_metadata(
    *,
    model_name,
    description,
    labels_file,
    float_input,
    float_output,
    fixed_size=True,
    version="",
) -> bytes:
    """The metadata flatbuffer of an image segmenter.

    Args:
        model_name: str. Shown by metadata tools.
        description: str. One sentence on what the model segments.
        labels_file: str. Name of the associated class-names file.
        float_input: bool. The input is float32 RGB in [0, 255]: MediaPipe
            is told mean 0 and std 1 (the model normalises inside).
        float_output: bool. The output is (1, H, W, classes) logits (scores
            through a softmax); otherwise uint8 class ids.
        fixed_size: bool. False for a model of any input size: MediaPipe
            resizes every image to the input tensor's shape, which such a
            file declares as 1x1, so it gets no normalisation options, and
            MediaPipe refuses it instead of returning a 1x1-pixel guess.
        version: str. Model version shown by metadata tools.
    """
    w = _Writer()
    name, text = w.string(model_name), w.string(description)
    version = w.string(version) if version else None
    # Input: an RGB image, pixel values 0..255.
    units = None
    if float_input and fixed_size:
        normalization = w.table(
            [(0, "offset", w.floats([0.0])), (1, "offset", w.floats([1.0]))]
        )
        units = w.offsets(
            [
                w.table(
                    [
                        (0, "uint8", _NORMALIZATION_OPTIONS),
                        (1, "offset", normalization),
                    ]
                )
            ]
        )
    stats = w.table(
        [(0, "offset", w.floats([255.0])), (1, "offset", w.floats([0.0]))]
    )
    image = w.table(
        [
            (0, "offset", w.string("image")),
            (1, "offset", w.string("RGB image, pixel values 0 to 255")),
            (3, "offset", w.image_content(_RGB)),
            (4, "offset", units),
            (5, "offset", stats),
        ]
    )
    # Output: one score per class and pixel, labels along the class axis.
    labels = w.table(
        [
            (0, "offset", w.string(labels_file)),
            (1, "offset", w.string("class names, line i is class id i")),
            (2, "int8", _TENSOR_AXIS_LABELS),
        ]
    )
    masks = w.table(
        [
            (0, "offset", w.string("segmentation_masks")),
            (
                1,
                "offset",
                w.string(
                    "class logits at the input size"
                    if float_output
                    else "class id of every pixel"
                ),
            ),
            (3, "offset", w.image_content(_GRAYSCALE)),
            (6, "offset", w.offsets([labels])),
        ]
    )
    options = w.builder.CreateByteVector(
        _segmenter_options(_SOFTMAX if float_output else 0)
    )
    custom = w.table(
        [(0, "offset", w.string(_SEGMENTER_METADATA)), (1, "offset", options)]
    )
    subgraph = w.table(
        [
            (2, "offset", w.offsets([image])),
            (3, "offset", w.offsets([masks])),
            (9, "offset", w.offsets([custom])),
        ]
    )
    root = w.table(
        [
            (0, "offset", name),
            (1, "offset", text),
            (2, "offset", version),
            (3, "offset", w.offsets([subgraph])),
            (7, "offset", w.string(_MIN_PARSER_VERSION)),
        ]
    )
    w.builder.Finish(root, _METADATA_IDENTIFIER)
    return bytes(w.builder.Output())


def with_metadata(model_bytes, metadata, associated_files) -> bytes:
    """`model_bytes` with `metadata` as its TFLITE_METADATA buffer and
    `associated_files` ({name: bytes}) appended as a zip archive; metadata
    already present is replaced.
    """
    model = tflite_schema.ModelT.InitFromObj(
        tflite_schema.Model.GetRootAsModel(model_bytes, 0)
    )
    model.metadata = [
        entry
        for entry in (model.metadata or [])
        if entry.name.decode() != METADATA_BUFFER
    ]
    buffer = tflite_schema.BufferT()
    buffer.data = metadata
    model.buffers.append(buffer)
    entry = tflite_schema.MetadataT()
    entry.name = METADATA_BUFFER
    entry.buffer = len(model.buffers) - 1
    model.metadata.append(entry)
    builder = flatbuffers.Builder(len(model_bytes) + len(metadata) + 1024)
    builder.Finish(model.Pack(builder), _MODEL_IDENTIFIER)
    packed = io.BytesIO(bytes(builder.Output()))
    # Stored, not deflated: readers map the files straight out of the model.
    with zipfile.ZipFile(packed, "a", zipfile.ZIP_STORED) as archive:
        for name, data in associated_files.items():
            archive.writestr(name, data)
    return packed.getvalue()


def read_metadata(model_bytes):
    """The TFLITE_METADATA buffer of a model (bytes), or None."""
    model = tflite_schema.Model.GetRootAsModel(model_bytes, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name().decode() == METADATA_BUFFER:
            return model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
    return None
