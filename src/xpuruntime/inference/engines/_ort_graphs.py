"""CUDA graphs on ONNX Runtime: one persistent IO binding whose device buffers never move.

ONNX Runtime replays a captured CUDA graph on the addresses it captured, so under
``cuda_graphs=True`` host feeds are copied into buffers allocated once (``update_inplace``),
outputs land in buffers allocated once, and device feeds must be the same tensors every run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from xpuruntime.errors import InputError, UnsupportedOperationError
from xpuruntime.inference.feeds import DeviceArray

__all__ = ["GraphBinding"]


class GraphBinding:
    """The binding of one CUDA-graph session, built on its first run."""

    def __init__(self, ort: Any, session: Any, proto: Any, device_id: int) -> None:
        self.ort, self.session, self.proto, self.device_id = ort, session, proto, device_id
        self.binding: Any = None
        self.inputs: dict[str, Any] = {}
        self.outputs: dict[str, Any] = {}
        self.pointers: dict[str, int] = {}

    def run(self, feeds: dict[str, Any], names: Sequence[str], run: Any) -> list[Any]:
        if self.binding is None:
            self._build(feeds, names)
        self._update(feeds)
        run(self.binding)
        return [self.outputs[n].numpy() for n in names]

    def _build(self, feeds: dict[str, Any], names: Sequence[str]) -> None:
        self.binding = self.session.io_binding()
        for name, value in feeds.items():
            if isinstance(value, DeviceArray):
                self.binding.bind_input(name, "cuda", value.device_id, value.dtype, list(value.shape), value.ptr)
                self.pointers[name] = value.ptr
            else:
                ov = self.ort.OrtValue.ortvalue_from_numpy(value, "cuda", self.device_id)
                self.inputs[name] = ov
                self.binding.bind_ortvalue_input(name, ov)
        shapes = _output_shapes(self.proto, {n: tuple(v.shape) for n, v in feeds.items()}, names)
        for name in names:
            dtype = np.dtype(_output_dtype(self.session, name))
            ov = self.ort.OrtValue.ortvalue_from_shape_and_type(list(shapes[name]), dtype, "cuda", self.device_id)
            self.outputs[name] = ov
            self.binding.bind_ortvalue_output(name, ov)

    def _update(self, feeds: dict[str, Any]) -> None:
        for name, value in feeds.items():
            if isinstance(value, DeviceArray):
                if value.ptr != self.pointers.get(name):
                    raise InputError(f"input {name!r} moved to another device buffer between CUDA-graph runs",
                                     expected="the same tensor every run (update it in place)",
                                     received=f"a tensor at 0x{value.ptr:x}",
                                     hint="copy new data into the first tensor: x.copy_(new_x)")
            elif tuple(value.shape) != tuple(self.inputs[name].shape()):
                raise InputError(f"input {name!r} changed shape under cuda_graphs",
                                 expected=f"shape {list(self.inputs[name].shape())} (captured)",
                                 received=f"shape {list(value.shape)}", hint="use one session per shape")
            else:
                self.inputs[name].update_inplace(value)


def _output_dtype(session: Any, name: str) -> str:
    from xpuruntime.inference.engines.onnxruntime import _ORT_TYPES

    return next(_ORT_TYPES[o.type] for o in session.get_outputs() if o.name == name)


def _output_shapes(proto: Any, input_shapes: dict[str, tuple[int, ...]], names: Sequence[str]) -> dict[str, tuple]:
    """Static output shapes for the given input shapes, by ONNX shape inference."""
    import onnx

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    for inp in model.graph.input:
        if inp.name in input_shapes:
            for dim, size in zip(inp.type.tensor_type.shape.dim, input_shapes[inp.name]):
                dim.Clear()
                dim.dim_value = int(size)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    shapes = {o.name: tuple(d.dim_value if d.HasField("dim_value") else -1 for d in o.type.tensor_type.shape.dim)
              for o in inferred.graph.output}
    for name in names:
        if name not in shapes or any(d < 0 for d in shapes[name]):
            raise UnsupportedOperationError(f"cuda_graphs needs a static shape for output {name!r}",
                                            expected="outputs whose shapes follow from the input shapes",
                                            received=f"{shapes.get(name)}", hint="set fixed_shapes, or cuda_graphs=False")
    return shapes
