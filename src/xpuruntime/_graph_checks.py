"""Attribute values ONNX does not allow, that an engine reads anyway and then crashes the process on.

Found by fuzzing the engines with damaged models and extreme attribute values in child processes (README,
"Reliability"): OpenVINO 2026.4 reads and compiles each of these and then dies (SIGSEGV, SIGFPE) or hangs in its
reader; ONNX Runtime 1.32 aborts on some; ``onnx.shape_inference`` itself aborts on a ``Split`` whose
``num_outputs`` is not its number of outputs. Each rule is the ONNX operator spec's own range (or, for a tensor's
rank or a pad, a bound no real model comes near), so a valid model is never refused. The engines call
:func:`impossible` before they read a model; the tuner calls it before shape inference.

Not covered (they need shapes, or values known only at run time): indices out of range in GatherND or
ScatterElements on OpenVINO (read or written out of bounds), and shapes that would allocate more than the machine
has (Range, ConstantOfShape, Expand, Tile).
"""

from __future__ import annotations

from typing import Any

#: no tensor has this many dimensions: an axis beyond it is damage, not a model
AXIS_LIMIT = 64
_INT32 = 2**31
_PAD_LIMIT = 2**30  # a pad (negative: a crop) of a billion elements on one side: nothing a real model does

_WINDOW_OPS = frozenset({"Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "MaxPool", "AveragePool", "LpPool"})
#: (op types, attribute, low, high): every integer of the attribute must lie in [low, high)
_ATTRIBUTE_RANGES: tuple[tuple[frozenset[str] | None, str, int, int], ...] = (
    (None, "axis", -AXIS_LIMIT, AXIS_LIMIT),
    (None, "axes", -AXIS_LIMIT, AXIS_LIMIT),
    (_WINDOW_OPS, "strides", 1, _INT32),  # OpenVINO: a stride whose low 32 bits are zero is a division by zero
    (_WINDOW_OPS, "dilations", 1, _INT32),
    (_WINDOW_OPS, "kernel_shape", 1, _INT32),
    (_WINDOW_OPS, "pads", 0, _INT32),
    (frozenset({"GatherND"}), "batch_dims", 0, AXIS_LIMIT),  # ONNX Runtime: SIGSEGV on a negative one
    (frozenset({"RoiAlign"}), "sampling_ratio", 0, _INT32),  # ONNX Runtime: abort in run()
    (frozenset({"RoiAlign"}), "output_height", 0, _INT32),
    (frozenset({"RoiAlign"}), "output_width", 0, _INT32),
    (frozenset({"Pad"}), "pads", -_PAD_LIMIT, _PAD_LIMIT),  # opset < 11: the pads are an attribute
)
#: (op type, input index, low, high): every value of that input, where it is a constant, must lie in [low, high)
_INPUT_RANGES: tuple[tuple[str, int, int, int], ...] = (
    ("Pad", 1, -_PAD_LIMIT, _PAD_LIMIT),  # OpenVINO: SIGSEGV when an output dimension wraps
    ("CenterCropPad", 1, 0, _INT32),  # OpenVINO: SIGSEGV
)


def impossible(graph: Any) -> str | None:
    """The first node of ``graph`` (an ``onnx.GraphProto``; subgraphs included) of the default domain whose
    attributes or constant inputs lie outside what ONNX allows, described (``"node 'ln1' (LayerNormalization) has
    axis -404620279021569"``), or None."""
    from onnx import AttributeProto

    constants = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            for attr in node.attribute:
                if attr.name == "value" and attr.type == AttributeProto.TENSOR:
                    constants.update((out, attr.t) for out in node.output)
    for node in graph.node:
        default = node.domain in ("", "ai.onnx")
        for attr in node.attribute:
            if attr.type == AttributeProto.GRAPH:
                found = impossible(attr.g)
            elif attr.type == AttributeProto.GRAPHS:
                found = next(filter(None, map(impossible, attr.graphs)), None)
            elif default:
                found = _attribute(node, attr, AttributeProto)
            else:
                found = None
            if found:
                return found
        if default:
            found = _split(node) or _inputs(node, constants)
            if found:
                return found
    return None


def refuse_impossible(proto: Any, description: str, engine: str) -> None:
    """Raise :class:`~xpuruntime.ModelLoadError` when :func:`impossible` finds something in ``proto`` (an
    ``onnx.ModelProto``, described as ``description``), before ``engine`` reads it."""
    found = impossible(proto.graph)
    if found:
        from xpuruntime.errors import ModelLoadError

        raise ModelLoadError(f"the model has a value ONNX does not allow, which {engine} would read and then crash "
                             "the process on", expected="attributes and constant inputs within the ranges of the "
                             "ONNX operator spec", received=f"{description}: {found}",
                             hint="the model file is damaged or was written wrongly: export it again")


def _name(node: Any) -> str:
    return f"node {node.name or node.op_type!r} ({node.op_type})"


def _attribute(node: Any, attr: Any, proto: Any) -> str | None:
    values = [attr.i] if attr.type == proto.INT else list(attr.ints) if attr.type == proto.INTS else None
    if values is None:
        return None
    for ops, name, low, high in _ATTRIBUTE_RANGES:
        if name == attr.name and (ops is None or node.op_type in ops):
            bad = [v for v in values if not low <= v < high]
            if bad:
                return f"{_name(node)} has {name} {bad[0]} (allowed: {low} to {high - 1})"
    return None


def _split(node: Any) -> str | None:
    """``Split``'s ``num_outputs`` (opset 18) must equal its number of outputs: ONNX Runtime and ``onnx``'s shape
    inference abort the process otherwise."""
    if node.op_type != "Split":
        return None
    for attr in node.attribute:
        if attr.name == "num_outputs" and attr.i != len(node.output):
            return f"{_name(node)} has num_outputs {attr.i} but {len(node.output)} outputs"
    return None


def _inputs(node: Any, constants: dict[str, Any]) -> str | None:
    for op, index, low, high in _INPUT_RANGES:
        if node.op_type != op or len(node.input) <= index or node.input[index] not in constants:
            continue
        tensor = constants[node.input[index]]
        if tensor.data_location != 0 or not tensor.dims or len(tensor.dims) != 1 or tensor.dims[0] > AXIS_LIMIT * 2:
            continue  # external data, or not a short list of integers: nothing to read here
        from onnx import numpy_helper

        try:
            values = [int(v) for v in numpy_helper.to_array(tensor).reshape(-1)]
        except (TypeError, ValueError):  # not integers (a damaged tensor): the engine says what it says
            continue
        bad = [v for v in values if not low <= v < high]
        if bad:
            return f"{_name(node)} has the constant input {node.input[index]!r} holding {bad[0]} (allowed: {low} " \
                   f"to {high - 1})"
    return None
