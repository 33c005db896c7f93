"""A TorchFunctionMode that watches tunable torch calls (it changes nothing) for ``tuner.recording``."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F

from xpuruntime.kernels.torch_ops import dtype_name

__all__ = ["Observer"]

_LOW_PRECISION = {"linear", "matmul", "mm", "bmm", "attention"}  # ops autocast runs in its lower dtype


class Observer(torch.overrides.TorchFunctionMode):
    """Calls ``sink(target)`` for each F.linear / matmul / @ / mm / bmm / SDPA / layer_norm call, then runs it."""

    def __init__(self, sink: Callable[[Any], None]) -> None:
        super().__init__()
        self.sink = sink
        self.table: dict[Any, Callable[..., Any]] = {
            F.linear: _linear, torch.matmul: _matmul, torch.Tensor.matmul: _matmul, torch.Tensor.__matmul__: _matmul,
            torch.mm: _matmul, torch.bmm: _matmul, F.scaled_dot_product_attention: _attention,
            F.layer_norm: _layer_norm,
        }

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        describe = self.table.get(func)
        if describe is not None:
            try:
                self.sink(describe(tuple(args), kwargs))
            except Exception:  # noqa: BLE001 - watching must never break the workload
                pass
        return func(*args, **kwargs)


def _target(op: str, kind: str, tensor: Any, dims: dict[str, int], options: dict[str, Any]) -> Any:
    from xpuruntime.kernels.tuner import Target

    name = dtype_name(tensor.dtype)
    device = tensor.device.type
    if kind in _LOW_PRECISION and torch.is_autocast_enabled(device):
        name = dtype_name(torch.get_autocast_dtype(device))
    if name not in ("fp32", "fp16", "bf16", "fp64"):
        return None
    return Target(op, name, device, dims, options)


def _layout(t: Any) -> str:
    if t.dim() < 2 or t.stride(-1) == 1 or t.shape[-1] == 1:
        return "row"
    return "col" if t.stride(-2) == 1 else "row"  # neither: the kernels copy it to row-major


def _arg(args: tuple, kwargs: Mapping[str, Any], index: int, name: str, default: Any = None) -> Any:
    return args[index] if len(args) > index else kwargs.get(name, default)


def _linear(args: tuple, kwargs: Mapping[str, Any]) -> Any:
    x, w = _arg(args, kwargs, 0, "input"), _arg(args, kwargs, 1, "weight")
    if x.dim() < 1 or w.dim() != 2:
        return None
    dims = {"batch": 1, "m": math.prod(x.shape[:-1]), "n": w.shape[0], "k": w.shape[1]}
    return _target("matmul", "linear", x, dims, {"layout": ["row", "col" if w.stride(-1) == 1 else "row"]})


def _matmul(args: tuple, kwargs: Mapping[str, Any]) -> Any:
    a, b = _arg(args, kwargs, 0, "input"), _arg(args, kwargs, 1, "other", _arg(args, kwargs, 1, "mat2"))
    if a is None or b is None or a.dim() < 2 or b.dim() < 2:
        return None
    if b.dim() == 2:
        dims = {"batch": 1, "m": math.prod(a.shape[:-1]), "n": b.shape[-1], "k": a.shape[-1]}
        return _target("matmul", "matmul", a, dims, {"layout": ["row", _layout(b)]})
    batch = math.prod(torch.broadcast_shapes(a.shape[:-2], b.shape[:-2]))
    dims = {"batch": batch, "m": a.shape[-2], "n": b.shape[-1], "k": a.shape[-1]}
    return _target("matmul", "matmul", a, dims, {"layout": [_layout(a), _layout(b)]})


def _attention(args: tuple, kwargs: Mapping[str, Any]) -> Any:
    q, k = _arg(args, kwargs, 0, "query"), _arg(args, kwargs, 1, "key")
    if q.dim() != 4:
        return None
    dims = {"batch": q.shape[0], "heads": q.shape[1], "seq_q": q.shape[2], "seq_k": k.shape[2], "head_dim": q.shape[3]}
    return _target("attention", "attention", q, dims, {"is_causal": bool(_arg(args, kwargs, 5, "is_causal", False))})


def _layer_norm(args: tuple, kwargs: Mapping[str, Any]) -> Any:
    x, shape = _arg(args, kwargs, 0, "input"), _arg(args, kwargs, 1, "normalized_shape")
    if len(tuple(shape)) != 1:
        return None
    hidden = x.shape[-1]
    return _target("layernorm", "layernorm", x, {"rows": x.numel() // max(1, hidden), "hidden": hidden}, {})
