"""Triton fused LayerNorm over the last dim: forward, and backward with a two-stage dweight/dbias reduction.

Registered as the ``triton`` kernel of ``layernorm`` when this module is imported; it never activates itself:
a policy asks for it (``KernelPolicy(layernorm="triton")``) and the dispatcher checks that it applies.
Importing this module imports neither torch nor triton; the kernels are compiled on first use.

Forward: each program normalises ``BLOCK_M`` rows held whole in registers (``BLOCK_N`` = the next power of two
of the hidden size), in fp32 whatever the input dtype (fp32, fp16, bf16), and saves each row's mean and
1/std (fp32) for the backward.

Backward: each program walks a contiguous slice of rows, writes ``dx`` and keeps its own fp32 partial sums of
``dy * xhat`` (dweight) and ``dy`` (dbias); a second kernel adds the partials of all programs column by
column. Fixed work per program and no atomics, so results are deterministic run to run.

>>> import torch, xpuruntime.kernels.triton_layernorm as tln          # doctest: +SKIP
>>> x = torch.randn(8192, 768, device="cuda", dtype=torch.bfloat16)    # doctest: +SKIP
>>> y, mean, rstd = tln.layer_norm_forward(x, w, b, 1e-5)             # doctest: +SKIP
"""

from __future__ import annotations

import functools
from typing import Any

from xpuruntime.kernels import _triton
from xpuruntime.kernels.registry import DispatchContext, get_registry

__all__ = ["MAX_HIDDEN", "layer_norm_forward", "layer_norm_backward", "forward_config", "backward_config",
           "supports"]

MAX_HIDDEN = 16384  # one row lives in registers; beyond this the native kernel is the right tool
_FWD_TILE = 4096  # elements per program in the forward (rows x padded hidden)
_BWD_TILE = 8192
_PROGRAMS_PER_SM = 2  # backward programs per SM: more hides latency, fewer shrinks the partial sums


_MIN_BLOCK_N = 16


def supports(ctx: DispatchContext) -> str | None:
    """None when the Triton LayerNorm can run ``ctx``, else why not."""
    reason = _triton.device_reason(ctx)
    if reason:
        return reason
    hidden = ctx.dim("hidden")
    if hidden is not None and hidden > MAX_HIDDEN:
        return f"hidden={hidden} is larger than one block holds (max {MAX_HIDDEN})"
    return None


