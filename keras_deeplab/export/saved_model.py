"""SavedModel export for TF Serving: three signatures, validated inputs,
compact outputs (uint8 class ids, PNG class maps; probabilities on request).

Layout: `<out>/<model_name>/<version>/`, written into a temporary sibling and
renamed, so a server polling the folder never sees a half-written version.
"""

from pathlib import Path

import keras
import tensorflow as tf

from keras_deeplab.export.layout import LABELS_FILE
from keras_deeplab.export.serving import (
    CLASS_IDS_OUTPUT,
    CONFIDENCE_OUTPUT,
    CONFIDENCE_PNG_OUTPUT,
    LOGITS_OUTPUT,
    MASK_PNG_OUTPUT,
    PROBABILITIES_OUTPUT,
)
from keras_deeplab.layers import dilated_depthwise_form
from keras_deeplab.models.derived import export_model
from keras_deeplab.utils.atomic import atomic_directory
from keras_deeplab.utils.errors import UserInputError

# 4096 x 4096: larger images (or decompression bombs claiming to be) are
# refused before decoding.
DEFAULT_MAX_PIXELS = 4096 * 4096
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# A PNG sample holds 8 or 16 bits: class maps of more classes stay int32.
_PNG_CLASS_LIMITS = ((256, tf.uint8), (65536, tf.uint16))


def class_id_dtype(num_classes):
    """uint8 for <= 256 classes (a quarter of int32 on the wire), else int32."""
    return tf.uint8 if num_classes <= 256 else tf.int32


def _png_dtype(num_classes):
    for limit, dtype in _PNG_CLASS_LIMITS:
        if num_classes <= limit:
            return dtype
    raise UserInputError(
        f"a model of {num_classes} classes cannot return PNG class maps "
        "(16 bits at most, 65536 classes)."
    )


def _check_pixels(height, width, max_pixels):
    """InvalidArgument (not a crash or a hang) for oversized images."""
    pixels = tf.cast(height, tf.int64) * tf.cast(width, tf.int64)
    return tf.debugging.assert_less_equal(
        pixels,
        tf.constant(max_pixels, tf.int64),
        message=f"image has more than max_pixels={max_pixels} pixels",
    )


def _checked_images(images, max_pixels):
    """Images of rank 4 with 3 channels and <= max_pixels, or InvalidArgument.

    The signatures declare an unknown rank on purpose: a signature's shape is
    not enforced when it is called (nor by TF Serving), and a rank-3 batch
    reaching the convolutions aborts the whole process. With an unknown
    static rank these checks run in the graph instead of being folded away.
    """
    checks = [
        tf.debugging.assert_rank(
            images, 4, message="images must be (batch, height, width, 3)"
        )
    ]
    with tf.control_dependencies(checks):
        shape = tf.shape(images)
        checks = [
            tf.debugging.assert_equal(
                shape[3], 3, message="images must have 3 (RGB) channels"
            ),
            _check_pixels(shape[1], shape[2], max_pixels),
        ]
    with tf.control_dependencies(checks):
        return tf.ensure_shape(images, [None, None, None, 3])


def _big_endian_u32(data, offset):
    raw = tf.io.decode_raw(tf.strings.substr(data, offset, 4), tf.uint8)
    raw = tf.cast(raw, tf.int64)
    return raw[0] * 2**24 + raw[1] * 2**16 + raw[2] * 2**8 + raw[3]


def _decode(data, max_pixels):
    """Decodes one JPEG or PNG to uint8 (h, w, 3), size-checked first.

    Only JPEG and PNG are accepted: their headers give the size before any
    pixel is decoded (JPEG SOF, PNG IHDR), so a file claiming 30000x30000 is
    refused without allocating it. GIF, BMP and WebP are refused outright:
    an animated GIF decodes every frame, and TF's WebP/BMP decoders expose
    no header check.
    """
    is_png = tf.equal(tf.strings.substr(data, 0, 8), _PNG_MAGIC)
    is_jpeg = tf.io.is_jpeg(data)
    accepted = tf.debugging.Assert(
        is_png | is_jpeg,
        [
            "image_bytes must be JPEG or PNG files; GIF, BMP and WebP are "
            "refused"
        ],
    )
    with tf.control_dependencies([accepted]):

        def jpeg():
            shape = tf.cast(tf.image.extract_jpeg_shape(data), tf.int64)
            with tf.control_dependencies(
                [_check_pixels(shape[0], shape[1], max_pixels)]
            ):
                return tf.io.decode_jpeg(data, channels=3)

        def png():
            height, width = _big_endian_u32(data, 20), _big_endian_u32(data, 16)
            with tf.control_dependencies(
                [_check_pixels(height, width, max_pixels)]
            ):
                return tf.io.decode_png(data, channels=3)

        return tf.cond(is_jpeg, jpeg, png)


def _pngs(maps):
    """Single-channel PNG strings (B,) of (B, H, W) uint8/uint16 maps."""
    return tf.map_fn(
        tf.io.encode_png,
        maps[..., None],
        fn_output_signature=tf.TensorSpec([], tf.string),
    )


