"""Small registered layers shared by the backbone, the head and the model.

Channels-last only. Every `call` uses `keras.ops` so the layers run on the
TensorFlow and JAX backends and survive SavedModel, TFLite and ONNX export.
"""

import contextlib
import contextvars
import functools

import keras
from keras import ops

from keras_deeplab.errors import UserInputError

_PACKAGE = "keras_deeplab"
# keras.applications ResNet v1 weights were trained on caffe-style input:
# BGR channel order with the ImageNet mean pixel removed, no scaling.
IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)
IMAGENET_MEAN_RGB = tuple(reversed(IMAGENET_MEAN_BGR))
_RGB_TO_BGR = (2, 1, 0)
# torchvision weights expect RGB / 255, then this mean and std per channel.
TORCH_MEAN_RGB = (0.485, 0.456, 0.406)
TORCH_STD_RGB = (0.229, 0.224, 0.225)
_MAX_PIXEL = 255.0
# keras.applications MobileNetV3 weights expect RGB scaled to [-1, 1].
_TF_SCALE = 2.0 / _MAX_PIXEL
PREPROCESSING_MODES = ("caffe", "torch", "tf")


def preprocess_images(images, mode: str = "caffe"):
    """Normalises RGB images in [0, 255] the way pretrained weights expect.

    "caffe" equals `keras.applications.resnet.preprocess_input` (BGR, ImageNet
    mean pixel removed, no scaling); "torch" equals torchvision's
    `Normalize(mean, std)` after `ToTensor` (RGB / 255, then mean and std);
    "tf" is keras.applications MobileNetV3's `Rescaling(1 / 127.5, -1)`.
    Written with `keras.ops` so it runs on every backend and inside exported
    graphs.

    Args:
        images: tensor (..., height, width, 3). RGB values in [0, 255], any
            numeric dtype.
        mode: str. "caffe" (keras.applications ResNet), "torch"
            (torchvision) or "tf" (keras.applications MobileNetV3).
            Defaults to "caffe".

    Returns:
        float32 tensor of the same shape.
    """
    _check_mode(mode)
    images = ops.cast(images, "float32")
    if mode == "tf":
        return images * _TF_SCALE - 1.0
    if mode == "torch":
        # One multiply-add per channel: x / (255 std) - mean / std.
        scale = [1.0 / (_MAX_PIXEL * s) for s in TORCH_STD_RGB]
        offset = [
            m / s for m, s in zip(TORCH_MEAN_RGB, TORCH_STD_RGB, strict=True)
        ]
        return images * ops.convert_to_tensor(scale) - ops.convert_to_tensor(
            offset
        )
    # A gather, not ops.flip: TFLite's full-int8 path mangles the REVERSE_V2
    # that flip becomes (0.62 relative error after the first conv, measured),
    # while a channel gather quantizes like any other op.
    bgr = ops.take(images, _RGB_TO_BGR, axis=-1)
    return bgr - ops.convert_to_tensor(IMAGENET_MEAN_BGR, dtype="float32")


def _check_mode(mode):
    if mode not in PREPROCESSING_MODES:
        raise UserInputError(
            f"preprocessing mode={mode!r} is not supported; expected one of "
            f"{PREPROCESSING_MODES}."
        )


def _source_positions(in_size, out_size):
    """Half-pixel bilinear taps along one axis: (lower, upper, weight)."""
    in_float = ops.cast(in_size, "float32")
    scale = in_float / ops.cast(out_size, "float32")
    centres = (ops.cast(ops.arange(out_size), "float32") + 0.5) * scale - 0.5
    # Clamping before the floor reproduces the edge handling of
    # tf.image.resize / ONNX Resize(half_pixel): taps outside the image
    # collapse onto the border pixel.
    centres = ops.clip(centres, 0.0, in_float - 1.0)
    lower = ops.floor(centres)
    weight = centres - lower
    lower = ops.cast(lower, "int32")
    upper = ops.minimum(lower + 1, ops.cast(in_size, "int32") - 1)
    return lower, upper, weight


