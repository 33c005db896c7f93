"""Triton GEMM: fp16/bf16 in, fp32 accumulation, tiles autotuned for Hopper; 2-D and batched operands.

Registered as the ``triton`` kernel of ``matmul`` when this module is imported; it never activates itself.
Importing this module imports neither torch nor triton; the kernel is compiled (and autotuned, once per
``(M, N, K)``) on first use.

``a`` is ``(..., M, K)`` and ``b`` is ``(K, N)`` or ``(..., K, N)`` with batch dims that broadcast like
``torch.matmul``: a 2-D ``b`` folds the batch into M, a batched ``b`` becomes the grid's second axis. Any
strides are accepted (transposed views need no copy). Tiles are visited in groups of ``GROUP_M`` rows so
that neighbouring programs share operands in L2; on Hopper ``tl.dot`` lowers to ``wgmma``.

>>> import torch, xpuruntime.kernels.triton_matmul as tmm                               # doctest: +SKIP
>>> a = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16); b = a.T           # doctest: +SKIP
>>> torch.testing.assert_close(tmm.matmul(a, b), a @ b, rtol=2e-2, atol=1e-1)           # doctest: +SKIP
"""

from __future__ import annotations

import functools
from typing import Any

from xpuruntime.kernels import _triton
from xpuruntime.kernels.registry import DispatchContext, get_registry

__all__ = ["matmul", "supports", "CONFIGS"]

_INT32_MAX = 2**31 - 1
# (BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, num_stages, num_warps): large tiles for compute-bound shapes on Hopper
# (shared memory per stage: (BM + BN) * BK * 2 bytes, at most about 200 KB in flight), smaller ones for
# skinny or small problems.
CONFIGS: tuple[tuple[int, int, int, int, int, int], ...] = (
    (128, 256, 64, 8, 3, 8),
    (256, 128, 64, 8, 3, 8),
    (128, 128, 64, 8, 4, 8),
    (128, 128, 64, 8, 4, 4),
    (128, 64, 64, 8, 4, 4),
    (64, 128, 64, 8, 4, 4),
    (64, 64, 64, 8, 5, 4),
    (64, 64, 128, 8, 4, 4),
    (32, 64, 128, 8, 4, 4),
    (16, 64, 256, 8, 3, 4),
)
_INTERPRETER_CONFIG = (32, 32, 32, 4, 1, 4)


def supports(ctx: DispatchContext) -> str | None:
    """None when the Triton GEMM can run ``ctx``, else why not."""
    reason = _triton.device_reason(ctx)
    if reason:
        return reason
    if len(ctx.shapes) == 2 and min(len(s) for s in ctx.shapes) < 2:
        return "a 1-D operand: the Triton GEMM takes matrices (the default kernel handles vectors)"
    if any(_numel(s) > _INT32_MAX for s in ctx.shapes):
        return "an operand has more than 2**31 elements (32-bit indexing)"
    return None


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def matmul(a: Any, b: Any) -> Any:
    """``a @ b`` for fp16/bf16 ``a (..., M, K)`` and ``b (K, N)`` or ``(..., K, N)`` (broadcast batch dims)."""
    import torch

    if a.dtype != b.dtype:
        raise TypeError(f"triton matmul needs operands of one dtype; got {a.dtype} and {b.dtype}")
    if b.dim() == 2:
        out = _mm3(a.reshape(1, -1, a.shape[-1]), b.unsqueeze(0))
        return out.reshape(*a.shape[:-1], b.shape[-1])
    batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    a3 = a.expand(*batch, *a.shape[-2:]).reshape(-1, *a.shape[-2:])
    b3 = b.expand(*batch, *b.shape[-2:]).reshape(-1, *b.shape[-2:])
    return _mm3(a3, b3).reshape(*batch, a.shape[-2], b.shape[-1])


def _mm3(a: Any, b: Any) -> Any:
    import torch

    batch, m, k = a.shape
    n = b.shape[-1]
    c = torch.empty((batch, m, n), device=a.device, dtype=a.dtype)
    if m == 0 or n == 0 or batch == 0:
        return c
    if k == 0:
        return c.zero_()
    kernel = _kernel(_triton.interpreting())
    grid = lambda meta: (_cdiv(m, meta["BLOCK_M"]) * _cdiv(n, meta["BLOCK_N"]), batch)  # noqa: E731
    kernel[grid](a, b, c, m, n, k, a.stride(0) if a.shape[0] > 1 else 0, a.stride(1), a.stride(2),
                 b.stride(0) if b.shape[0] > 1 else 0, b.stride(1), b.stride(2), c.stride(0), c.stride(1), c.stride(2))
    return c


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


@functools.lru_cache(maxsize=None)
def _kernel(interpret: bool) -> Any:  # one build per mode: TRITON_INTERPRET is read when a kernel is defined
    import triton
    import triton.language as tl

    table = (_INTERPRETER_CONFIG,) if interpret else CONFIGS
    configs = [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": g}, num_stages=s, num_warps=w)
               for bm, bn, bk, g, s, w in table]

    @triton.autotune(configs=configs, key=["M", "N", "K"])
    @triton.jit
    def gemm(A, B, C, M, N, K, s_ab, s_am, s_ak, s_bb, s_bk, s_bn, s_cb, s_cm, s_cn,
             BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
        pid = tl.program_id(0)
        batch = tl.program_id(1).to(tl.int64)
        tiles_m = tl.cdiv(M, BLOCK_M)
        tiles_n = tl.cdiv(N, BLOCK_N)
        per_group = GROUP_M * tiles_n
        first_m = (pid // per_group) * GROUP_M
        group_m = tl.minimum(tiles_m - first_m, GROUP_M)
        pid_m = first_m + (pid % per_group) % group_m
        pid_n = (pid % per_group) // group_m
        # rows/cols past the edge wrap around (valid addresses, results never stored): loads need no M/N mask
        rm = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)) % M
        rn = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)) % N
        rk = tl.arange(0, BLOCK_K)
        a_ptrs = A + batch * s_ab + rm[:, None] * s_am + rk[None, :] * s_ak
        b_ptrs = B + batch * s_bb + rk[:, None] * s_bk + rn[None, :] * s_bn
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for kk in range(0, tl.cdiv(K, BLOCK_K)):
            k_left = K - kk * BLOCK_K
            a = tl.load(a_ptrs, mask=rk[None, :] < k_left, other=0.0)
            b = tl.load(b_ptrs, mask=rk[:, None] < k_left, other=0.0)
            acc = tl.dot(a, b, acc)
            a_ptrs += BLOCK_K * s_ak
            b_ptrs += BLOCK_K * s_bk
        cm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        cn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        c_ptrs = C + batch * s_cb + cm[:, None] * s_cm + cn[None, :] * s_cn
        tl.store(c_ptrs, acc.to(C.dtype.element_ty), mask=(cm[:, None] < M) & (cn[None, :] < N))

    return gemm


get_registry().register(
    "matmul", "triton", forward=matmul, devices=("cuda", "cpu"), dtypes=("fp16", "bf16"),
    requires=_triton.REQUIRES, supports=supports, install_hint=_triton.INSTALL_HINT,
    description="Triton tiled GEMM (fp16/bf16 in, fp32 accumulate, autotuned for Hopper)")
