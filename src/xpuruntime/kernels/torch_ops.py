"""PyTorch custom ops that run the kernel the active policy chooses: ``layer_norm`` and ``matmul``.

>>> import torch, xpuruntime.kernels as xk
>>> x, w, b = torch.randn(4, 768), torch.ones(768), torch.zeros(768)
>>> with xk.use_policy({"kernels": {"layernorm": ["triton", "native"]}}):
...     y = xk.layer_norm(x, w, b)            # native on the CPU: triton is skipped with its reason
>>> torch.allclose(y, torch.nn.functional.layer_norm(x, (768,), w, b))
True

The ops are ``torch.library.custom_op``s (``torch.ops.xpuruntime.layer_norm``, ``.matmul``) with fake
(meta) implementations and autograd formulas, so they work under autograd and ``torch.compile`` without
graph breaks. The kernel is chosen *when the op runs*, inside it: eager or compiled, every call follows the
active policy at that moment and is logged (with its GPU time when timing is on). The forward's choice
travels to the backward as a small CPU tensor holding the kernel's id, so the backward runs the same kernel
even when the policy scope has closed or autograd runs it on another thread.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from xpuruntime.errors import InputError
from xpuruntime.kernels import dispatcher as _dispatch
from xpuruntime.kernels.registry import DispatchContext, KernelImpl, get_registry

__all__ = ["layer_norm", "matmul", "dtype_name", "native_layer_norm_forward", "native_layer_norm_backward",
           "torch_matmul", "cublas_matmul", "cublaslt_matmul", "blas_library"]

_DTYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.float64: "fp64",
           torch.int8: "int8", torch.float8_e4m3fn: "fp8", torch.float8_e5m2: "fp8"}
_REDUCED = (torch.float16, torch.bfloat16)


def dtype_name(dtype: torch.dtype) -> str:
    """The vocabulary's name for a torch dtype (``torch.bfloat16`` -> ``"bf16"``), else torch's own."""
    return _DTYPES.get(dtype) or str(dtype).removeprefix("torch.")


# -- the public functions ----------------------------------------------------------------------------------
def layer_norm(x: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None,
               eps: float = 1e-5, *, training: bool | None = None) -> torch.Tensor:
    """LayerNorm over the last dim with the kernel the active policy picks (``layernorm=native|triton``).

    ``training`` (default: whether a gradient will be needed) is passed to the dispatcher for kernel rules.

    >>> y = layer_norm(torch.randn(2, 8), torch.ones(8), torch.zeros(8))
    """
    _check_layer_norm(x, weight, bias)
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias))
    return torch.ops.xpuruntime.layer_norm(x, weight, bias, float(eps), needs_grad,
                                           needs_grad if training is None else bool(training))[0]


def matmul(a: torch.Tensor, b: torch.Tensor, *, training: bool | None = None) -> torch.Tensor:
    """``torch.matmul`` semantics with the kernel the active policy picks (``matmul=default|cublas|triton``).

    >>> matmul(torch.randn(2, 3, 4), torch.randn(4, 5)).shape
    torch.Size([2, 3, 5])
    """
    _check_matmul(a, b)
    needs_grad = torch.is_grad_enabled() and (a.requires_grad or b.requires_grad)
    a2 = a.unsqueeze(0) if a.dim() == 1 else a
    b2 = b.unsqueeze(-1) if b.dim() == 1 else b
    out = torch.ops.xpuruntime.matmul(a2, b2, needs_grad, needs_grad if training is None else bool(training))[0]
    out = out.squeeze(-2) if a.dim() == 1 else out
    return out.squeeze(-1) if b.dim() == 1 else out


def _check_layer_norm(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None) -> None:
    if x.dim() == 0:
        raise InputError("layer_norm needs at least one dim", expected="a tensor (..., hidden)",
                         received="a 0-d tensor")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and tuple(t.shape) != (x.shape[-1],):
            raise InputError(f"layer_norm {name} does not match the last dim of x",
                             expected=f"shape ({x.shape[-1]},)", received=f"shape {tuple(t.shape)}")


def _check_matmul(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.dim() == 0 or b.dim() == 0:
        raise InputError("matmul needs operands with at least one dim", expected="1-D or more",
                         received=f"shapes {tuple(a.shape)} and {tuple(b.shape)}")
    k_b = b.shape[0] if b.dim() == 1 else b.shape[-2]
    if a.shape[-1] != k_b:
        raise InputError("matmul operands do not line up", expected=f"b with {a.shape[-1]} rows (a's last dim)",
                         received=f"shapes {tuple(a.shape)} and {tuple(b.shape)}")


# -- built-in torch implementations (the registry names them as "module:function") -------------------------
def native_layer_norm_forward(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                              eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PyTorch's LayerNorm on 2-D ``x``: ``(y, mean, rstd)`` with statistics in fp32 (fp64 for fp64 input)."""
    y, mean, rstd = torch.native_layer_norm(x, [x.shape[-1]], weight, bias, eps)
    stat = _stat_dtype(x.dtype)
    return y, mean.reshape(-1).to(stat), rstd.reshape(-1).to(stat)


