"""Every kernel choice the PyTorch extension translates, on the CPU, under every fallback rule.

The policies are applied for the CPU explicitly (``device="cpu"``), so the cells hold on a CUDA machine too
(there, by default, a policy is applied for CUDA and only the per-call SDPA check narrows CPU calls).

One cell = (op, choice, inputs) x fallback. Each cell asserts two things:

1. what ran, read from ``torch.profiler`` (the aten op the dispatcher picked, mapped to the vocabulary);
2. what the fallback rule calls for: ``error`` raises ``PolicyViolationError`` (where it is found: at the
   policy's entry, at the call, or in the profiled receipt), ``warn`` warns there, ``allow`` stays silent and
   the receipt still says it.

Outcome kinds: ``honoured`` (the first listed choice ran: silent everywhere, receipt honoured); ``listed``
(a later entry of the list ran: silent under error and allow, a warning *at the call* under warn, receipt
honoured); ``violation`` (nothing listed ran, or the device cannot apply it). The CUDA cells are in
tests/gpu/test_kernel_matrix_gpu.py.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from _kernel_matrix import Cell, assert_cell, cell_id, run_cell  # noqa: E402

import xpuruntime as xrt  # noqa: E402
import xpuruntime.pytorch as xrt_torch  # noqa: E402
from xpuruntime.receipts import PolicyViolationWarning  # noqa: E402

CPU_BUILD = torch.version.cuda is None  # a CPU build has no cuBLASLt: torch refuses the switch
FLASH_CPU = "aten::_scaled_dot_product_flash_attention_for_cpu"
MATH = "aten::_scaled_dot_product_attention_math"

_q4 = torch.randn(1, 2, 16, 8)
_q3 = torch.randn(2, 16, 8)  # no batch dim: torch's CPU flash kernel needs 4-D inputs
_a = torch.randn(8, 8)
_x, _w = torch.randn(1, 3, 8, 8), torch.randn(4, 3, 3, 3)
_ln = torch.randn(4, 16)
WORK: dict[tuple[str, str], Callable[[], Any]] = {
    ("attention", "supported"): lambda: F.scaled_dot_product_attention(_q4, _q4, _q4),
    ("attention", "unsupported"): lambda: F.scaled_dot_product_attention(_q3, _q3, _q3),
    ("matmul", "any"): lambda: _a @ _a,
    ("conv", "any"): lambda: F.conv2d(_x, _w),
    ("layernorm", "any"): lambda: F.layer_norm(_ln, (16,)),
}


# fmt: off
CPU_CELLS = [
    Cell("attention", "flash", "supported", "flash", FLASH_CPU, "honoured"),
    Cell("attention", "flash", "unsupported", "math", MATH, "violation", "call"),
    Cell("attention", "efficient", "supported", "math", MATH, "violation", "call", "efficient is a CUDA backend"),
    Cell("attention", "efficient", "unsupported", "math", MATH, "violation", "call", "efficient is a CUDA backend"),
    Cell("attention", "cudnn", "supported", "math", MATH, "violation", "call", "cudnn is a CUDA backend"),
    Cell("attention", "cudnn", "unsupported", "math", MATH, "violation", "call", "cudnn is a CUDA backend"),
    Cell("attention", "math", "supported", "math", MATH, "honoured"),  # the issue: flash used to run here
    Cell("attention", "math", "unsupported", "math", MATH, "honoured"),
    Cell("attention", ("flash", "math"), "supported", "flash", FLASH_CPU, "honoured"),
    Cell("attention", ("flash", "math"), "unsupported", "math", MATH, "listed"),
    Cell("attention", ("math", "flash"), "supported", "math", MATH, "honoured", note="never reached"),
    Cell("attention", ("efficient", "flash"), "supported", "flash", FLASH_CPU, "honoured",
         note="efficient is a CUDA backend"),
    Cell("attention", ("efficient", "flash"), "unsupported", "math", MATH, "violation", "call",
         "efficient is a CUDA backend"),
    Cell("matmul", "cublas", "any", "default", "aten::mm", "violation", "receipt", "only CUDA matmuls read"),
    Cell("matmul", "cublaslt", "any", "default", "aten::mm", "violation", "entry" if CPU_BUILD else "receipt",
         "" if CPU_BUILD else "only CUDA matmuls read"),
    Cell("conv", "cudnn_exhaustive", "any", "default", "aten::_slow_conv2d_forward", "violation", "receipt",
         "only CUDA convs read"),
    Cell("conv", "cudnn_heuristic", "any", "default", "aten::_slow_conv2d_forward", "violation", "receipt",
         "only CUDA convs read"),
    Cell("conv", "cudnn_default", "any", "default", "aten::_slow_conv2d_forward", "violation", "entry"),
    Cell("conv", "auto", "any", "default", "aten::_slow_conv2d_forward", "honoured"),
    Cell("layernorm", "native", "any", "native", "aten::native_layer_norm", "honoured"),
]
# fmt: on


def _triton_cells() -> list[Cell]:
    """layernorm=triton on a machine without a GPU: refused at entry with the registry's reason."""
    from xpuruntime.pytorch import _kernels

    if _kernels.available("layernorm", "triton"):  # triton importable (a GPU machine): the GPU matrix covers it
        return []
    return [Cell("layernorm", "triton", "any", "native", "aten::native_layer_norm", "violation", "entry"),
            Cell("layernorm", ("triton", "native"), "any", "native", "aten::native_layer_norm", "honoured",
                 note="triton cannot be selected")]


