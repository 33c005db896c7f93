"""Kernels torch has no switch for (a Triton LayerNorm or GEMM), served by :mod:`xpuruntime.kernels`.

The translation table asks :func:`available` whether the kernel registry serves ``(op, kernel)``. While a
policy naming one is active, :func:`routing` sends the matching torch calls to the registry's custom ops
through a ``TorchFunctionMode`` (thread-local, like autocast): ``F.layer_norm`` over the last dim ->
``xpuruntime.kernels.layer_norm``; ``F.linear``, ``torch.matmul`` and ``@`` -> ``xpuruntime.kernels.matmul``.
Those ops ask the kernels dispatcher, per call, which kernel of the active policy's list applies (the
policy is shared: ``policy()`` enters ``xpuruntime.kernels.use_policy``), and log the decision, which is
what profiled receipts read (:func:`dispatch_records`).

An op routed only for its per-shape rules (a tuned policy: ``prefer`` is a torch switch, rules pin kernels for
some shapes) is routed only for calls whose shape matches a rule; every other call stays torch's own (routing every linear through the custom op cost a GPT-2 training step about half
its speed).
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch

__all__ = ["available", "unavailable", "routing", "shared_policy", "dispatch_records", "CUSTOM_OPS"]

# profiler names of the registry's custom ops -> vocabulary op
CUSTOM_OPS = {"xpuruntime::layer_norm": "layernorm", "xpuruntime::layer_norm_backward": "layernorm",
              "xpuruntime::matmul": "matmul", "xpuruntime::matmul_with_kernel": "matmul"}


def _module() -> Any:
    try:
        return importlib.import_module("xpuruntime.kernels")
    except ImportError:
        return None


def available(op: str, kernel: str) -> bool:
    """Whether xpuruntime.kernels serves ``kernel`` for ``op``: registered, and the modules it needs importable
    (it may still skip a call, with a reason)."""
    mod = _module()
    if mod is None or op not in ("layernorm", "matmul"):
        return False
    try:
        impl = mod.get_registry().find(op, kernel)
    except Exception:  # a registry that does not know the op
        return False
    return impl is not None and impl.availability() is None


def unavailable(op: str, kernel: str) -> str | None:
    """Why a kernel registered in xpuruntime.kernels cannot run here (a module it needs is missing), else None."""
    mod = _module()
    try:
        impl = mod.get_registry().find(op, kernel) if mod is not None else None
    except Exception:  # a registry that does not know the op
        return None
    return impl.availability() if impl is not None else None


@contextlib.contextmanager
def shared_policy(policy: Any, *, persistent: bool = False) -> Iterator[None]:
    """Make ``policy`` the one xpuruntime.kernels dispatches by, for the block."""
    mod = _module()
    if mod is None:
        yield
        return
    with mod.use_policy(policy):
        yield


def shared_policy_var(policy: Any) -> tuple[Any, Any] | None:
    """``(ContextVar, coerced policy)``: what :func:`shared_policy` sets, for an engine's every run to set itself
    (one ``ContextVar.set`` and ``reset``, no context object); None without xpuruntime.kernels."""
    mod = _module()
    if mod is None:
        return None
    from xpuruntime.kernels import active

    return active._scoped, mod.use_policy(policy).policy


def set_shared_default(policy: Any) -> Any:
    """The process default of xpuruntime.kernels (``set_kernel_policy``); returns the previous one."""
    mod = _module()
    return mod.set_active_policy(policy) if mod is not None else None


@contextlib.contextmanager
def dispatch_records() -> Iterator[list[Any]]:
    """The kernels dispatcher's decisions made inside the block (empty when xpuruntime.kernels is absent)."""
    mod = _module()
    if mod is None:
        yield []
        return
    with mod.dispatch_logging() as records:
        yield records


def _arg(args: tuple[Any, ...], kwargs: Mapping[str, Any], index: int, name: str, default: Any = None) -> Any:
    return args[index] if len(args) > index else kwargs.get(name, default)


def _layer_norm(func: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any], mod: Any) -> Any:
    shape = _arg(args, kwargs, 1, "normalized_shape")
    if len(tuple(shape)) != 1:  # the registry's kernels normalise over the last dim only
        return func(*args, **kwargs)
    return mod.layer_norm(_arg(args, kwargs, 0, "input"), _arg(args, kwargs, 2, "weight"),
                          _arg(args, kwargs, 3, "bias"), float(_arg(args, kwargs, 4, "eps", 1e-5)))


