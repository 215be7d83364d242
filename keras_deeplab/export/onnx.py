"""ONNX export through tf2onnx, with dynamic batch, height and width.

`tf2onnx.convert.from_keras` is broken on TF >= 2.16, so the model is traced
into a `tf.function`, frozen, and converted with tf2onnx's own steps
(`_function_to_onnx`).
"""

import json

import numpy as np
import tensorflow as tf

from keras_deeplab.export.layout import ONNX_INPUT as INPUT_NAME
from keras_deeplab.export.layout import ONNX_OUTPUT as OUTPUT_NAME
from keras_deeplab.export.runtimes import onnx_session
from keras_deeplab.layers import dilated_depthwise_form
from keras_deeplab.models.derived import export_model
from keras_deeplab.utils.atomic import atomic_file
from keras_deeplab.utils.memory import release_freed_memory

ONNX_OPSET = 17
# Parameters from which a copy per tf2onnx pass matters (see
# _function_to_onnx; 8 M float32 weights are 32 MiB, a ResNet-50 holds 42 M);
# below this a collection per pass (~0.25 s each, in a process holding
# TensorFlow) cost more time than the memory it saved.
COLLECT_PER_PASS_FROM_PARAMS = 8_000_000


def export_onnx(model, path, *, opset=ONNX_OPSET, metadata=None):
    """Writes float32 RGB images (B, H, W, 3) -> logits as ONNX, atomically.

    The graph is checked with `onnx.checker` before it is moved into place.
    `metadata` ({key: JSON-able value}) goes into the model's
    `metadata_props` as JSON (e.g. "class_names").

    Returns:
        The path written.
    """
    import onnx

    # Here, not at the top: SavedModel and TFLite exports import this
    # module, and the onnx package comes with the `export` extra only.
    from keras_deeplab.export.onnx_rewrites import rewrite_for_runtimes

    spec = [tf.TensorSpec([None, None, None, 3], tf.float32, name=INPUT_NAME)]
    model = export_model(model)

    @tf.function(input_signature=spec)
    def serve(images):
        return {OUTPUT_NAME: model(images, training=False)}

    # ONNX runtimes have their own dilated depthwise kernel: keep it one op.
    with dilated_depthwise_form("native"):
        function = serve.get_concrete_function()
    proto = _function_to_onnx(
        function,
        opset=opset,
        collect_per_pass=model.count_params() >= COLLECT_PER_PASS_FROM_PARAMS,
    )
    rewrite_for_runtimes(proto.graph)
    for key, value in (metadata or {}).items():
        proto.metadata_props.add(key=key, value=json.dumps(value))
    with atomic_file(path) as temporary:
        onnx.save(proto, str(temporary))
        del proto
        release_freed_memory()
        # From the file: a check of the proto would serialize another copy.
        onnx.checker.check_model(str(temporary))
    return path


def _function_to_onnx(function, *, opset, collect_per_pass):
    """`tf2onnx.convert.from_function`'s steps, with garbage collected
    before each of tf2onnx's graph optimizers when `collect_per_pass`.

    tf2onnx deep-copies the whole ONNX graph, every weight included, before
    each optimizer (about 24 passes) and drops the previous copy as cyclic
    garbage, which Python's collector reaches only every few passes: a
    ResNet-50 at 513 px peaked at 11.4 GB. Collecting before each pass
    holds the passes to two or three copies (4.0 GB in all, grappler's
    constant folding now the peak); see docs/export.md. Each collection
    takes ~0.25 s in a process holding TensorFlow: for small weights (the
    tiny test models, LR-ASPP) the 24 of them were half the export's time.
    """
    import tf2onnx

    inputs = [t.name for t in function.inputs if t.dtype != tf.resource]
    outputs = [t.name for t in function.outputs if t.dtype != tf.resource]
    # ONNX names: the signature's input name and the output dict's keys.
    (image_input,) = inputs
    renames = {image_input: INPUT_NAME}
    for key, tensor in function.structured_outputs.items():
        renames[tensor.name] = key
    with tf.device("/cpu:0"):
        frozen = _frozen_and_folded(function, inputs + outputs)
        with tf.Graph().as_default() as graph:
            tf.import_graph_def(frozen, name="")
            del frozen
            onnx_graph = tf2onnx.tfonnx.process_tf_graph(
                graph,
                opset=opset,
                input_names=inputs,
                output_names=outputs,
                tensors_to_rename=renames,
            )
    del graph  # its constants: tf2onnx holds the weights as numpy now
    _scalar_addends_as_vectors(onnx_graph)
    optimizers = tf2onnx.optimizer._get_optimizers()
    if collect_per_pass:
        optimizers = {
            name: _collecting_garbage_first(factory)
            for name, factory in optimizers.items()
        }
    onnx_graph = tf2onnx.optimizer.optimize_graph(
        onnx_graph, optimizers=optimizers
    )
    return onnx_graph.make_model(f"converted from {function.name}")