def forward_config(hidden: int, *, block_m: int | None = None, num_warps: int | None = None) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps) for the forward: about 16 elements per thread, 4096 per program."""
    block_n = max(_MIN_BLOCK_N, _triton.next_pow2(hidden))  # size-1 tiles miscompile; masks cover the rest
    block_m = block_m or max(1, min(16, _FWD_TILE // block_n))
    return block_m, block_n, num_warps or _warps(block_m * block_n)


def backward_config(hidden: int, *, block_m: int | None = None, num_warps: int | None = None) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps) for the backward's first stage."""
    block_n = max(_MIN_BLOCK_N, _triton.next_pow2(hidden))  # size-1 tiles miscompile; masks cover the rest
    block_m = block_m or max(1, min(16, _BWD_TILE // block_n))
    return block_m, block_n, num_warps or _warps(block_m * block_n, most=32)  # ~8 live row-sized arrays


def _warps(tile: int, most: int = 16) -> int:
    return min(max(tile // 512, 1), most)


def layer_norm_forward(x: Any, weight: Any, bias: Any, eps: float, *, block_m: int | None = None,
                       num_warps: int | None = None) -> tuple[Any, Any, Any]:
    """``(y, mean, rstd)`` for a 2-D ``x`` (rows, hidden) with unit stride along hidden; weight/bias optional."""
    import torch

    rows, hidden = x.shape
    y = torch.empty_like(x, memory_format=torch.contiguous_format)
    mean = torch.empty(rows, device=x.device, dtype=torch.float32)
    rstd = torch.empty(rows, device=x.device, dtype=torch.float32)
    if rows == 0 or hidden == 0:
        return y, mean.fill_(0.0), rstd.fill_(0.0)
    bm, bn, warps = forward_config(hidden, block_m=block_m, num_warps=num_warps)
    k = _kernels(_triton.interpreting())
    k.fwd[(_cdiv(rows, bm),)](
        x, y, _ptr(weight, x), _ptr(bias, x), mean, rstd, x.stride(0), y.stride(0), rows, hidden, float(eps),
        BLOCK_M=bm, BLOCK_N=bn, HAS_W=weight is not None, HAS_B=bias is not None, num_warps=warps)
    return y, mean, rstd


def layer_norm_backward(dy: Any, x: Any, weight: Any, bias: Any, mean: Any, rstd: Any, *,
                        block_m: int | None = None, num_warps: int | None = None,
                        programs: int | None = None) -> tuple[Any, Any, Any]:
    """``(dx, dweight, dbias)`` (None for a missing weight or bias) from the forward's saved mean and rstd."""
    import torch

    rows, hidden = x.shape
    dx = torch.empty_like(x, memory_format=torch.contiguous_format)
    n_part = int(weight is not None) + int(bias is not None)
    if rows == 0 or hidden == 0:
        sums = [torch.zeros_like(p) for p in (weight, bias) if p is not None]
        return dx.zero_(), *_split(sums, weight, bias)
    dy = dy if dy.stride(-1) == 1 else dy.contiguous()
    bm, bn, warps = backward_config(hidden, block_m=block_m, num_warps=num_warps)
    grid = programs or min(_cdiv(rows, bm), _triton.sm_count(x.device) * _PROGRAMS_PER_SM)
    rows_per_program = _cdiv(_cdiv(rows, grid), bm) * bm
    grid = _cdiv(rows, rows_per_program)
    partial = torch.empty((max(n_part, 1), grid, hidden), device=x.device, dtype=torch.float32)
    k = _kernels(_triton.interpreting())
    k.bwd[(grid,)](
        dy, x, _ptr(weight, x), mean, rstd, dx, partial, dy.stride(0), x.stride(0), dx.stride(0), rows, hidden,
        rows_per_program, grid * hidden, BLOCK_M=bm, BLOCK_N=bn, HAS_W=weight is not None,
        DW=weight is not None, DB=bias is not None, num_warps=warps)
    sums = [torch.empty_like(p) for p in (weight, bias) if p is not None]
    for i, out in enumerate(sums):  # stage 2: add the programs' partial sums, column by column
        k.colsum[(_cdiv(hidden, 64),)](partial[i], out, grid, hidden, BLOCK_G=64, BLOCK_N=64, num_warps=4)
    return dx, *_split(sums, weight, bias)


def _split(sums: list[Any], weight: Any, bias: Any) -> tuple[Any, Any]:
    dw = sums[0] if weight is not None else None
    db = sums[-1] if bias is not None else None
    return dw, db


def _ptr(t: Any, like: Any) -> Any:
    return t if t is not None else like  # a placeholder pointer; the kernel never reads it (HAS_W/HAS_B)


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


@functools.lru_cache(maxsize=None)
def _kernels(interpret: bool) -> Any:  # one build per mode: TRITON_INTERPRET is read when a kernel is defined
    import triton
    import triton.language as tl

    @triton.jit
    def fwd(X, Y, W, B, Mean, Rstd, stride_x, stride_y, M, N, eps,
            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr):
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = tl.arange(0, BLOCK_N)
        row_ok = rows < M
        col_ok = cols < N
        mask = row_ok[:, None] & col_ok[None, :]
        r64 = rows.to(tl.int64)[:, None]
        x = tl.load(X + r64 * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        mean = tl.sum(x, axis=1) / N
        xc = tl.where(mask, x - mean[:, None], 0.0)
        rstd = tl.rsqrt(tl.sum(xc * xc, axis=1) / N + eps)
        y = xc * rstd[:, None]
        if HAS_W:
            y = y * tl.load(W + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
        if HAS_B:
            y = y + tl.load(B + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
        tl.store(Y + r64 * stride_y + cols[None, :], y.to(Y.dtype.element_ty), mask=mask)
        tl.store(Mean + rows, mean, mask=row_ok)
        tl.store(Rstd + rows, rstd, mask=row_ok)

    @triton.jit
    def bwd(DY, X, W, Mean, Rstd, DX, Partial, stride_dy, stride_x, stride_dx, M, N, rows_per_program,
            part_stride, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HAS_W: tl.constexpr,
            DW: tl.constexpr, DB: tl.constexpr):
        pid = tl.program_id(0)
        cols = tl.arange(0, BLOCK_N)
        col_ok = cols < N
        if HAS_W:
            w = tl.load(W + cols, mask=col_ok, other=0.0).to(tl.float32)
        dw_acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
        db_acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
        start = pid * rows_per_program
        end = tl.minimum(start + rows_per_program, M)
        for offset in range(0, rows_per_program, BLOCK_M):
            rows = start + offset + tl.arange(0, BLOCK_M)
            row_ok = rows < end
            mask = row_ok[:, None] & col_ok[None, :]
            r64 = rows.to(tl.int64)[:, None]
            x = tl.load(X + r64 * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
            dy = tl.load(DY + r64 * stride_dy + cols[None, :], mask=mask, other=0.0).to(tl.float32)
            mean = tl.load(Mean + rows, mask=row_ok, other=0.0)
            rstd = tl.load(Rstd + rows, mask=row_ok, other=0.0)
            xhat = tl.where(mask, (x - mean[:, None]) * rstd[:, None], 0.0)
            wdy = dy
            if HAS_W:
                wdy = dy * w[None, :]
            c1 = tl.sum(xhat * wdy, axis=1) / N
            c2 = tl.sum(wdy, axis=1) / N
            dx = (wdy - (xhat * c1[:, None] + c2[:, None])) * rstd[:, None]
            tl.store(DX + r64 * stride_dx + cols[None, :], dx.to(DX.dtype.element_ty), mask=mask)
            if DW:
                dw_acc += tl.sum(dy * xhat, axis=0)
            if DB:
                db_acc += tl.sum(dy, axis=0)
        out = Partial + pid * N + cols
        if DW:
            tl.store(out, dw_acc, mask=col_ok)
            out += part_stride
        if DB:
            tl.store(out, db_acc, mask=col_ok)

    @triton.jit
    def colsum(Partial, Out, G, N, BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr):
        cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        col_ok = cols < N
        acc = tl.zeros((BLOCK_G, BLOCK_N), dtype=tl.float32)
        for g0 in range(0, G, BLOCK_G):
            g = g0 + tl.arange(0, BLOCK_G)
            acc += tl.load(Partial + g[:, None] * N + cols[None, :], mask=(g < G)[:, None] & col_ok[None, :],
                           other=0.0)
        tl.store(Out + cols, tl.sum(acc, axis=0).to(Out.dtype.element_ty), mask=col_ok)

    return _Kernels(fwd, bwd, colsum)


class _Kernels:
    def __init__(self, fwd: Any, bwd: Any, colsum: Any) -> None:
        self.fwd, self.bwd, self.colsum = fwd, bwd, colsum


get_registry().register(
    "layernorm", "triton", forward=layer_norm_forward, backward=layer_norm_backward, devices=("cuda", "cpu"),
    dtypes=("fp32", "fp16", "bf16"), requires=_triton.REQUIRES, supports=supports,
    install_hint=_triton.INSTALL_HINT, description="Triton fused LayerNorm (fp32 statistics, two-stage dw/db)")