@pytest.mark.parametrize("fallback", ["error", "warn", "allow"])
@pytest.mark.parametrize("cell", CPU_CELLS + _triton_cells(), ids=cell_id)
def test_cpu_cell(cell: Cell, fallback: str):
    seen = run_cell(cell.op, cell.choice, fallback, WORK[(cell.op, cell.inputs)], device="cpu")
    assert_cell(cell, fallback, seen, __file__)
    assert seen.applied is None or seen.applied.device == "cpu"


def test_the_issue_example_runs_math_and_a_flash_request_on_unsupported_inputs_warns_at_the_call():
    q = torch.randn(2, 4, 128, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about: math runs, as asked
        with xrt_torch.policy(kernel_policy=xrt.KernelPolicy(attention="math")), xrt_torch.profile() as receipt:
            F.scaled_dot_product_attention(q, q, q)
    assert {n.name for n in receipt.nodes if n.op_type == "attention"} == {MATH}
    with pytest.warns(PolicyViolationWarning, match=r"flash cannot run this call .*torch runs math") as record:
        with xrt_torch.policy(kernel_policy={"attention": "flash"}):
            F.scaled_dot_product_attention(q[0], q[0], q[0])
    assert record[0].filename == __file__


def test_a_cpu_call_on_a_machine_whose_switches_are_chosen_for_cuda_is_narrowed_to_the_cpu_set():
    """On a CUDA machine the switches keep every backend behind the listed one; torch's CPU dispatcher would
    then run flash for ``math``. The per-call check narrows the switches for the CPU call and puts them back."""
    from xpuruntime.pytorch import _state

    plan = xrt_torch.translate(xrt.Policy(kernels={"attention": "math"}), execution=False, device="cuda")
    assert plan.settings["sdpa.flash"]  # the CUDA set: flash stays on behind math
    q = torch.randn(1, 2, 16, 8)
    with _state.applied(xrt.Policy(kernels={"attention": "math"}), plan):
        before = torch.backends.cuda.flash_sdp_enabled()
        with xrt_torch.profile() as receipt:
            F.scaled_dot_product_attention(q, q, q)
        assert torch.backends.cuda.flash_sdp_enabled() == before  # put back after the call
    assert {n.name for n in receipt.nodes if n.op_type == "attention"} == {MATH}


def test_the_check_leaves_a_users_own_sdpa_kernel_block_alone():
    q = torch.randn(1, 2, 16, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with xrt_torch.policy(kernel_policy={"attention": "flash"}):
            with torch.nn.attention.sdpa_kernel([torch.nn.attention.SDPBackend.MATH]):  # the user's own choice
                with xrt_torch.profile(exec_policy={"fallback": "allow"}) as receipt:
                    F.scaled_dot_product_attention(q, q, q)
    assert {n.name for n in receipt.nodes if n.op_type == "attention"} == {MATH}


def test_no_policy_no_check():
    from torch.overrides import _get_current_function_mode_stack

    assert not _get_current_function_mode_stack()
    with xrt_torch.policy(kernel_policy={"attention": "flash"}, exec_policy={"fallback": "error"}, device="cpu"):
        assert not _get_current_function_mode_stack()  # on the CPU under error: torch itself refuses
    with xrt_torch.policy(kernel_policy={"attention": "flash"}, device="cpu"):
        assert _get_current_function_mode_stack()
    assert not _get_current_function_mode_stack()


def test_a_cpu_policy_on_a_cuda_machine_still_narrows_cuda_calls_under_allow():
    """Under allow a CUDA call needs the CUDA set (fused kernels behind the listed one), which a CPU plan lacks;
    under error the two sets run the same backends, so nothing is entered (what checking() decides, as data)."""
    from xpuruntime.pytorch import _sdpa_check

    def plan(fallback: str, device: str):
        return xrt_torch.translate(xrt.Policy(kernels={"attention": "flash"}, execution={"fallback": fallback}),
                                   execution=False, device=device)

    assert _sdpa_check.nothing_to_narrow(plan("error", "cpu"))
    assert not _sdpa_check.nothing_to_narrow(plan("warn", "cpu"))
    assert not _sdpa_check.nothing_to_narrow(plan("error", "cuda"))  # CPU calls on a CUDA machine: narrowed
    assert _sdpa_check.nothing_to_narrow(plan("allow", "cpu")) == (not torch.cuda.is_available())


@pytest.mark.parametrize("device, expected", [("cpu", "cpu"), ("cuda:1", "cuda"), (None, None)])
def test_the_device_a_policy_is_applied_for_is_a_device_type(device, expected):
    default = "cuda" if torch.cuda.is_available() else "cpu"
    plan = xrt_torch.translate(xrt.Policy(kernels={"attention": "math"}), device=device)
    assert plan.device == (expected or default)
    with xrt_torch.policy(kernel_policy={"attention": "math"}, device=device) as applied:
        assert applied.device == (expected or default)


def test_a_device_torch_policies_cannot_target_is_refused_by_name():
    with pytest.raises(xrt.PolicyError, match="device") as info, \
            xrt_torch.policy(kernel_policy={"attention": "math"}, device="npu"):
        pass
    assert info.value.received == "'npu'" and "x.device" in info.value.hint