def _scalar_addends_as_vectors(onnx_graph):
    """Gives each scalar constant added to a tensor the shape (1,): the same
    broadcast, which tf2onnx's transpose optimizer can handle.

    tf2onnx 1.17's optimizer fails on `Conv (no bias) -> Transpose -> Add
    (0-d constant)` (`max()` of an empty shape; hard-swish's `x + 3` after a
    convolution in MobileNetV3), logs a traceback and gives up on the whole
    graph: the MobileNetV3 models kept 133 NHWC<->NCHW Transposes (ResNets:
    2).
    """
    from tf2onnx import utils

    for node in onnx_graph.get_nodes():
        if node.type != "Add" or not node.inputs[1].is_const():
            continue
        value = node.inputs[1].get_tensor_value(as_list=False)
        rank = len(onnx_graph.get_shape(node.input[0]) or ())
        if value.ndim == 0 and rank >= 1:
            vector = onnx_graph.make_const(
                utils.make_name(node.name + "_addend"), np.reshape(value, (1,))
            )
            onnx_graph.replace_input(
                node, node.input[1], vector.output[0], input_index=1
            )


def _frozen_and_folded(function, fetches):
    """The function's graph with its variables as constants, after
    grappler's constant folding, function inlining and dependency passes
    (what `tf2onnx.tf_loader.from_function` does, and the passes its
    converter expects), holding fewer copies of the weights at once.

    tf2onnx keeps the frozen function, its GraphDef and a session graph
    imported from it alive while grappler makes its own copies: a
    ResNet-50 at 513 px peaked at 3.6 GB there. Here only the MetaGraphDef
    grappler reads is alive when it runs.
    """
    from tensorflow.core.protobuf import config_pb2, meta_graph_pb2
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )
    from tensorflow.python.grappler import tf_optimizer

    frozen = convert_variables_to_constants_v2(
        function, lower_control_flow=False, aggressive_inlining=True
    )
    with tf.Graph().as_default():  # a MetaGraphDef is a graph-mode thing
        meta_graph = tf.compat.v1.train.export_meta_graph(
            graph_def=frozen.graph.as_graph_def(add_shapes=True)
        )
    del frozen
    release_freed_memory()
    fetch = meta_graph_pb2.CollectionDef()
    fetch.node_list.value.extend(fetches)
    meta_graph.collection_def["train_op"].CopyFrom(fetch)
    config = config_pb2.ConfigProto()
    config.graph_options.infer_shapes = True
    rewrites = config.graph_options.rewrite_options
    rewrites.optimizers[:] = ["constfold", "function", "dependency"]
    # Keep fake-quantization nodes around weights for tf2onnx to convert.
    rewrites.experimental_disable_folding_quantization_emulation = True
    return tf_optimizer.OptimizeGraph(config, meta_graph)


def _collecting_garbage_first(factory):
    def collect_then_make():
        release_freed_memory()
        return factory()

    return collect_then_make


def run_onnx(path, images):
    """Logits of an exported model under onnxruntime (CPU)."""
    return onnx_session(path)(images)
