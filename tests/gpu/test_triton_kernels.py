"""Triton LayerNorm and GEMM on a real GPU: accuracy against float64, dispatch, autograd, torch.compile, graphs.

Every check computes its reference in float64 from the same inputs, and accepts the Triton result when its
error is within a per-dtype tolerance or within twice the error of PyTorch's own kernel in the same dtype.
Needs a CUDA build of torch and triton.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

import torch.nn.functional as F  # noqa: E402

import xpuruntime.kernels as xk  # noqa: E402
from xpuruntime import Policy, PolicyViolationError  # noqa: E402
from xpuruntime.kernels import triton_layernorm as tln  # noqa: E402
from xpuruntime.kernels import triton_matmul as tmm  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.gpu("torch")]

TOL = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
TRITON = Policy(kernels={"layernorm": "triton", "matmul": "triton"}, execution={"fallback": "error"})


@pytest.fixture
def logs():
    xk.clear_dispatch_logs()
    xk.enable_dispatch_logging()
    yield xk.get_dispatch_logs
    xk.disable_dispatch_logging()
    xk.clear_dispatch_logs()


def _rel(got: torch.Tensor, ref: torch.Tensor, floor: float = 0.0) -> float:
    """Max error relative to the reference's largest value, or to ``floor`` (the quantity's natural scale)
    where that is larger: with hidden=1 the exact dx is all zeros while its terms are |dy*w|/sqrt(eps)."""
    scale = max(ref.abs().max().item(), floor) or 1.0
    return ((got.double() - ref).abs().max() / scale).item()


def _assert_close(name: str, got: torch.Tensor, ref64: torch.Tensor, torch_same_dtype: torch.Tensor,
                  dtype: torch.dtype, floor: float = 0.0) -> None:
    err, torch_err = _rel(got, ref64, floor), _rel(torch_same_dtype, ref64, floor)
    assert err <= max(TOL[dtype], 2 * torch_err), f"{name}: error {err:.3e} (torch {torch_err:.3e}, {dtype})"


def _ln_inputs(shape: tuple[int, ...], dtype: torch.dtype, affine: bool = True):
    g = torch.Generator(device="cuda").manual_seed(hash(shape) % 2**31)
    n = shape[-1]
    x = torch.randn(*shape, device="cuda", dtype=dtype, generator=g) * 2 + 0.5
    dy = torch.randn(*shape, device="cuda", dtype=dtype, generator=g)
    w = torch.randn(n, device="cuda", dtype=dtype, generator=g) if affine else None
    b = torch.randn(n, device="cuda", dtype=dtype, generator=g) if affine else None
    return x, w, b, dy


def _ln_all(fn, x, w, b, dy):
    """(y, dx, dw, db) of ``fn`` through autograd."""
    leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in (x, w, b)]
    y = fn(*leaves)
    grads = torch.autograd.grad(y, [t for t in leaves if t is not None], dy.to(y.dtype))
    return [y.detach(), *grads]


LN_SHAPES = [(1, 768), (4, 768), (37, 1000), (256, 4096), (3, 5, 768), (8192, 768), (64, 16384), (300, 1)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", LN_SHAPES, ids=str)
def test_triton_layer_norm_forward_and_backward_match_float64(shape: tuple[int, ...], dtype: torch.dtype):
    x, w, b, dy = _ln_inputs(shape, dtype)
    n = shape[-1]
    ref = _ln_all(lambda *t: F.layer_norm(*t[:1], (n,), *t[1:], eps=1e-5), x.double(), w.double(), b.double(), dy)
    native = _ln_all(lambda *t: F.layer_norm(*t[:1], (n,), *t[1:], eps=1e-5), x, w, b, dy)
    with xk.use_policy(TRITON):
        got = _ln_all(lambda *t: xk.layer_norm(*t, 1e-5), x, w, b, dy)
    rstd = (x.double().var(-1, unbiased=False) + 1e-5).rsqrt().max().item()
    dx_scale = (dy.double() * w.double()).abs().max().item() * rstd
    for name, g, r, t in zip(("y", "dx", "dweight", "dbias"), got, ref, native, strict=True):
        assert g.dtype == t.dtype and g.shape == t.shape
        _assert_close(name, g, r, t, dtype, floor=dx_scale if name == "dx" else 0.0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_triton_layer_norm_without_weight_and_bias(dtype: torch.dtype):
    x, _, _, dy = _ln_inputs((129, 1000), dtype, affine=False)
    ref = _ln_all(lambda t, w, b: F.layer_norm(t, (1000,)), x.double(), None, None, dy)
    native = _ln_all(lambda t, w, b: F.layer_norm(t, (1000,)), x, None, None, dy)
    with xk.use_policy(TRITON):
        got = _ln_all(lambda t, w, b: xk.layer_norm(t), x, None, None, dy)
    for name, g, r, t in zip(("y", "dx"), got, ref, native, strict=True):
        _assert_close(name, g, r, t, dtype)


def test_triton_layer_norm_statistics_and_strided_rows():
    x = torch.randn(64, 2048, device="cuda", dtype=torch.bfloat16)[:, :1536]  # rows 2048 apart, not contiguous
    w, b = torch.randn(1536, device="cuda"), torch.randn(1536, device="cuda")  # fp32 affine on bf16 input
    y, mean, rstd = tln.layer_norm_forward(x, w, b, 1e-5)
    x64 = x.double()
    torch.testing.assert_close(mean, x64.mean(-1).float(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rstd, (x64.var(-1, unbiased=False) + 1e-5).rsqrt().float(), rtol=1e-4, atol=1e-4)
    ref = F.layer_norm(x64, (1536,), w.double(), b.double(), 1e-5)
    assert y.dtype == torch.bfloat16 and _rel(y, ref) < TOL[torch.bfloat16]


def test_triton_layer_norm_backward_is_deterministic():
    x, w, b, dy = _ln_inputs((4096, 1024), torch.bfloat16)
    _, mean, rstd = tln.layer_norm_forward(x, w, b, 1e-5)
    first = tln.layer_norm_backward(dy, x, w, b, mean, rstd)
    for _ in range(3):
        for a, c in zip(first, tln.layer_norm_backward(dy, x, w, b, mean, rstd), strict=True):
            assert torch.equal(a, c)


MM_SHAPES = [((128, 64), (64, 256)), ((1000, 777), (777, 555)), ((16, 4096), (4096, 4096)),
             ((2048, 2048), (2048, 2048)), ((4, 256, 128), (4, 128, 64)), ((2, 1, 64, 96), (3, 96, 80)),
             ((3, 100, 64), (64, 72))]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize(("sa", "sb"), MM_SHAPES, ids=str)
def test_triton_matmul_matches_float64(sa: tuple[int, ...], sb: tuple[int, ...], dtype: torch.dtype):
    g = torch.Generator(device="cuda").manual_seed(0)
    a = torch.randn(*sa, device="cuda", dtype=dtype, generator=g)
    b = torch.randn(*sb, device="cuda", dtype=dtype, generator=g)
    ref = torch.matmul(a.double(), b.double())
    _assert_close("a @ b", tmm.matmul(a, b), ref, torch.matmul(a, b), dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_triton_matmul_takes_transposed_operands_without_copies(dtype: torch.dtype):
    a = torch.randn(512, 384, device="cuda", dtype=dtype)
    b = torch.randn(640, 384, device="cuda", dtype=dtype).T  # (384, 640), column-major
    ref = a.double() @ b.double()
    _assert_close("a @ b.T", tmm.matmul(a, b), ref, a @ b, dtype)
    _assert_close("a.T.T @ b", tmm.matmul(a.T.contiguous().T, b), ref, a @ b, dtype)


def test_matmul_autograd_matches_float64_through_the_policy(logs):
    a = torch.randn(2, 192, 256, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    b = torch.randn(256, 320, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    dout = torch.randn(2, 192, 320, device="cuda", dtype=torch.bfloat16)
    with xk.use_policy(TRITON):
        out = xk.matmul(a, b)
    ga, gb = torch.autograd.grad(out, (a, b), dout)
    a64, b64 = a.detach().double().requires_grad_(), b.detach().double().requires_grad_()
    ref = a64 @ b64
    ra, rb = torch.autograd.grad(ref, (a64, b64), dout.double())
    native = torch.autograd.grad(a @ b, (a, b), dout)
    for name, g, r, t in zip(("out", "da", "db"), (out, ga, gb), (ref, ra, rb), (a @ b, *native), strict=True):
        _assert_close(name, g, r, t, torch.bfloat16)
    assert {(r.phase, r.kernel) for r in logs("matmul")} == {("forward", "triton"), ("backward", "triton")}


def test_the_dispatcher_picks_triton_on_cuda_and_logs_it(logs):
    x = torch.randn(8, 768, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    w = torch.ones(768, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    with xk.use_policy({"kernels": {"layernorm": "triton"}}):
        y = xk.layer_norm(x, w)
    y.float().sum().backward()
    forward, backward = logs("layernorm")
    assert (forward.kernel, forward.device, forward.dtype, forward.skipped) == ("triton", "cuda", "bf16", [])
    assert forward.reason == "kernels.layernorm = triton: triton applies"
    assert (backward.kernel, backward.phase) == ("triton", "backward")


def test_unsupported_calls_fall_back_with_reasons(logs):
    x = torch.randn(4, 20000, device="cuda")
    with xk.use_policy({"kernels": {"layernorm": ["triton", "native"]}}):
        torch.testing.assert_close(xk.layer_norm(x), F.layer_norm(x, (20000,)))
    (record,) = logs("layernorm")
    assert record.kernel == "native"
    assert record.skipped == [("triton", f"hidden=20000 is larger than one block holds (max {tln.MAX_HIDDEN})")]
    a = torch.randn(64, 64, device="cuda")
    with xk.use_policy(TRITON), pytest.raises(PolicyViolationError, match="dtype fp32 is not supported"):
        xk.matmul(a, a)
    with xk.use_policy({"kernels": {"matmul": "cublas"}}):
        torch.testing.assert_close(xk.matmul(a, a), a @ a)
    assert logs("matmul")[-1].kernel == "cublas"


def test_timing_adds_gpu_time_to_the_records():
    x = torch.randn(4096, 1024, device="cuda", dtype=torch.bfloat16)
    with xk.dispatch_logging(timing=True) as records, xk.use_policy(TRITON):
        for _ in range(3):
            xk.layer_norm(x)
    assert len(records) == 3 and all(r.gpu_time_ms is not None and r.gpu_time_ms > 0 for r in records)
    xk.clear_dispatch_logs()


class _Block(torch.nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.w1 = torch.nn.Parameter(torch.randn(d, 4 * d) / d**0.5)
        self.w2 = torch.nn.Parameter(torch.randn(4 * d, d) / (4 * d) ** 0.5)
        self.g = torch.nn.Parameter(torch.ones(d))
        self.b = torch.nn.Parameter(torch.zeros(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = xk.layer_norm(x, self.g, self.b)
        return x + xk.matmul(F.gelu(xk.matmul(h, self.w1)), self.w2)


def test_torch_compile_fullgraph_matches_eager_and_runs_triton(logs):
    torch._dynamo.reset()
    block = _Block(256).cuda().to(torch.bfloat16)
    x = torch.randn(4, 128, 256, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    compiled = torch.compile(block, fullgraph=True)
    with xk.use_policy(TRITON):
        eager = block(x)
        eager_grads = torch.autograd.grad(eager.float().sum(), [x, *block.parameters()])
        xk.clear_dispatch_logs()
        out = compiled(x)
        grads = torch.autograd.grad(out.float().sum(), [x, *block.parameters()])
    assert _rel(out, eager.double()) < 2e-2
    for g, e in zip(grads, eager_grads, strict=True):
        assert _rel(g, e.double()) < 3e-2
    assert {(r.op, r.kernel) for r in logs()} == {("layernorm", "triton"), ("matmul", "triton")}
    torch._dynamo.reset()


def test_cuda_graph_capture_replays_the_triton_kernels():
    x = torch.randn(512, 768, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(768, 768, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad(), xk.use_policy(TRITON):
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):  # compile and autotune before capture
                xk.matmul(xk.layer_norm(x), w)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = xk.matmul(xk.layer_norm(x), w)
        x.copy_(torch.randn_like(x))
        graph.replay()
        torch.cuda.synchronize()
    ref = F.layer_norm(x.double(), (768,)) @ w.double()
    assert _rel(out, ref) < TOL[torch.bfloat16]
