"""Atrous (dilated) convolutions that TensorFlow runs as one native op.

`AtrousConv2D` and `AtrousDepthwiseConv2D` have the weights, arguments and
config of Keras' `Conv2D` and `DepthwiseConv2D`; on TensorFlow a dilated
"same" convolution is one native op (faster on CPU, one op in TFLite and
ONNX), elsewhere the Keras layer itself runs.
"""

import contextlib
import contextvars
import functools

import keras
from keras import ops

from keras_deeplab.layers.registered import PACKAGE
from keras_deeplab.utils.errors import UserInputError


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


@keras.saving.register_keras_serializable(package=PACKAGE)
class AtrousConv2D(_NativeDilation, keras.layers.Conv2D):
    """A `Conv2D` whose dilated convolution is one native op on TensorFlow.

    Same arguments, weights and config as `keras.layers.Conv2D`, so weights
    load by name and a model using it exports like any other.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._check_padding()


@keras.saving.register_keras_serializable(package=PACKAGE)
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