def build_archive(model, *, max_pixels=DEFAULT_MAX_PIXELS, probabilities=False):
    """A `keras.export.ExportArchive` with the three serving signatures.

    - `serving_default`: uint8 images (B, H, W, 3) -> `class_ids` (B, H, W),
      uint8 for <= 256 classes (int32 otherwise), and `confidence` (B, H, W)
      uint8, the top class probability x 255 [+ `probabilities` float32
      (B, H, W, C) when `probabilities`].
    - `serve_image_bytes`: encoded JPEG/PNG strings (B,) -> `mask_png_bytes`
      (B,): each class map as a single-channel PNG (8-bit, 16-bit beyond
      256 classes), and `confidence_png_bytes` (8-bit grayscale PNGs); TF
      Serving's REST API base64-encodes both because their names end in
      `_bytes`. Every image of one request must decode to the same size
      (they are stacked); send one image per request for mixed sizes.
    - `logits`: float32 RGB images in [0, 255] -> float32 logits.
    """
    model = export_model(model)
    num_classes = model.output.shape[-1]
    ids_dtype, png_dtype = class_id_dtype(num_classes), _png_dtype(num_classes)
    archive = keras.export.ExportArchive()
    archive.track(model)

    def class_ids(logits, dtype):
        return tf.cast(tf.argmax(logits, -1, output_type=tf.int32), dtype)

    def confidence(softmax):
        # As `inference.probabilities.confidence_map`: round(max x 255).
        top = tf.reduce_max(softmax, axis=-1)
        return tf.cast(tf.round(top * 255.0), tf.uint8)

    def serve_images(images):
        images = _checked_images(images, max_pixels)
        logits = model(tf.cast(images, tf.float32), training=False)
        softmax = tf.nn.softmax(logits, axis=-1)
        outputs = {
            CLASS_IDS_OUTPUT: class_ids(logits, ids_dtype),
            CONFIDENCE_OUTPUT: confidence(softmax),
        }
        if probabilities:
            outputs[PROBABILITIES_OUTPUT] = softmax
        return outputs

    def serve_bytes(encoded):
        with tf.control_dependencies(
            [
                tf.debugging.assert_rank(
                    encoded,
                    1,
                    message="image_bytes must be a batch (B,) of strings",
                )
            ]
        ):
            encoded = tf.identity(encoded)
        images = tf.map_fn(
            lambda data: _decode(data, max_pixels),
            encoded,
            fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8),
        )
        logits = model(tf.cast(images, tf.float32), training=False)
        scores = confidence(tf.nn.softmax(logits, axis=-1))
        return {
            MASK_PNG_OUTPUT: _pngs(class_ids(logits, png_dtype)),
            CONFIDENCE_PNG_OUTPUT: _pngs(scores),
        }

    def serve_logits(images):
        images = _checked_images(images, max_pixels)
        return {LOGITS_OUTPUT: model(images, training=False)}

    image_spec = None  # unknown rank: see _checked_images
    archive.add_endpoint(
        "serving_default",
        serve_images,
        input_signature=[tf.TensorSpec(image_spec, tf.uint8, name="images")],
    )
    archive.add_endpoint(
        "serve_image_bytes",
        serve_bytes,
        input_signature=[tf.TensorSpec(None, tf.string, name="image_bytes")],
    )
    archive.add_endpoint(
        "logits",
        serve_logits,
        input_signature=[tf.TensorSpec(image_spec, tf.float32, name="images")],
    )
    return archive


def export_saved_model(
    model,
    out_dir,
    *,
    model_name="deeplab",
    version=1,
    overwrite=False,
    max_pixels=DEFAULT_MAX_PIXELS,
    probabilities=False,
    labels=None,
) -> Path:
    """Writes `out_dir/model_name/version/` for TF Serving, atomically.

    Args:
        probabilities: bool. `serving_default` also returns float32 class
            probabilities (B, H, W, C): 21 classes at 513x513 are 22 MB.
        labels: str or None. Class names, one a line, written as
            `assets/labels.txt` of the version folder.

    Raises:
        UserInputError: if `version` is not a positive int.
        FileExistsError: if that version exists and `overwrite` is False.
    """
    if not isinstance(version, int) or version < 1:
        raise UserInputError(
            f"version={version!r} is invalid; TF Serving needs a positive "
            "int version folder, e.g. --version 1."
        )
    target = Path(out_dir) / model_name / str(version)
    # The server's TensorFlow may lack the dilated depthwise kernel this
    # machine has (MobileNetV3 models).
    with (
        dilated_depthwise_form("portable"),
        atomic_directory(target, overwrite=overwrite) as temporary,
    ):
        archive = build_archive(
            model, max_pixels=max_pixels, probabilities=probabilities
        )
        archive.write_out(str(temporary), verbose=False)
        if labels is not None:
            assets = temporary / "assets"
            assets.mkdir(exist_ok=True)
            (assets / LABELS_FILE).write_text(labels)
    return target
