"""Rewrites of tf2onnx's ONNX graph that runtimes execute faster, each
giving the same values (see docs/export.md): hard activations as one op
each, the final upsampling channels-last, the preprocessing channels-first;
and, for OpenVINO, the final upsampling channels-first again. Dilated
"SAME" convolutions get explicit pads, which every runtime runs.
"""

import collections
import functools

import numpy as np
from onnx import helper, numpy_helper

# Transpose perms between the layouts; the channels-last and channels-first
# resize rewrites are each other's inverse and must agree on them.
_TO_NHWC = [0, 2, 3, 1]
_TO_NCHW = [0, 3, 1, 2]


def rewrite_for_runtimes(graph):
    """Applies every rewrite below to an ONNX GraphProto, in place."""
    _explicit_same_pads(graph)
    _hard_activations_as_onnx_ops(graph)
    _channels_last_resizes(graph)
    _channels_first_preprocessing(graph)


def _index(graph):
    """(nodes, {output: producing node}, Counter of each value's uses). The
    nodes list holds one Python object per node, so `id()` keys stay
    valid while the graph is rewritten."""
    nodes = list(graph.node)
    producers = {name: node for node in nodes for name in node.output}
    uses = collections.Counter(name for node in nodes for name in node.input)
    uses.update(output.name for output in graph.output)
    return nodes, producers, uses


def _constants(graph):
    """name -> the initializer as an array, or None: each is converted when
    first asked for, so the model's weights, which the rewrites never look
    at, are not copied (converting every initializer copied all of them)."""
    tensors = {t.name: t for t in graph.initializer}

    @functools.cache
    def constant(name):
        tensor = tensors.get(name)
        return None if tensor is None else numpy_helper.to_array(tensor)

    return constant


def _perm(node):
    return next(
        (list(a.ints) for a in node.attribute if a.name == "perm"), None
    )


def _replace(graph, nodes, replaced, dropped):
    """Writes `nodes` back in order, each node whose id() is in `replaced`
    as that list of nodes and none whose id() is in `dropped`, and drops
    the initializers no node reads any more."""
    kept = [
        new
        for node in nodes
        if id(node) not in dropped
        for new in replaced.get(id(node), [node])
    ]
    del graph.node[:]
    graph.node.extend(kept)
    used = {name for node in graph.node for name in node.input}
    initializers = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(initializers)


_SAME_PADS = ("SAME_UPPER", "SAME_LOWER")


