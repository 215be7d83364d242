"""Which ONNX exports collect garbage before each tf2onnx pass."""

import pytest

pytest.importorskip("tf2onnx")

from keras_deeplab.export.onnx import COLLECT_PER_PASS_FROM_PARAMS  # noqa: E402
from keras_deeplab.models.deeplab import build_model  # noqa: E402
from keras_deeplab.spec import ModelSpec  # noqa: E402
from tests.helpers import TINY  # noqa: E402


def test_full_size_models_collect_per_pass_and_tiny_ones_do_not():
    """A full-size ResNet-50 export needs the per-pass collection (11.4 GB
    without it, docs/export.md); a tiny model spends half its export in it."""
    full = build_model(ModelSpec(num_classes=21))
    assert full.count_params() >= COLLECT_PER_PASS_FROM_PARAMS
    tiny = build_model(ModelSpec(num_classes=3, **TINY))
    assert tiny.count_params() < COLLECT_PER_PASS_FROM_PARAMS
