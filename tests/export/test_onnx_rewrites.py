"""ONNX graph rewrites on hand-made graphs, run in ONNX Runtime."""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from keras_deeplab.export.onnx_rewrites import (  # noqa: E402
    _explicit_same_pads,
)


def _conv_model(*, auto_pad, kernel, dilation, stride):
    rng = np.random.default_rng(kernel * 10 + dilation)
    weights = rng.standard_normal((4, 3, kernel, kernel)).astype("float32")
    conv = helper.make_node(
        "Conv",
        ["x", "w"],
        ["y"],
        auto_pad=auto_pad,
        kernel_shape=[kernel, kernel],
        dilations=[dilation, dilation],
        strides=[stride, stride],
    )
    dynamic = ["batch", 3, "height", "width"]
    graph = helper.make_graph(
        [conv],
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, dynamic)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)]
    )
    return model, weights


def _run(model, images):
    session = ort.InferenceSession(model.SerializeToString())
    return session.run(None, {"x": images})[0]


def _attributes(model):
    (node,) = model.graph.node
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


@pytest.mark.parametrize("auto_pad", [b"SAME_UPPER", b"SAME_LOWER"])
@pytest.mark.parametrize("kernel", [2, 3])
def test_same_pads_become_explicit_with_the_same_values(auto_pad, kernel):
    """Without dilation ONNX Runtime runs SAME itself: the rewritten graph
    gives its values at odd and even sizes (an even kernel pads unevenly)."""
    model, _ = _conv_model(
        auto_pad=auto_pad, kernel=kernel, dilation=1, stride=1
    )
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    _explicit_same_pads(rewritten.graph)
    assert "auto_pad" not in _attributes(rewritten)
    for shape in ((1, 3, 9, 12), (2, 3, 10, 7)):
        images = np.random.default_rng(0).standard_normal(shape)
        images = images.astype("float32")
        np.testing.assert_allclose(
            _run(rewritten, images), _run(model, images), atol=1e-5
        )


def test_a_dilated_same_conv_runs_and_equals_tensorflow_same():
    """ONNX Runtime refuses dilation with SAME auto_pad; rewritten, the
    conv runs and equals TensorFlow's "SAME" dilated conv (what tf2onnx
    converted)."""
    tf = pytest.importorskip("tensorflow")
    model, weights = _conv_model(
        auto_pad=b"SAME_UPPER", kernel=2, dilation=3, stride=1
    )
    images = np.random.default_rng(1).standard_normal((1, 3, 11, 14))
    images = images.astype("float32")
    with pytest.raises(Exception, match="Dilation not supported"):
        _run(model, images)
    _explicit_same_pads(model.graph)
    assert _attributes(model)["pads"] == [1, 1, 2, 2]
    expected = tf.nn.conv2d(
        images.transpose(0, 2, 3, 1),
        weights.transpose(2, 3, 1, 0),
        strides=1,
        padding="SAME",
        dilations=3,
    ).numpy()
    np.testing.assert_allclose(
        _run(model, images), expected.transpose(0, 3, 1, 2), atol=1e-5
    )


def test_a_strided_same_conv_keeps_its_auto_pad():
    """With stride > 1 the padding depends on the input size: left alone."""
    model, _ = _conv_model(
        auto_pad=b"SAME_UPPER", kernel=3, dilation=1, stride=2
    )
    _explicit_same_pads(model.graph)
    assert _attributes(model)["auto_pad"] == b"SAME_UPPER"
