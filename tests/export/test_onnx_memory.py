"""Which ONNX exports collect garbage before each tf2onnx pass."""

import pytest

pytest.importorskip("tf2onnx")

from keras_deeplab.export.onnx import (  # noqa: E402
    COLLECT_PER_PASS_FROM_BYTES,
    weight_bytes,
)
from keras_deeplab.models.deeplab import build_model  # noqa: E402
from keras_deeplab.spec import ModelSpec  # noqa: E402
from tests.helpers import TINY  # noqa: E402


def test_full_size_models_collect_per_pass_and_tiny_ones_do_not():
    """A full-size ResNet-50 export needs the per-pass collection (11.4 GB
    without it, docs/export.md); a tiny model spends half its export in it."""
    full = build_model(ModelSpec(num_classes=21))
    assert weight_bytes(full) >= COLLECT_PER_PASS_FROM_BYTES
    tiny = build_model(ModelSpec(num_classes=3, **TINY))
    assert weight_bytes(tiny) < COLLECT_PER_PASS_FROM_BYTES
    assert weight_bytes(tiny) == sum(w.numpy().nbytes for w in tiny.weights)