def _lerp_axis(images, *, axis, out_size):
    lower, upper, weight = _source_positions(ops.shape(images)[axis], out_size)
    weight = ops.cast(weight, images.dtype)
    # Broadcast the per-position weight along the resized axis only.
    weight_shape = [1, 1, 1, 1]
    weight_shape[axis] = -1
    weight = ops.reshape(weight, weight_shape)
    below = ops.take(images, lower, axis=axis)
    above = ops.take(images, upper, axis=axis)
    return below + (above - below) * weight


def resize_bilinear(images, height, width):
    """Bilinear resize with half-pixel centres to a possibly dynamic size.

    Matches `tf.image.resize(..., "bilinear", antialias=False)` and ONNX
    `Resize(mode=linear, coordinate_transformation_mode=half_pixel)`. Written
    as two gathers and a lerp per axis because `keras.ops.image.resize`
    rejects a symbolic size on the TensorFlow backend (keras 3.14-3.15), which
    a model built on `(None, None, 3)` needs.

    Args:
        images: tensor (batch, h, w, channels).
        height: int or scalar int tensor. Output height.
        width: int or scalar int tensor. Output width.

    Returns:
        Tensor (batch, height, width, channels) with the dtype of `images`.
    """
    resized = _lerp_axis(images, axis=1, out_size=height)
    return _lerp_axis(resized, axis=2, out_size=width)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ImagePreprocessing(keras.layers.Layer):
    """RGB [0, 255] images -> the normalisation the ResNet weights expect.

    Runs in float32 whatever the global dtype policy, so the mean subtraction
    is exact before any cast to half precision.

    Args:
        mode: str. "caffe" (keras.applications weights) or "torch"
            (torchvision weights); see `preprocess_images`.
    """

    def __init__(self, mode="caffe", **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        _check_mode(mode)
        self.mode = mode

    def call(self, images):
        return preprocess_images(images, self.mode)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ResizeToMatch(keras.layers.Layer):
    """Bilinearly resizes `inputs[0]` to the height and width of `inputs[1]`.

    Used to bring logits back to the input size and to spread the 1x1 image
    pooling features over the feature map (from 1x1 the result is an exact
    broadcast). The reference tensor only contributes its dynamic shape.

    On TensorFlow it is one `tf.image.resize` (half-pixel bilinear, which
    takes a symbolic size where `keras.ops.image.resize` does not): one
    RESIZE_BILINEAR in TFLite, one ONNX `Resize`, instead of a chain of
    gathers. Elsewhere it is `resize_bilinear`, the same function in
    `keras.ops`.
    """

    def call(self, inputs):
        images, reference = inputs
        reference_shape = ops.shape(reference)
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf  # the TensorFlow backend's fast path

            resized = tf.image.resize(
                images, reference_shape[1:3], method="bilinear"
            )
            return ops.cast(resized, images.dtype)
        return resize_bilinear(images, reference_shape[1], reference_shape[2])

    def compute_output_shape(self, input_shape):
        images_shape, reference_shape = input_shape
        return (
            images_shape[0],
            reference_shape[1],
            reference_shape[2],
            images_shape[3],
        )


def _same_paddings(kernel_size, rates):
    """Explicit NHWC paddings equal to "same" at stride 1 (symmetric for odd
    kernels, as PyTorch pads a dilated conv)."""
    paddings = [[0, 0]]
    for size, rate in zip(kernel_size, rates, strict=True):
        total = rate * (size - 1)
        paddings.append([total // 2, total - total // 2])
    return paddings + [[0, 0]]


def _tensorflow_atrous_conv(inputs, kernel, *, rates, paddings, depthwise):
    """One native dilated convolution op, differentiated through SpaceToBatch.

    `tf.nn.convolution` (what Keras calls) and `tf.nn.depthwise_conv2d` run
    a dilated conv on CPU as SpaceToBatchND + Conv2D + BatchToSpaceND: the
    padding makes the conv larger and the weights are re-laid out on every
    call (rate 36 at output stride 8 becomes 1,296 small images).
    `tf.nn.conv2d` / `DepthwiseConv2dNative` with `dilations` is one op that
    oneDNN runs directly and that the TFLite and ONNX converters keep as one
    convolution. TF has no CPU gradient kernel for it ("Current CPU
    implementations do not yet support dilation rates larger than 1"), so
    the tape records the op under a gradient of ours that differentiates the
    SpaceToBatch form (`_space_to_batch_gradient`), which computes the same
    function; inside a tf.function its unused forward is pruned.

    Not `tf.custom_gradient`: in a traced function it registers a new
    gradient in TensorFlow's global registry on every trace, which keeps
    the traced graph, and every weight the graph captured, alive for the
    life of the process (each model built and run leaked its weights).
    """
    import tensorflow as tf  # this path runs on the TensorFlow backend only

    rates, paddings = tuple(rates), tuple(map(tuple, paddings))
    kernel = tf.convert_to_tensor(kernel)
    # The tape must not record the native op itself (its gradient has no
    # CPU kernel): it sees only the op recorded below.
    outputs = _native_atrous_conv(
        tf.stop_gradient(inputs),
        tf.stop_gradient(kernel),
        rates=rates,
        paddings=paddings,
        depthwise=depthwise,
    )
    tf.__internal__.record_gradient(
        _space_to_batch_gradient(rates, paddings, depthwise),
        [inputs, kernel],
        None,
        [outputs],
    )
    return outputs


def _native_atrous_conv(images, weights, *, rates, paddings, depthwise):
    import tensorflow as tf

    if not depthwise:
        return tf.nn.conv2d(
            images, weights, strides=1, padding=paddings, dilations=rates
        )
    # "SAME", not the explicit `paddings`: at stride 1 TensorFlow's SAME pads
    # total // 2 before and the rest after, which is exactly `paddings`; and
    # with oneDNN on, Grappler fuses an EXPLICIT DepthwiseConv2dNative and
    # a following bias add into _FusedDepthwiseConv2dNative, whose shape
    # function aborts the process (docs/development.md, upstream bugs).
    return tf.raw_ops.DepthwiseConv2dNative(
        input=images,
        filter=weights,
        strides=[1, 1, 1, 1],
        padding="SAME",
        dilations=[1, *rates, 1],
    )


@functools.cache
def _space_to_batch_gradient(rates, paddings, depthwise) -> str:
    """The name of a gradient, registered once per convolution shape (not
    per trace), that differentiates the SpaceToBatch form of the dilated
    conv: `tf.nn.convolution` / `tf.nn.depthwise_conv2d` with "same"
    padding, equal to the native op's explicit symmetric padding."""
    import tensorflow as tf

    def space_to_batch(images, weights):
        if not depthwise:
            return tf.nn.convolution(
                images, weights, padding="SAME", dilations=rates
            )
        return tf.nn.depthwise_conv2d(
            images, weights, [1, 1, 1, 1], "SAME", dilations=rates
        )

    def gradient(op, upstream):
        images, weights = op.inputs
        with tf.GradientTape() as tape:
            tape.watch([images, weights])
            reference = space_to_batch(images, weights)
        return tape.gradient(
            reference, [images, weights], output_gradients=upstream
        )

    kind = "Depthwise" if depthwise else ""
    name = f"KerasDeeplabAtrous{kind}Conv2D_{rates}_{paddings}"
    tf.RegisterGradient(name)(gradient)
    return name


# How a dilated depthwise conv traces on TensorFlow: None (the native op
# where this machine's TensorFlow runs it), "native" or "portable".
_DEPTHWISE_FORM = contextvars.ContextVar("dilated_depthwise_form", default=None)
DEPTHWISE_FORMS = ("native", "portable")


@contextlib.contextmanager
def dilated_depthwise_form(form: str):
    """Within: dilated depthwise convolutions trace as one native op
    ("native": what the TFLite and ONNX converters keep as one depthwise
    conv, whatever this machine runs) or as SpaceToBatchND around a plain
    depthwise conv ("portable": what every TensorFlow CPU kernel runs, for
    SavedModels served elsewhere).

    TensorFlow's own CPU kernel for `DepthwiseConv2dNative` refuses
    dilation; only its oneDNN kernel takes it, and oneDNN is on by default
    only on some (Intel) CPUs.
    """
    if form not in DEPTHWISE_FORMS:
        raise ValueError(f"form={form!r}; expected one of {DEPTHWISE_FORMS}")
    token = _DEPTHWISE_FORM.set(form)
    try:
        yield
    finally:
        _DEPTHWISE_FORM.reset(token)


@functools.cache
def native_dilated_depthwise_runs() -> bool:
    """Whether this process's TensorFlow runs a dilated depthwise conv as one
    op on its default device (a one-pixel probe, run once, eagerly even
    while a function is being traced)."""
    import tensorflow as tf

    with tf.init_scope():
        try:
            tf.raw_ops.DepthwiseConv2dNative(
                input=tf.zeros([1, 3, 3, 1]),
                filter=tf.zeros([3, 3, 1, 1]),
                strides=[1, 1, 1, 1],
                padding="SAME",
                dilations=[1, 2, 2, 1],
            )
        except (tf.errors.UnimplementedError, tf.errors.InvalidArgumentError):
            return False
    return True


def _traces_native(depthwise: bool) -> bool:
    if not depthwise:
        return True  # every TensorFlow Conv2D kernel takes dilations
    form = _DEPTHWISE_FORM.get()
    if form is None:
        return native_dilated_depthwise_runs()
    return form == "native"


class _NativeDilation:
    """What AtrousConv2D and AtrousDepthwiseConv2D add to their Keras base:
    on TensorFlow a dilated "same" convolution is one native op with
    explicit symmetric padding (see `_tensorflow_atrous_conv`); on other
    backends, without dilation, and for a depthwise conv where the native
    op cannot run (`dilated_depthwise_form`), the Keras layer itself runs
    (the same function)."""

    _DEPTHWISE = False

    def _check_padding(self):
        if max(self.dilation_rate) > 1 and self.padding != "same":
            raise UserInputError(
                f"{type(self).__name__} {self.name!r} with dilation_rate="
                f"{self.dilation_rate} needs padding='same'; got "
                f"{self.padding!r}."
            )

    def call(self, inputs):
        if (
            keras.backend.backend() != "tensorflow"
            or max(self.dilation_rate) == 1
            or not _traces_native(self._DEPTHWISE)
        ):
            return super().call(inputs)
        outputs = _tensorflow_atrous_conv(
            inputs,
            ops.cast(self.kernel, self.compute_dtype),
            rates=list(self.dilation_rate),
            paddings=_same_paddings(self.kernel_size, self.dilation_rate),
            depthwise=self._DEPTHWISE,
        )
        if self.use_bias:
            outputs = outputs + ops.cast(self.bias, self.compute_dtype)
        return outputs if self.activation is None else self.activation(outputs)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class AtrousConv2D(_NativeDilation, keras.layers.Conv2D):
    """A `Conv2D` whose dilated convolution is one native op on TensorFlow.

    Same arguments, weights and config as `keras.layers.Conv2D`, so weights
    load by name and a model using it exports like any other.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._check_padding()


@keras.saving.register_keras_serializable(package=_PACKAGE)
class AtrousDepthwiseConv2D(_NativeDilation, keras.layers.DepthwiseConv2D):
    """A `DepthwiseConv2D` whose dilated convolution is one native op on
    TensorFlow (MobileNetV3's dilated stages); same arguments and weights as
    the Keras layer."""

    _DEPTHWISE = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._check_padding()


def conv_class(rate: int):
    """AtrousConv2D for a dilated conv, plain keras Conv2D otherwise."""
    return AtrousConv2D if rate > 1 else keras.layers.Conv2D


def depthwise_class(rate: int):
    """AtrousDepthwiseConv2D when dilated, keras DepthwiseConv2D otherwise."""
    return AtrousDepthwiseConv2D if rate > 1 else keras.layers.DepthwiseConv2D


# A "unit" is a convolution and the BatchNormalization after it; every
# builder names their layers this way, and the converters map checkpoints
# onto these names.
def conv_name(unit: str) -> str:
    return f"{unit}_conv"


def bn_name(unit: str) -> str:
    return f"{unit}_bn"