def _explicit_same_pads(graph):
    """Gives each stride-1 `Conv` that tf2onnx wrote with `auto_pad`
    SAME_UPPER / SAME_LOWER (a "SAME" TensorFlow conv at a dynamic input
    size) the same padding as explicit `pads`, in place: ONNX Runtime
    refuses dilation with a SAME `auto_pad`. At stride 1 the total padding
    along an axis is `dilation * (kernel - 1)` whatever the input size;
    SAME_UPPER puts the odd pixel at the end, SAME_LOWER at the start.
    """
    for node in graph.node:
        attributes = {a.name: a for a in node.attribute}
        auto_pad = attributes.get("auto_pad")
        if node.op_type != "Conv" or auto_pad is None:
            continue
        mode = auto_pad.s.decode()
        kernel = list(attributes["kernel_shape"].ints)
        strides = list(getattr(attributes.get("strides"), "ints", []))
        if mode not in _SAME_PADS or any(s != 1 for s in strides):
            continue
        dilations = list(getattr(attributes.get("dilations"), "ints", []))
        dilations = dilations or [1] * len(kernel)
        totals = [d * (k - 1) for d, k in zip(dilations, kernel, strict=True)]
        smaller = [total // 2 for total in totals]
        larger = [t - s for t, s in zip(totals, smaller, strict=True)]
        begins, ends = (
            (smaller, larger) if mode == "SAME_UPPER" else (larger, smaller)
        )
        node.attribute.remove(auto_pad)
        node.attribute.append(helper.make_attribute("pads", begins + ends))


def _hard_activations_as_onnx_ops(graph):
    """Rewrites Keras' hard-sigmoid, `relu6(x + 3) / 6` (an Add, a Clip and
    a Mul in tf2onnx's graph), as one ONNX `HardSigmoid` (alpha 1/6, beta
    1/2), and `x * hard_sigmoid(x)` as one `HardSwish`, in place.

    Runtimes fuse these ops into the convolution before them (ONNX Runtime's
    FusedConv, OpenVINO's HSwish), and torchvision's export has them; the
    three or four elementwise passes over each MobileNetV3 activation they
    replace are not fused.
    """
    constant = _constants(graph)
    nodes, producers, uses = _index(graph)

    def is_constant(name, value):
        array = constant(name)
        return (
            array is not None
            and array.size == 1
            and abs(float(array.reshape(())) - value) < 1e-6
        )

    def single_use_producer(name, op_type):
        node = producers.get(name)
        if node is not None and node.op_type == op_type and uses[name] == 1:
            return node
        return None

    def operand_beside(node, value):
        """The other input of a binary `node` one of whose inputs is the
        scalar constant `value`."""
        first, second = node.input
        if is_constant(second, value):
            return first
        return second if is_constant(first, value) else None

    replaced, dropped = {}, set()  # by id() of the nodes in `nodes`
    for node in nodes:  # Mul(Clip(Add(x, 3), 0, 6), 1/6) -> HardSigmoid(x)
        clip = node.op_type == "Mul" and single_use_producer(
            operand_beside(node, 1 / 6), "Clip"
        )
        if not clip or len(clip.input) != 3:
            continue
        add = single_use_producer(clip.input[0], "Add")
        x = add and operand_beside(add, 3.0)
        if (
            x
            and is_constant(clip.input[1], 0.0)
            and is_constant(clip.input[2], 6.0)
        ):
            replaced[id(node)] = helper.make_node(
                "HardSigmoid",
                [x],
                list(node.output),
                name=node.name + "_hard_sigmoid",
                alpha=1 / 6,
                beta=0.5,
            )
            dropped.update((id(clip), id(add)))
    for node in nodes:  # Mul(x, HardSigmoid(x)) -> HardSwish(x)
        if node.op_type != "Mul":
            continue
        for operand, gate_output in (node.input, reversed(node.input)):
            gate = producers.get(gate_output)
            gate_op = gate and replaced.get(id(gate), gate)
            if (
                uses[gate_output] == 1
                and gate_op is not None
                and gate_op.op_type == "HardSigmoid"
                and list(gate_op.input) == [operand]
            ):
                replaced[id(node)] = helper.make_node(
                    "HardSwish",
                    [operand],
                    list(node.output),
                    name=node.name + "_hard_swish",
                )
                dropped.add(id(gate))
                break
    _replace(graph, nodes, {k: [v] for k, v in replaced.items()}, dropped)


def _channels_last_resizes(graph):
    """Moves each `Resize -> Transpose(NCHW -> NHWC)` pair's Transpose in
    front of the Resize, in place: the same values, but the transpose then
    moves the small logits instead of the upsampled ones, and ONNX Runtime's
    channels-last bilinear kernel is faster than its channels-first one
    (1 x 21 x 513 x 513 from 65 x 65: 2.6 ms against 4.8 + 4.9 ms for the
    transpose, 2 threads).

    tf2onnx's transpose optimizer pushes every transpose to the outputs, so
    the final upsampling of each model ends this way.
    """
    nodes, producers, uses = _index(graph)
    empty = {t.name for t in graph.initializer if 0 in t.dims}
    empty.add("")  # an omitted optional input
    replaced = {}
    for node in nodes:
        perm = _perm(node)
        resize = node.op_type == "Transpose" and producers.get(node.input[0])
        if (
            perm != _TO_NHWC
            or not resize
            or resize.op_type != "Resize"
            or uses[resize.output[0]] != 1
            or len(resize.input) != 4
            or resize.input[1] not in empty  # roi: unused by half_pixel
            or resize.input[2] not in empty  # scales: the sizes are given
        ):
            continue
        x, roi, scales, sizes = resize.input
        order = node.name + "_nhwc_order"
        graph.initializer.append(
            numpy_helper.from_array(np.asarray(_TO_NHWC, np.int64), order)
        )
        replaced[id(resize)] = [
            helper.make_node(
                "Transpose",
                [x],
                [node.name + "_input"],
                name=node.name + "_before_resize",
                perm=_TO_NHWC,
            ),
            helper.make_node(
                "Gather",
                [sizes, order],
                [node.name + "_sizes"],
                name=node.name + "_sizes",
                axis=0,
            ),
        ]
        rewritten = helper.make_node(
            "Resize",
            [node.name + "_input", roi, scales, node.name + "_sizes"],
            list(node.output),
            name=resize.name,
        )
        rewritten.attribute.extend(resize.attribute)
        replaced[id(node)] = [rewritten]
    _replace(graph, nodes, replaced, set())


def channels_first_resizes(graph):
    """Undoes `_channels_last_resizes`, in place: `Transpose(NCHW -> NHWC)
    -> Resize` with its sizes reordered becomes `Resize -> Transpose`.

    OpenVINO's CPU plugin runs a channels-last Resize far slower than the
    channels-first one and the transpose after it (LR-ASPP at 513 px:
    1.63x against 1.00x torchvision's ONNX in OpenVINO), where ONNX Runtime
    is faster channels-last. The OpenVINO IR is made from our ONNX file, so
    its conversion calls this first.
    """
    constant = _constants(graph)
    nodes, producers, uses = _index(graph)
    replaced, dropped = {}, set()
    for node in nodes:
        if node.op_type != "Resize" or len(node.input) != 4:
            continue
        transpose = producers.get(node.input[0])
        gather = producers.get(node.input[3])
        if (
            transpose is None
            or _perm(transpose) != _TO_NHWC
            or uses[transpose.output[0]] != 1
            or gather is None
            or gather.op_type != "Gather"
            or uses[gather.output[0]] != 1
            or constant(gather.input[1]) is None
            or constant(gather.input[1]).tolist() != _TO_NHWC
        ):
            continue
        _, roi, scales, _ = node.input
        resize = helper.make_node(
            "Resize",
            [transpose.input[0], roi, scales, gather.input[0]],
            [node.name + "_nchw"],
            name=node.name,
        )
        resize.attribute.extend(node.attribute)
        replaced[id(node)] = [
            resize,
            helper.make_node(
                "Transpose",
                [node.name + "_nchw"],
                list(node.output),
                name=transpose.name,
                perm=_TO_NHWC,
            ),
        ]
        dropped.update((id(transpose), id(gather)))
    _replace(graph, nodes, replaced, dropped)


def _channels_first_preprocessing(graph):
    """Moves the input's NHWC -> NCHW Transpose in front of the per-channel
    `Mul`/`Sub`/`Add`/`Div` of the preprocessing, in place, their constants
    reshaped to (C, 1, 1): the same values, but ONNX Runtime broadcasts a
    per-channel constant over channels-first planes several times faster
    than over the last axis of 3 (8 ms of LR-ASPP's 66 ms at 513 px on 2
    threads, where torchvision's graph takes normalised input).
    """
    constant = _constants(graph)
    nodes, producers, uses = _index(graph)

    def per_channel_operand(node):
        """The index of `node`'s per-channel constant operand, or None."""
        if node.op_type not in ("Mul", "Sub", "Add", "Div"):
            return None
        for index, name in enumerate(node.input):
            array = constant(name)
            if array is not None and array.ndim >= 1 and array.size > 1:
                if array.size == array.shape[-1]:  # (C,), (1, 1, 1, C)
                    return index
        return None

    replaced, dropped = {}, set()
    for node in nodes:
        perm = _perm(node)
        if node.op_type != "Transpose" or perm != _TO_NCHW:
            continue
        chain, name = [], node.input[0]  # [(op, its constant's index)]
        while (
            (producer := producers.get(name)) is not None
            and uses[name] == 1
            and (index := per_channel_operand(producer)) is not None
        ):
            chain.insert(0, (producer, index))
            name = producer.input[1 - index]
        if not chain:
            continue
        moved = [
            helper.make_node(
                "Transpose",
                [name],
                [node.name + "_nchw"],
                name=node.name + "_first",
                perm=_TO_NCHW,
            )
        ]
        current = node.name + "_nchw"
        for position, (op, index) in enumerate(chain):
            constant_name = f"{op.name}_channels_first"
            graph.initializer.append(
                numpy_helper.from_array(
                    constant(op.input[index]).reshape(-1, 1, 1), constant_name
                )
            )
            inputs = [current, current]
            inputs[index] = constant_name
            last = position == len(chain) - 1
            output = node.output[0] if last else f"{op.name}_nchw"
            moved.append(
                helper.make_node(op.op_type, inputs, [output], name=op.name)
            )
            current = output
            dropped.add(id(op))
        replaced[id(node)] = moved
    _replace(graph, nodes, replaced, dropped)