def native_layer_norm_backward(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor | None,
                               bias: torch.Tensor | None, mean: torch.Tensor,
                               rstd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """PyTorch's LayerNorm backward from saved statistics: ``(dx, dweight, dbias)``."""
    stat = x.dtype if x.dtype in _REDUCED and x.device.type == "cpu" else mean.dtype  # what aten saved there
    mean, rstd = mean.reshape(-1, 1).to(stat), rstd.reshape(-1, 1).to(stat)
    mask = [True, weight is not None, bias is not None]
    return tuple(torch.ops.aten.native_layer_norm_backward(dy, x, [x.shape[-1]], mean, rstd, weight, bias, mask))


def torch_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``torch.matmul``: PyTorch's own choice of BLAS kernel."""
    return torch.matmul(a, b)


_blas_lock = threading.RLock()


@contextlib.contextmanager
def blas_library(name: str) -> Iterator[None]:
    """``torch.backends.cuda.preferred_blas_library(name)`` for the block, then the previous one again.

    The switch is process-global in torch: another thread's matmul launched inside the block sees it too
    (xpuruntime's own blas kernels take a lock, so two of them never interleave).
    """
    with _blas_lock:
        previous = torch.backends.cuda.preferred_blas_library()
        torch.backends.cuda.preferred_blas_library(name)
        try:
            yield
        finally:
            torch.backends.cuda.preferred_blas_library(previous)


def cublas_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``torch.matmul`` with cuBLAS as torch's BLAS library for this call."""
    with blas_library("cublas"):
        return torch.matmul(a, b)


def cublaslt_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``torch.matmul`` with cuBLASLt as torch's BLAS library for this call."""
    with blas_library("cublaslt"):
        return torch.matmul(a, b)


def _stat_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


# -- kernel ids: how the forward's choice reaches the backward ----------------------------------------------
_ids_lock = threading.Lock()
_id_names: list[tuple[str, str]] = []
_name_ids: dict[tuple[str, str], int] = {}


def _kernel_id(op: str, kernel: str) -> torch.Tensor:
    index = _name_ids.get((op, kernel))
    if index is None:
        with _ids_lock:
            index = _name_ids.setdefault((op, kernel), len(_id_names))
            if index == len(_id_names):
                _id_names.append((op, kernel))
    return torch.scalar_tensor(index, dtype=torch.int32)


def _kernel_of(op: str, kernel_id: torch.Tensor) -> KernelImpl:
    return get_registry().get(op, _id_names[int(kernel_id)][1])


def _ctx(op: str, tensors: Sequence[torch.Tensor], dims: dict[str, int], requires_grad: bool,
         training: bool) -> DispatchContext:
    first = tensors[0]
    return DispatchContext(op, device=first.device.type, dtype=dtype_name(first.dtype), dims=dims,
                           shapes=tuple(tuple(t.shape) for t in tensors), requires_grad=requires_grad,
                           training=training, strides=tuple(tuple(t.stride()) for t in tensors))


def _run(ctx: DispatchContext, selection: _dispatch.Selection, fn: Callable[..., Any], *args: Any,
         phase: str = "forward") -> Any:
    """Call ``fn``; when logging, record the decision (with CUDA-event GPU time when timing is on)."""
    if not _dispatch.dispatch_logging_enabled():
        return fn(*args)
    ms = None
    if _dispatch.dispatch_timing_enabled() and ctx.device == "cuda" and not torch.cuda.is_current_stream_capturing():
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = fn(*args)
        end.record()
        end.synchronize()
        ms = start.elapsed_time(end)
    else:
        out = fn(*args)
    _dispatch.log_dispatch(ctx, selection, phase=phase, gpu_time_ms=ms)
    return out


def _backward_selection(impl: KernelImpl, used: KernelImpl) -> _dispatch.Selection:
    if used is impl:
        return _dispatch.Selection(impl.name, "the kernel the forward ran")
    return _dispatch.Selection(used.name, f"the forward ran {impl.name}, which has no backward: {used.name}'s")


# -- xpuruntime::layer_norm -----------------------------------------------------------------------------------
@torch.library.custom_op("xpuruntime::layer_norm", mutates_args=())
def _layer_norm_op(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float,
                   requires_grad: bool, training: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                 torch.Tensor]:
    hidden = x.shape[-1]
    x2 = _rows(x)
    ctx = _ctx("layernorm", [x], {"rows": x2.shape[0], "hidden": hidden}, requires_grad, training)
    selection = _dispatch.get_dispatcher().select("layernorm", ctx, log=False)
    impl = _dispatch.get_dispatcher().impl(ctx.op, selection)
    y, mean, rstd = _run(ctx, selection, impl.bind(selection.params), x2, weight, bias, eps)
    stats = x.shape[:-1]
    return y.reshape(x.shape), mean.reshape(stats), rstd.reshape(stats), _kernel_id("layernorm", impl.name)


def _rows(t: torch.Tensor) -> torch.Tensor:
    """``t`` as (rows, hidden) with unit stride along hidden (a view when possible)."""
    t2 = t.reshape(-1, t.shape[-1])
    return t2 if t2.stride(-1) == 1 or t2.numel() == 0 else t2.contiguous()


@_layer_norm_op.register_fake
def _(x, weight, bias, eps, requires_grad, training):
    stats = x.new_empty(x.shape[:-1], dtype=_stat_dtype(x.dtype))
    return torch.empty_like(x), stats, torch.empty_like(stats), torch.empty((), dtype=torch.int32, device="cpu")


def _layer_norm_setup(ctx: Any, inputs: tuple[Any, ...], output: tuple[Any, ...]) -> None:
    x, weight, bias = inputs[:3]
    _, mean, rstd, kernel_id = output
    ctx.mark_non_differentiable(mean, rstd, kernel_id)
    ctx.save_for_backward(x, weight, bias, mean, rstd, kernel_id)


def _layer_norm_backward(ctx: Any, dy: torch.Tensor, *_: Any) -> tuple[Any, ...]:
    x, weight, bias, mean, rstd, kernel_id = ctx.saved_tensors
    dx, dw, db = torch.ops.xpuruntime.layer_norm_backward(dy, x, weight, bias, mean, rstd, kernel_id)
    return dx, dw if weight is not None else None, db if bias is not None else None, None, None, None


_layer_norm_op.register_autograd(_layer_norm_backward, setup_context=_layer_norm_setup)


@torch.library.custom_op("xpuruntime::layer_norm_backward", mutates_args=())
def _layer_norm_backward_op(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor | None,
                            bias: torch.Tensor | None, mean: torch.Tensor, rstd: torch.Tensor,
                            kernel_id: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    hidden = x.shape[-1]
    impl = _kernel_of("layernorm", kernel_id)
    used = impl if impl.backward is not None else get_registry().default("layernorm")
    x2, dy2 = _rows(x), _rows(dy)
    ctx = _ctx("layernorm", [dy, x], {"rows": x2.shape[0], "hidden": hidden}, True, True)
    dx, dw, db = _run(ctx, _backward_selection(impl, used), used.load_backward(), dy2, x2, weight, bias,
                      mean.reshape(-1), rstd.reshape(-1), phase="backward")
    empty = x.new_empty(0)
    return dx.reshape(x.shape), empty if dw is None else dw, empty.clone() if db is None else db


@_layer_norm_backward_op.register_fake
def _(dy, x, weight, bias, mean, rstd, kernel_id):
    dw = torch.empty_like(weight) if weight is not None else x.new_empty(0)
    db = torch.empty_like(bias) if bias is not None else x.new_empty(0)
    return torch.empty_like(x), dw, db


# -- xpuruntime::matmul ---------------------------------------------------------------------------------------
def _mm_dims(a: torch.Tensor, b: torch.Tensor) -> dict[str, int]:
    """GEMM dims: a 2-D ``b`` folds ``a``'s batch dims into ``m`` (one GEMM, as torch and the receipts count it)."""
    if b.dim() == 2:
        m = 1
        for d in a.shape[:-1]:
            m *= d
        return {"batch": 1, "m": m, "n": b.shape[-1], "k": a.shape[-1]}
    batch = 1
    for d in torch.broadcast_shapes(a.shape[:-2], b.shape[:-2]):
        batch *= d
    return {"batch": batch, "m": a.shape[-2], "n": b.shape[-1], "k": a.shape[-1]}


@torch.library.custom_op("xpuruntime::matmul", mutates_args=())
def _matmul_op(a: torch.Tensor, b: torch.Tensor, requires_grad: bool,
               training: bool) -> tuple[torch.Tensor, torch.Tensor]:
    ctx = _ctx("matmul", [a, b], _mm_dims(a, b), requires_grad, training)
    selection = _dispatch.get_dispatcher().select("matmul", ctx, log=False)
    impl = _dispatch.get_dispatcher().impl(ctx.op, selection)
    return _run(ctx, selection, impl.bind(selection.params), a, b), _kernel_id("matmul", impl.name)


@_matmul_op.register_fake
def _(a, b, requires_grad, training):
    batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    return a.new_empty((*batch, a.shape[-2], b.shape[-1])), torch.empty((), dtype=torch.int32, device="cpu")


@torch.library.custom_op("xpuruntime::matmul_with_kernel", mutates_args=())
def _matmul_with_kernel(a: torch.Tensor, b: torch.Tensor, kernel_id: torch.Tensor) -> torch.Tensor:
    """The backward's products, with the forward's kernel when it supports their shapes (else the default)."""
    impl = _kernel_of("matmul", kernel_id)
    ctx = _ctx("matmul", [a, b], _mm_dims(a, b), True, True)
    reason = impl.supports(ctx)
    used = impl if reason is None else get_registry().default("matmul")
    why = "the kernel the forward ran" if reason is None else f"the forward ran {impl.name}, which skips this: {reason}"
    out = _run(ctx, _dispatch.Selection(used.name, why), used.load_forward(), a, b, phase="backward")
    return out.clone() if out is a or out is b else out


@_matmul_with_kernel.register_fake
def _(a, b, kernel_id):
    batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    return a.new_empty((*batch, a.shape[-2], b.shape[-1]))


def _matmul_setup(ctx: Any, inputs: tuple[Any, ...], output: tuple[Any, ...]) -> None:
    a, b = inputs[:2]
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(a, b, output[1])


def _matmul_backward(ctx: Any, grad: torch.Tensor, *_: Any) -> tuple[Any, ...]:
    a, b, kernel_id = ctx.saved_tensors
    ga = gb = None
    if ctx.needs_input_grad[0]:
        ga = _unbroadcast(torch.ops.xpuruntime.matmul_with_kernel(grad, b.mT, kernel_id), a.shape)
    if ctx.needs_input_grad[1]:
        gb = _unbroadcast(torch.ops.xpuruntime.matmul_with_kernel(a.mT, grad, kernel_id), b.shape)
    return ga, gb, None, None


def _unbroadcast(grad: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Sum a gradient over the batch dims that broadcasting added or expanded."""
    extra = grad.dim() - len(shape)
    if extra:
        grad = grad.sum(dim=tuple(range(extra)))
    dims = tuple(i for i, n in enumerate(shape[:-2]) if n == 1 and grad.shape[i] != 1)
    return grad.sum(dim=dims, keepdim=True) if dims else grad


_matmul_op.register_autograd(_matmul_backward, setup_context=_matmul_setup)
