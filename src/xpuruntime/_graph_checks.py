"""Attribute values ONNX does not allow, that an engine reads anyway and then crashes the process on.

Found by fuzzing the engines with damaged models and extreme attribute values in child processes (README,
"Reliability"): OpenVINO 2026.4 reads and compiles each of these and then dies (SIGSEGV, SIGFPE) or hangs in its
reader; ONNX Runtime 1.32 aborts on some; ``onnx.shape_inference`` itself aborts on a ``Split`` whose
``num_outputs`` is not its number of outputs. Each rule is the ONNX operator spec's own range (or, for a tensor's
rank or a pad, a bound no real model comes near), so a valid model is never refused. The engines call
:func:`impossible` before they read a model; the tuner calls it before shape inference.

Constant indices of GatherND and ScatterElements (OpenVINO reads or writes out of bounds with them, and crashes) are
checked against the data's dimension where the data is a graph input or initializer of static shape, else against
the int32 range. A ``ConstantOfShape`` or ``Range`` of constant inputs whose output would take more than one tensor may
(``XPURUNTIME_MAX_INPUT_BYTES``; the engines pass it) is refused too. Not covered: such indices computed at run
time, and outputs too big for memory made from shapes known only at run time or by Expand and Tile.
"""

from __future__ import annotations

import math
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


def impossible(graph: Any, budget: int | None = None) -> str | None:
    """The first node of ``graph`` (an ``onnx.GraphProto``; subgraphs included) of the default domain whose
    attributes or constant inputs lie outside what ONNX allows, described (``"node 'ln1' (LayerNormalization) has
    axis -404620279021569"``), or None. With ``budget`` (bytes), also a ``ConstantOfShape`` or ``Range`` of
    constant inputs whose output alone would take more (an engine allocates it and the process is killed for
    memory)."""
    from onnx import AttributeProto

    constants = {t.name: t for t in graph.initializer}
    shapes = {t.name: list(t.dims) for t in graph.initializer}
    for value in graph.input:
        dims = value.type.tensor_type.shape.dim if value.type.HasField("tensor_type") else []
        shapes.setdefault(value.name, [d.dim_value if d.HasField("dim_value") else None for d in dims])
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            for attr in node.attribute:
                if attr.name == "value" and attr.type == AttributeProto.TENSOR:
                    constants.update((out, attr.t) for out in node.output)
    for node in graph.node:
        default = node.domain in ("", "ai.onnx")
        for attr in node.attribute:
            if attr.type == AttributeProto.GRAPH:
                found = impossible(attr.g, budget)
            elif attr.type == AttributeProto.GRAPHS:
                found = next(filter(None, (impossible(g, budget) for g in attr.graphs)), None)
            elif default:
                found = _attribute(node, attr, AttributeProto)
            else:
                found = None
            if found:
                return found
        if default:
            found = _split(node) or _inputs(node, constants) or _indices(node, constants, shapes) or \
                (_too_big(node, constants, budget) if budget else None)
            if found:
                return found
    return None


def refuse_impossible(proto: Any, description: str, engine: str, budget: int | None = None) -> None:
    """Raise :class:`~xpuruntime.ModelLoadError` when :func:`impossible` finds something in ``proto`` (an
    ``onnx.ModelProto``, described as ``description``), before ``engine`` reads it."""
    found = impossible(proto.graph, budget)
    if found:
        from xpuruntime.errors import ModelLoadError

        raise ModelLoadError(f"the model holds a value that {engine} would read and then crash the process on",
                             expected="attributes and constant inputs within the ranges of the ONNX operator spec, "
                             "and outputs of constant shape within XPURUNTIME_MAX_INPUT_BYTES",
                             received=f"{description}: {found}", hint="the model file is damaged or was written "
                             "wrongly: export it again (or raise XPURUNTIME_MAX_INPUT_BYTES for a tensor that "
                             "big)")


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


