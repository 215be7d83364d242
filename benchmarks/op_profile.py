"""`python -m benchmarks.op_profile`: where a Keras model's inference time
goes in TensorFlow, by op type, as TensorFlow runs it after Grappler's
rewrites (oneDNN fusions included).

The model's forward pass is frozen into a graph and run in a TF1 session
with full tracing; each node's time from the step statistics is summed by
op type (after the rewrites, so fused ops such as `_FusedConv2D` show under
their own names) and printed as a table, the slowest first.

    python -m benchmarks.op_profile --output-stride 8 --size 513
    TF_ENABLE_ONEDNN_OPTS=0 python -m benchmarks.op_profile
"""

import argparse
import collections
import sys

import numpy as np

from benchmarks.results import machine_info
from benchmarks.suite import _build_model, add_model_options, model_plan
from keras_deeplab.utils.image_size import height_width, parse_size


def _frozen_graph(model, shape):
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    function = tf.function(lambda images: model(images, training=False))
    concrete = function.get_concrete_function(tf.TensorSpec(shape, tf.float32))
    frozen = convert_variables_to_constants_v2(concrete)
    return frozen.graph.as_graph_def(), frozen.inputs[0], frozen.outputs[0]


def op_times(model, images, *, threads, runs) -> dict:
    """{op type: (milliseconds per run, node count)} over `runs` traced
    runs after one untraced one."""
    import tensorflow as tf

    graph_def, input_tensor, output_tensor = _frozen_graph(model, images.shape)
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    config = tf.compat.v1.ConfigProto(
        intra_op_parallelism_threads=threads,
        inter_op_parallelism_threads=threads,
    )
    totals = collections.defaultdict(float)
    nodes = collections.defaultdict(set)
    with tf.compat.v1.Session(graph=graph, config=config) as session:
        feed = {input_tensor.name: images}
        session.run(output_tensor.name, feed)
        options = tf.compat.v1.RunOptions(
            trace_level=tf.compat.v1.RunOptions.FULL_TRACE
        )
        for _ in range(runs):
            metadata = tf.compat.v1.RunMetadata()
            session.run(
                output_tensor.name,
                feed,
                options=options,
                run_metadata=metadata,
            )
            for device in metadata.step_stats.dev_stats:
                for node in device.node_stats:
                    op = node.timeline_label.split("(")[0].split(" = ")[-1]
                    op = op.strip() or node.node_name
                    totals[op] += node.all_end_rel_micros / 1e3
                    nodes[op].add(node.node_name)
    return {
        op: (milliseconds / runs, len(nodes[op]))
        for op, milliseconds in totals.items()
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.op_profile", description=__doc__
    )
    add_model_options(parser)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)
    plan = model_plan(args)
    model = _build_model(plan, args.backbone, args.output_stride)
    height, width = height_width(parse_size(args.size, option="--size"))
    images = np.random.default_rng(0).uniform(0, 255, (1, height, width, 3))
    times = op_times(
        model, images.astype(np.float32), threads=args.threads, runs=args.runs
    )
    machine = machine_info()
    total = sum(ms for ms, _ in times.values())
    print(
        f"{machine['cpu']}; flags {' '.join(machine['cpu_flags'])}; "
        f"TensorFlow oneDNN {machine['onednn']}; {args.threads} threads; "
        f"sum of op times {total:.0f} ms per run (ops overlap when "
        "inter-op threads run them side by side)"
    )
    print(f"{'op':<40} {'ms/run':>8} {'share':>6} {'nodes':>5}")
    ranked = sorted(times.items(), key=lambda item: -item[1][0])
    for op, (ms, count) in ranked[: args.top]:
        print(f"{op:<40} {ms:8.1f} {ms / total:6.1%} {count:5d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