def _autocast(*tensors: Any) -> list[Any]:
    """What autocast does to a matmul's operands (custom ops are not on its lists): its dtype, when it is on."""
    device = tensors[0].device.type
    if not torch.is_autocast_enabled(device):
        return list(tensors)
    dtype = torch.get_autocast_dtype(device)
    return [t.to(dtype) if t is not None and t.is_floating_point() else t for t in tensors]


def _linear(func: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any], mod: Any) -> Any:
    x, weight, bias = _autocast(_arg(args, kwargs, 0, "input"), _arg(args, kwargs, 1, "weight"),
                                _arg(args, kwargs, 2, "bias"))
    out = mod.matmul(x, weight.t())
    return out if bias is None else out + bias


def _matmul(func: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any], mod: Any) -> Any:
    if kwargs.get("out") is not None:
        return func(*args, **kwargs)
    return mod.matmul(*_autocast(_arg(args, kwargs, 0, "input"), _arg(args, kwargs, 1, "other")))


RULES_ONLY = "per-shape rules"  # plan.custom's value for an op routed for its rules only (see _translate)


def _prod(shape: Any) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _call_dims(op: str, func: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> tuple[Any, dict[str, int]]:
    """``(first tensor, dims)`` of a call as the dispatcher sees it (GEMM m x n x k with batch; rows x hidden)."""
    a = _arg(args, kwargs, 0, "input")
    if op == "layernorm":
        return a, {"rows": _prod(a.shape[:-1]), "hidden": int(a.shape[-1])}
    if func is torch.nn.functional.linear:
        w = _arg(args, kwargs, 1, "weight")
        return a, {"batch": 1, "m": _prod(a.shape[:-1]), "n": int(w.shape[0]), "k": int(a.shape[-1])}
    b = _arg(args, kwargs, 1, "other")
    if b.dim() <= 2 or a.dim() <= 1:
        return a, {"batch": 1, "m": _prod(a.shape[:-1]), "n": int(b.shape[-1]), "k": int(a.shape[-1])}
    batch = _prod(torch.broadcast_shapes(a.shape[:-2], b.shape[:-2]))
    return a, {"batch": batch, "m": int(a.shape[-2]), "n": int(b.shape[-1]), "k": int(a.shape[-1])}


def _rule_applies(op: str, func: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any], mod: Any) -> bool:
    """Whether a rule of the active policy matches this call (then the dispatcher decides it)."""
    from xpuruntime.kernels.torch_ops import dtype_name

    try:
        first, dims = _call_dims(op, func, args, kwargs)
        dtype = torch.get_autocast_dtype(first.device.type) if torch.is_autocast_enabled(first.device.type) \
            else first.dtype
        kernels, _, index = mod.active_policy().kernels.preference(op).match(dtype_name(dtype), dims)
    except Exception:  # an unusual call (no tensors, odd shapes): let the custom op decide, as before
        return True
    return index is not None


_ROUTES: dict[str, dict[Any, Callable[..., Any]]] = {
    "layernorm": {torch.nn.functional.layer_norm: _layer_norm},
    "matmul": {torch.nn.functional.linear: _linear, torch.matmul: _matmul, torch.Tensor.matmul: _matmul},
}


class _Router(torch.overrides.TorchFunctionMode):
    def __init__(self, table: Mapping[Any, Callable[..., Any]], mod: Any, rules_only: Mapping[Any, str]) -> None:
        super().__init__()
        self.table, self.mod, self.rules_only = table, mod, rules_only

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        route = self.table.get(func)
        if route is None:
            return func(*args, **kwargs)
        op = self.rules_only.get(func)
        if op is not None and not _rule_applies(op, func, tuple(args), kwargs, self.mod):
            return func(*args, **kwargs)
        return route(func, tuple(args), kwargs, self.mod)


@contextlib.contextmanager
def routing(custom: Mapping[str, str]) -> Iterator[None]:
    """Route the torch calls of the ops in ``custom`` (op -> kernel) to xpuruntime.kernels inside the block."""
    mod = _module() if custom else None
    table = {func: route for op in custom for func, route in _ROUTES.get(op, {}).items()} if mod else {}
    if not table:
        yield
        return
    rules_only = {func: op for op, kernel in custom.items() if kernel == RULES_ONLY for func in _ROUTES.get(op, {})}
    with _Router(table, mod, rules_only):
        yield