def _small_ints(tensor: Any, most: int) -> list[int] | None:
    """The values of a constant numeric tensor of at most ``most`` elements, as integers, else None."""
    count = 1
    for dim in tensor.dims:
        count *= dim
    if tensor.data_location != 0 or count > most:
        return None  # external data, or too big to read here: the engine says what it says
    from onnx import numpy_helper

    try:
        array = numpy_helper.to_array(tensor)
        return [int(v) for v in array.reshape(-1)] if array.dtype.kind in "iuf" else None
    except (TypeError, ValueError, OverflowError):  # a damaged tensor, or NaN / inf where integers belong
        return None


def _indices(node: Any, constants: dict[str, Any], shapes: dict[str, list[int | None]]) -> str | None:
    """Constant indices of GatherND / ScatterElements within the dimension they index ([-d, d)), where the data's
    shape is static; else within int32. OpenVINO 2026.4 reads (GatherND) or writes (ScatterElements) out of bounds
    with them and crashes the process, now or later."""
    if node.op_type not in ("GatherND", "ScatterElements") or len(node.input) < 2 or node.input[1] not in constants:
        return None
    tensor = constants[node.input[1]]
    values = _small_ints(tensor, 1 << 16)
    if values is None:
        return None
    data = shapes.get(node.input[0]) or []
    attrs = {a.name: a.i for a in node.attribute}
    if node.op_type == "ScatterElements":
        axis = attrs.get("axis", 0)
        axis = axis + len(data) if axis < 0 else axis
        bounds = [data[axis] if 0 <= axis < len(data) else None] * len(values)
    else:  # index position j of the last dimension addresses data dimension batch_dims + j
        last, start = (tensor.dims[-1] if tensor.dims else 1), attrs.get("batch_dims", 0)
        bounds = [data[start + i % last] if last and start + i % last < len(data) else None
                  for i in range(len(values))]
    for value, dim in zip(values, bounds):
        low, high = (-dim, dim) if dim else (-_INT32, _INT32)
        if not low <= value < high:
            return f"{_name(node)} has the constant index {value} for a dimension of {dim or 'unknown size'} " \
                   f"(allowed: {low} to {high - 1})"
    return None


def _too_big(node: Any, constants: dict[str, Any], budget: int) -> str | None:
    """A ``ConstantOfShape`` or ``Range`` whose constant inputs make an output of more than ``budget`` bytes."""
    if node.op_type == "ConstantOfShape" and node.input and node.input[0] in constants:
        shape = _small_ints(constants[node.input[0]], AXIS_LIMIT)
        value = next((a.t for a in node.attribute if a.name == "value"), None)
        from onnx import helper

        size = helper.tensor_dtype_to_np_dtype(value.data_type).itemsize if value is not None else 4
        count = 1
        for dim in shape or [0]:
            count *= max(dim, 0)
    elif node.op_type == "Range" and len(node.input) == 3 and all(i in constants for i in node.input):
        start, limit, delta = (_scalar(constants[i]) for i in node.input)
        if None in (start, limit, delta) or not delta:
            return None
        count = max(math.ceil((limit - start) / delta), 0)  # type: ignore[operator]
        size = 8
    else:
        return None
    if count * size > budget:
        return f"{_name(node)} makes a tensor of {count * size} bytes from constants, more than the {budget} " \
               f"bytes one tensor may take (XPURUNTIME_MAX_INPUT_BYTES)"
    return None


def _scalar(tensor: Any) -> float | None:
    from onnx import numpy_helper

    if tensor.data_location != 0 or len(tensor.dims) > 1 or (tensor.dims and tensor.dims[0] != 1):
        return None
    try:
        return float(numpy_helper.to_array(tensor).reshape(-1)[0])
    except (TypeError, ValueError, IndexError):
        return None


def _inputs(node: Any, constants: dict[str, Any]) -> str | None:
    for op, index, low, high in _INPUT_RANGES:
        if node.op_type != op or len(node.input) <= index or node.input[index] not in constants:
            continue
        tensor = constants[node.input[index]]
        values = _small_ints(tensor, AXIS_LIMIT * 2) if len(tensor.dims) == 1 else None
        if values is None:
            continue  # external data, or not a short list of numbers: the engine says what it says
        bad = [v for v in values if not low <= v < high]
        if bad:
            return f"{_name(node)} has the constant input {node.input[index]!r} holding {bad[0]} (allowed: {low} " \
                   f"to {high - 1})"
    return None
