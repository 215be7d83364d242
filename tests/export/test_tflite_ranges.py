"""Clipped int8 activation ranges (export.tflite_ranges), against the
TFLite converter's own min/max calibration."""

import contextlib

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from keras_deeplab.export import tflite, tflite_ranges
from keras_deeplab.export.tflite import convert_tflite
from keras_deeplab.export.tflite_ranges import _Extremes
from keras_deeplab.models.deeplab import build_model
from keras_deeplab.spec import ModelSpec
from tests.helpers import TINY, random_images

# Each test exports or trains: the slow lane (docs/development.md).
pytestmark = pytest.mark.slow

SIZE = 65


def test_the_range_leaves_out_the_fraction_at_each_end(monkeypatch):
    monkeypatch.setattr(tflite_ranges, "OUTLIER_FRACTION", 1e-4)
    values = np.random.default_rng(0).permutation(200_000) - 100_000.0
    extremes = _Extremes(samples=2)
    for image in np.split(values, 2):  # 1e-4 of 200,000: 20 at each end
        extremes.add(image)
    assert extremes.range() == (-100_000 + 20, 99_999 - 20)
    small = _Extremes(samples=1)  # too few values to leave any out
    small.add(np.array([3.0, 5.0]))
    assert small.range() == (0.0, 5.0)  # zero is always in the range


@pytest.fixture(scope="module")
def ranges():
    """{fraction or "tflite": {tensor name: (scale, zero point)}} of one
    int8 model (uint8 input) converted with clipped ranges, with nothing
    left out, and by the converter alone."""
    spec = ModelSpec(num_classes=3, backbone="resnet50", **TINY)
    model = build_model(spec)
    images = list(random_images(4, SIZE, SIZE))
    result, chunks = {}, []
    with pytest.MonkeyPatch.context() as patch:
        for fraction in (1e-2, 0.0, "tflite"):
            if fraction == "tflite":
                patch.setattr(
                    tflite, "clipped_activation_ranges", contextlib.nullcontext
                )
            else:
                patch.setattr(tflite_ranges, "OUTLIER_FRACTION", fraction)
            if fraction == 0.0:  # measured in many runs of the model
                patch.setattr(tflite_ranges, "_MAX_PROBE_BYTES", 32 * 2**10)
                patch.setattr(tflite_ranges, "_chunks", _counted(chunks))
            flatbuffer = convert_tflite(
                model,
                size=SIZE,
                quantize="int8",
                io_type="uint8",
                representative_images=images,
            )
            interpreter = Interpreter(model_content=flatbuffer)
            tensors = interpreter.get_tensor_details()
            result[fraction] = {
                tensor["name"]: tensor["quantization"]
                for tensor in tensors
                if tensor["dtype"] in (np.int8, np.uint8)
            }
            result[fraction]["input"] = interpreter.get_input_details()[0][
                "quantization"
            ]
        names = {tensor["index"]: tensor["name"] for tensor in tensors}
        result["add_inputs"] = {
            names[index]
            for op in interpreter._get_ops_details()
            if op["op_name"] == "ADD"
            for index in op["inputs"]
        }
    result["chunks"] = chunks
    return result


def _counted(counts):
    """`tflite_ranges._chunks`, appending how many chunks it made."""
    chunks = tflite_ranges._chunks

    def counted(tensors, ranged):
        made = chunks(tensors, ranged)
        counts.append(len(made))
        return made

    return counted


def test_nothing_left_out_is_the_converters_calibration_fixed(ranges):
    """With no value left out, every range is TFLite's own min/max except
    where TFLite's calibrator records a wrong one: an ADD's input whose
    buffer the ADD reuses for its output is logged again after the ADD ran,
    so it gets the sum's range (tensorflow/tensorflow#127842). Here that
    is every residual branch of the ResNet; our ranges are the values the
    tensors take, measured here in several runs of at most 32 KiB."""
    assert min(ranges["chunks"]) > 3
    ours, tflite_own = ranges[0.0], ranges["tflite"]
    assert ours.keys() == tflite_own.keys()
    narrower = set()
    for name, (scale, zero_point) in tflite_own.items():
        assert ours[name][0] <= scale * (1 + 1e-4), name
        if ours[name][0] < scale * (1 - 1e-3):
            narrower.add(name)
        else:
            assert ours[name][0] == pytest.approx(scale, rel=1e-4), name
            assert abs(ours[name][1] - zero_point) <= 1, name
    assert narrower and narrower <= ranges["add_inputs"]


def test_inner_ranges_shrink_and_the_image_input_keeps_0_to_255(ranges):
    clipped, tflite_own = ranges[1e-2], ranges["tflite"]
    assert clipped["input"] == tflite_own["input"]
    scale, zero_point = clipped["input"]
    assert (255 - zero_point) * scale == pytest.approx(255, rel=0.01)
    ratios = [
        clipped[name][0] / scale
        for name, (scale, _) in tflite_own.items()
        if name != "input" and scale > 0
    ]
    assert max(ratios) <= 1 + 1e-4  # never wider
    assert np.median(ratios) < 0.95  # most activations narrower
