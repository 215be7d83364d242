"""Activation ranges of full-int8 TFLite models: measured and clipped.

TFLite's calibration gives each activation tensor the range [min, max] of
the values it logged on the representative images. Two things go wrong:
an ADD input whose buffer the ADD reuses for its output is logged again
after the ADD ran, so it gets the sum's range (tensorflow/tensorflow#127842:
every residual branch, up to 3.5x too wide in our ResNets), and a few
extreme values (a handful of pixels among millions) set the int8 step of a
whole tensor. Inside `clipped_activation_ranges()` the converter's
calibration step runs the calibrated float model again on the same images,
its activations made outputs (a few hundred MB of them per run), and
records for each inner activation the range
without the most extreme `OUTLIER_FRACTION` of its values at each end
(values beyond it saturate). Every other step (the quantization itself,
integer input types, signatures) stays the converter's own. The model's
input and output keep their min/max: an image input keeps its 0..255 range
(a uint8 input is then the camera's bytes), the logits their extremes.

On the trained mobile demo (LR-ASPP MobileNetV3, docs/export.md) argmax
agreement with Keras went from 98.2% to 98.8% and the mIoU gap from 1.6
points to 0.1; leaving out 1e-5 or 3e-5 of the values at each end did as
well within noise, 1e-3 worse than min/max.

TFLite's public converter API has no calibration option, so this wraps its
`Calibrator.calibrate` (tensorflow.lite.python.optimize.calibrator) for the
duration of one conversion. No TensorFlow version is pinned (the `cpu`
extra asks for tensorflow-cpu >= 2.16); tests/export/test_tflite_ranges.py
checks the patch against the TensorFlow installed, and it was last run with
2.21.
"""

import contextlib
import math
from unittest import mock

import numpy as np

OUTLIER_FRACTION = 1e-4  # at each end: the 0.01st / 99.99th percentiles
# Activations measured per run of the calibrated model: ResNet-50 at 513x513
# has ~0.5 GB of them; each run of the model costs a float pass per image.
_MAX_PROBE_BYTES = 256 * 2**20


@contextlib.contextmanager
def clipped_activation_ranges():
    """Within it, `TFLiteConverter.convert()` of a full-int8 model
    quantizes activations to clipped ranges (see the module docstring)."""
    from tensorflow.lite.python.optimize import calibrator

    calibrate = calibrator.Calibrator.calibrate

    def calibrate_and_clip(self, dataset_gen):
        return clip_ranges(calibrate(self, dataset_gen), dataset_gen)

    with mock.patch.object(
        calibrator.Calibrator, "calibrate", calibrate_and_clip
    ):
        yield


def clip_ranges(calibrated: bytes, dataset_gen) -> bytes:
    """The calibrated model (float ops, each activation's min/max recorded)
    with the min/max of its inner activations replaced by clipped ranges of
    the values they take on `dataset_gen()`'s samples."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(calibrated)
    subgraph = model.subgraphs[0]
    ends = {*subgraph.inputs, *subgraph.outputs}
    ranged = [
        index
        for index, tensor in enumerate(subgraph.tensors)
        if index not in ends
        and tensor.quantization is not None
        and tensor.quantization.min is not None
        and len(tensor.quantization.min) == 1
    ]
    samples = [np.asarray(sample[0]) for sample in dataset_gen()]
    extremes = {}
    for chunk in _chunks(subgraph.tensors, ranged):
        extremes.update(_extremes(model, chunk, samples))
    for index in ranged:
        low, high = extremes[index].range()
        quantization = subgraph.tensors[index].quantization
        quantization.min, quantization.max = [low], [high]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _chunks(tensors, ranged) -> list:
    """`ranged` in runs of consecutive tensors of at most
    `_MAX_PROBE_BYTES` of float32 values each (one at least)."""
    chunks, size = [[]], 0
    for index in ranged:
        nbytes = 4 * int(np.prod(tensors[index].shape))
        if chunks[-1] and size + nbytes > _MAX_PROBE_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append(index)
        size += nbytes
    return chunks


def _extremes(model, chunk, samples) -> dict:
    """{tensor index: _Extremes} of the `chunk` tensors of `model` (a
    flatbuffer_utils ModelT, left as it was) run on each of `samples`.

    The chunk's tensors become the outputs of a copy of the model, so a run
    keeps exactly those (`experimental_preserve_all_tensors` would keep
    every tensor and every kernel's scratch buffer: +1.9 GB for ResNet-50).
    """
    from ai_edge_litert.interpreter import Interpreter
    from tensorflow.lite.tools import flatbuffer_utils

    subgraph = model.subgraphs[0]
    outputs, signatures = subgraph.outputs, model.signatureDefs
    subgraph.outputs = np.asarray(chunk, np.int32)
    model.signatureDefs = []  # they name the model's own outputs
    try:
        probe = bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    finally:
        subgraph.outputs, model.signatureDefs = outputs, signatures
    interpreter = Interpreter(model_content=probe)
    (model_input,) = interpreter.get_input_details()
    extremes = {index: _Extremes(len(samples)) for index in chunk}
    allocated_shape = None
    for sample in samples:
        if sample.shape != allocated_shape:  # any-size models: per image
            interpreter.resize_tensor_input(model_input["index"], sample.shape)
            interpreter.allocate_tensors()
            allocated_shape = sample.shape
        interpreter.set_tensor(model_input["index"], sample)
        interpreter.invoke()
        for index in chunk:
            extremes[index].add(interpreter.get_tensor(index))
    return extremes


class _Extremes:
    """The most extreme values one tensor took, enough of them to give the
    range without `OUTLIER_FRACTION` of all its values at each end."""

    def __init__(self, samples: int):
        self.samples = samples
        self.lowest = self.highest = np.empty(0, np.float32)

    def add(self, values):
        values = np.asarray(values, np.float32).ravel()
        # The values left out, plus the first one kept, where the range ends.
        keep = math.floor(OUTLIER_FRACTION * values.size * self.samples) + 1
        lowest = highest = values
        if values.size > 2 * keep:  # both ends in one pass
            values = np.partition(values, (keep - 1, values.size - keep))
            lowest, highest = values[:keep], values[-keep:]
        lowest = np.concatenate([self.lowest, lowest])
        highest = np.concatenate([self.highest, highest])
        if lowest.size > keep:
            lowest = np.partition(lowest, keep - 1)[:keep]
            highest = np.partition(highest, -keep)[-keep:]
        self.lowest, self.highest = lowest, highest

    def range(self) -> tuple:
        """(low, high), containing zero as TFLite's int8 ranges must."""
        return (
            min(float(self.lowest.max()), 0.0),
            max(float(self.highest.min()), 0.0),
        )
