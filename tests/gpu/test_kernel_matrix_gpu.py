"""The kernel-choice matrix on CUDA: every choice the PyTorch extension translates, under every fallback rule,
with inputs the backend supports and inputs it does not (and CPU tensors on the CUDA machine).

The cells and their judging are shared with the CPU matrix (tests/pytorch/_kernel_matrix.py): each asserts what
``torch.profiler`` shows ran and the warning or error the fallback rule calls for. Run with ``-s`` to see
the receipts::

    PYTHONPATH=src python -m pytest -q tests/gpu/test_kernel_matrix_gpu.py
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

pytestmark = pytest.mark.gpu


def _helpers() -> Any:
    """The CPU matrix's cells and judging (tests/pytorch/_kernel_matrix.py), loaded by path."""
    if "_kernel_matrix" in sys.modules:
        return sys.modules["_kernel_matrix"]
    path = Path(__file__).resolve().parents[1] / "pytorch" / "_kernel_matrix.py"
    spec = importlib.util.spec_from_file_location("_kernel_matrix", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["_kernel_matrix"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


_m = _helpers()
Cell, run_cell, assert_cell, cell_id = _m.Cell, _m.run_cell, _m.assert_cell, _m.cell_id

FLASH, EFF, CUDNN = r"flash", r"fmha_cutlass|memeff|attentionkernel|efficient", r"cudnn"
MATH = r"attention_math"
GEMM = r"gemm|xmma|nvjet|cutlass|kernel2|gemv"
CPU_CONV = r"aten::(mkldnn_convolution|_slow_conv2d_forward|convolution)"


def _qkv(dtype: Any = torch.float16, head_dim: int = 64, device: str = "cuda", dims: int = 4) -> Any:
    gen = torch.Generator(device=device).manual_seed(0)
    shape = (4, 16, 1024, head_dim)[4 - dims:] if device == "cuda" else (1, 2, 16, 8)[4 - dims:]
    return torch.randn(*shape, device=device, dtype=dtype, generator=gen)


def _attention(**kw: Any) -> Callable[[], Any]:
    return lambda: F.scaled_dot_product_attention(*(_qkv(**kw),) * 3)


def _matmul(device: str) -> Callable[[], Any]:
    def work() -> Any:
        a = torch.randn(1024, 1024, device=device, dtype=torch.float16 if device == "cuda" else torch.float32)
        return a @ a
    return work


def _conv(device: str) -> Callable[[], Any]:
    return lambda: F.conv2d(torch.randn(8, 16, 32, 32, device=device), torch.randn(32, 16, 3, 3, device=device))


def _layernorm(dtype: Any = torch.float32, device: str = "cuda") -> Callable[[], Any]:
    return lambda: F.layer_norm(torch.randn(8192, 768, device=device, dtype=dtype), (768,))


WORK: dict[tuple[str, str], Callable[[], Any]] = {
    ("attention", "fp16"): _attention(),
    ("attention", "fp32"): _attention(dtype=torch.float32),
    ("attention", "fp64"): _attention(dtype=torch.float64),
    ("attention", "head_dim 512"): _attention(head_dim=512),
    ("attention", "cpu tensor"): _attention(dtype=torch.float32, device="cpu"),
    ("attention", "cpu tensor 3-D"): _attention(dtype=torch.float32, device="cpu", dims=3),
    ("matmul", "fp16"): _matmul("cuda"),
    ("matmul", "cpu tensor"): _matmul("cpu"),
    ("conv", "fp32"): _conv("cuda"),
    ("conv", "cpu tensor"): _conv("cpu"),
    ("layernorm", "fp32"): _layernorm(),
    ("layernorm", "fp64"): _layernorm(torch.float64),
}

# fmt: off
CELLS = [
    # attention: fp16 is supported by all four; flash and cudnn need fp16/bf16 and head_dim <= 256; efficient has
    # no fp64
    Cell("attention", "flash", "fp16", "flash", FLASH, "honoured"),
    Cell("attention", "flash", "fp32", "efficient", EFF, "violation", "call"),  # priority: flash, efficient, ...
    Cell("attention", "flash", "head_dim 512", "efficient|cudnn|math", f"{EFF}|{CUDNN}|{MATH}", "violation", "call"),
    Cell("attention", "efficient", "fp16", "efficient", EFF, "honoured"),
    Cell("attention", "efficient", "fp64", "math", MATH, "violation", "call"),
    Cell("attention", "cudnn", "fp16", "cudnn", CUDNN, "honoured"),
    Cell("attention", "cudnn", "fp32", "efficient", EFF, "violation", "call"),  # cudnn, flash (no fp32), efficient
    Cell("attention", "cudnn", "head_dim 512", "efficient|math", f"{EFF}|{MATH}", "violation", "call"),
    Cell("attention", "math", "fp16", "math", MATH, "honoured"),
    Cell("attention", "math", "fp64", "math", MATH, "honoured"),
    Cell("attention", ("flash", "efficient"), "fp16", "flash", FLASH, "honoured"),
    Cell("attention", ("flash", "efficient"), "fp32", "efficient", EFF, "listed"),
    Cell("attention", ("cudnn", "math"), "fp32", "math", MATH, "listed"),
    Cell("attention", ("math", "flash"), "fp16", "math", MATH, "honoured"),
    # CPU tensors on the CUDA machine: the per-call check narrows the switches to the CPU set
    Cell("attention", "math", "cpu tensor", "math", MATH, "honoured"),  # without narrowing, flash would run
    Cell("attention", "flash", "cpu tensor", "flash", r"flash_attention_for_cpu", "honoured"),
    Cell("attention", "flash", "cpu tensor 3-D", "math", MATH, "violation", "call"),
    # matmul: cuBLAS and cuBLASLt launch the same kernels; the switch during the run says which was asked for
    Cell("matmul", "cublas", "fp16", "cublas/cublaslt", GEMM, "honoured"),
    Cell("matmul", "cublaslt", "fp16", "cublas/cublaslt", GEMM, "honoured"),
    Cell("matmul", "cublas", "cpu tensor", "default", r"aten::mm", "violation", "receipt"),
    Cell("matmul", "cublaslt", "cpu tensor", "default", r"aten::mm", "violation", "receipt"),
    # conv: cuDNN ran; exhaustive vs heuristic is torch.backends.cudnn.benchmark during the run
    Cell("conv", "cudnn_exhaustive", "fp32", "cudnn_exhaustive", r".+", "honoured"),
    Cell("conv", "cudnn_heuristic", "fp32", "cudnn_heuristic", r".+", "honoured"),
    Cell("conv", "cudnn_default", "fp32", "cudnn_heuristic", r".+", "violation", "entry"),
    Cell("conv", "auto", "fp32", "cudnn_exhaustive", r".+", "honoured"),
    Cell("conv", "cudnn_exhaustive", "cpu tensor", "default", CPU_CONV, "violation", "receipt"),
    # layernorm
    Cell("layernorm", "native", "fp32", "native", r"layer_?norm", "honoured"),
]
TRITON_CELLS = [
    Cell("layernorm", "triton", "fp32", "triton", r"xpuruntime::layer_norm", "honoured"),
    Cell("layernorm", "triton", "fp64", "native", r"xpuruntime::layer_norm", "violation", "call"),  # the kernels
    # dispatcher skips fp64 with a reason: error raises at the call, warn warns there
]
# fmt: on


@pytest.fixture(scope="module", autouse=True)
def _needs_torch_cuda() -> None:
    if not torch.cuda.is_available():
        pytest.skip("this torch has no CUDA (a CPU build): install a CUDA build of torch")


@pytest.fixture(autouse=True)
def _no_leftover_policy():
    yield
    from xpuruntime.pytorch import _state

    assert _state.active() is None
    _state.reset()


def _triton() -> bool:
    from xpuruntime.pytorch import _kernels

    return _kernels.available("layernorm", "triton")


@pytest.mark.parametrize("fallback", ["error", "warn", "allow"])
@pytest.mark.parametrize("cell", CELLS + TRITON_CELLS, ids=cell_id)
def test_cuda_cell(cell: Any, fallback: str):
    if cell in TRITON_CELLS and not _triton():
        pytest.skip("triton is not importable here: the CPU matrix covers layernorm=triton without it")
    WORK[(cell.op, cell.inputs)]()  # warm-up outside the policy (cuDNN, cuBLAS handles, Triton compiles)
    seen = run_cell(cell.op, cell.choice, fallback, WORK[(cell.op, cell.inputs)])
    if seen.receipt is not None and seen.receipt.profiled:
        print(f"\n--- {cell_id(cell)} fallback={fallback}\n{seen.receipt.table()}")
    assert_cell(cell, fallback, seen, __file__)
    switches = seen.receipt.requested.get("switches_during_run", {}) if seen.receipt is not None else {}
    if cell.op == "matmul" and cell.inputs != "cpu tensor" and switches:
        assert switches["preferred_blas_library"] == cell.choice
    if cell.op == "conv" and cell.inputs != "cpu tensor" and switches:
        assert switches["cudnn.benchmark"] == (cell.ran == "cudnn_exhaustive")


def test_a_flash_warning_at_the_call_names_the_backend_that_runs():
    import warnings

    import xpuruntime.pytorch as xrt_torch
    from xpuruntime.receipts import PolicyViolationWarning

    q = _qkv(torch.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with xrt_torch.policy(kernel_policy={"attention": "flash"}):
            F.scaled_dot_product_attention(q, q, q)
    [w] = [w for w in caught if issubclass(w.category, PolicyViolationWarning)]
    print(f"\n--- the call's warning\n{w.message}")
    assert w.filename == __file__ and "flash cannot run this call" in str(w.message)
    assert "torch runs efficient instead" in str(w.message)  # the reasons are torch's debug output where it gives one
