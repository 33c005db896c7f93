"""Receipts from torch.profiler: what ran, mapped to vocabulary names, judged against the policy."""

from __future__ import annotations

import contextlib
import json

import pytest
import torch

pytestmark = pytest.mark.torch
F = torch.nn.functional

import xpuruntime as xrt  # noqa: E402
import xpuruntime.pytorch as xrt_torch  # noqa: E402
from xpuruntime.pytorch._receipt import BLAS_NOTE, INDISTINGUISHABLE, classify_kernel  # noqa: E402
from xpuruntime.receipts import PolicyViolationWarning  # noqa: E402


def _attention(dtype: torch.dtype = torch.float32, grad: bool = False) -> torch.Tensor:
    q = torch.randn(2, 4, 16, 8, dtype=dtype, requires_grad=grad)
    return F.scaled_dot_product_attention(q, q, q, is_causal=True)


def _nodes(report: xrt.ExecutionReport, op: str) -> list:
    return [n for n in report.nodes if n.op_type == op]


def test_flash_on_the_cpu_is_torchs_cpu_flash_kernel_and_honoured():
    with xrt_torch.profile(kernel_policy={"attention": "flash"}, exec_policy={"fallback": "error"}) as receipt:
        _attention(grad=True).sum().backward()
    nodes = _nodes(receipt, "attention")
    assert {n.name for n in nodes} == {"aten::_scaled_dot_product_flash_attention_for_cpu",
                                       "aten::_scaled_dot_product_flash_attention_for_cpu_backward"}
    assert all(n.kernel == "flash" and n.requested_kernel == "flash" and n.provider == "cpu" for n in nodes)
    assert all(n.precision == "fp32" and n.calls == 1 and n.time_us > 0 for n in nodes)
    assert receipt.honored and receipt.profiled


def test_math_is_read_from_the_math_op():
    with xrt_torch.profile(kernel_policy={"attention": "math"}, exec_policy={"fallback": "error"}) as receipt:
        _attention()
    [node] = _nodes(receipt, "attention")
    assert (node.name, node.kernel) == ("aten::_scaled_dot_product_attention_math", "math")
    assert not _nodes(receipt, "matmul"), "the bmm inside the math path belongs to attention"


def test_a_cuda_only_backend_requested_on_the_cpu_is_a_violation_under_warn():
    with pytest.warns(PolicyViolationWarning, match="efficient"):
        with xrt_torch.profile(kernel_policy={"attention": "efficient"}, exec_policy={"fallback": "warn"}) as receipt:
            _attention()
    [v] = [v for v in receipt.violations if v.kind == "kernel"]
    # on the CPU the listed backends plus math are switched on: math is the last resort (flash was not asked for)
    assert (v.requested, v.actual) == ("efficient", "math") and "CPU" in v.reason


def test_a_cuda_only_backend_under_error_raises_a_policy_violation_from_the_block():
    with pytest.raises(xrt.PolicyViolationError, match="attention") as caught:
        with xrt_torch.policy(kernel_policy={"attention": "cudnn"}, exec_policy={"fallback": "error"}):
            _attention()
    assert caught.value.violations[0].subject == "attention"
    assert isinstance(caught.value.__cause__, RuntimeError)  # torch's own "no kernel" error is kept


def test_matmul_on_the_cpu_is_judged_against_cublas():
    layer = torch.nn.Linear(8, 8)
    with pytest.warns(PolicyViolationWarning, match="cublas"):
        with xrt_torch.profile(kernel_policy={"matmul": "cublas"}, exec_policy={"fallback": "warn"}) as receipt:
            layer(torch.randn(4, 8))
    [node] = _nodes(receipt, "matmul")
    assert (node.name, node.kernel, node.requested_kernel, node.provider) == ("aten::addmm", "default", "cublas",
                                                                               "cpu")
    assert not receipt.honored


def test_ops_the_policy_does_not_name_are_recorded_without_a_request():
    layer, norm = torch.nn.Linear(8, 8), torch.nn.LayerNorm(8)
    with xrt_torch.profile() as receipt:
        norm(layer(torch.randn(4, 8)))
    assert {(n.op_type, n.kernel, n.requested_kernel) for n in receipt.nodes} == {("matmul", "default", None),
                                                                                 ("layernorm", "native", None)}
    assert receipt.honored
    assert json.loads(receipt.to_json())["nodes"][0]["provider"] == "cpu"


def test_autocast_precision_is_recorded_and_judged():
    layer = torch.nn.Linear(8, 8)
    with xrt_torch.autocast(dtype=torch.bfloat16, device_type="cpu"), xrt_torch.profile() as receipt:
        layer(torch.randn(4, 8))
        _attention()
    assert receipt.requested["precision"] == "bf16"
    assert {n.precision for n in receipt.nodes} == {"bf16"} and receipt.honored
    with xrt_torch.profile() as inside:
        with xrt_torch.autocast(fp16=True, device_type="cpu"):
            layer(torch.randn(4, 8))
    assert inside.requested["precision"] == "fp16" and _nodes(inside, "matmul")[0].precision == "fp16"


def test_a_matmul_that_escaped_the_requested_precision_is_a_violation():
    layer = torch.nn.Linear(8, 8)
    with pytest.warns(PolicyViolationWarning, match="precision"):
        with xrt_torch.profile(exec_policy={"precision": "bf16", "fallback": "warn"}) as receipt:
            layer(torch.randn(4, 8))  # autocast: bf16
            with torch.autocast("cpu", enabled=False):
                layer(torch.randn(4, 8))  # fp32
    assert [(v.kind, v.requested, v.actual) for v in receipt.violations] == [("precision", "bf16", "fp32")]
    assert sorted(n.precision for n in _nodes(receipt, "matmul")) == ["bf16", "fp32"]


def test_a_policy_applied_for_cuda_still_autocasts_cpu_tensors():
    """A CUDA machine applies a policy for CUDA by default; CPU tensors in the block keep the policy's precision
    (the plan's device is data here: on a CPU build torch disables the CUDA autocast with a warning)."""
    from xpuruntime.pytorch import _state

    policy = xrt.Policy(execution={"precision": "bf16", "fallback": "allow"})
    plan = xrt_torch.translate(policy, device="cuda")
    layer = torch.nn.Linear(8, 8)
    cpu_build = pytest.warns(UserWarning) if not torch.cuda.is_available() else contextlib.nullcontext()
    with cpu_build, _state.applied(policy, plan), xrt_torch.profile() as receipt:
        layer(torch.randn(4, 8))
    assert [n.precision for n in _nodes(receipt, "matmul")] == ["bf16"]
    cuda = torch.cuda.is_available()  # a device named explicitly: autocast for that device only
    with xrt_torch.profile(exec_policy={"precision": "bf16", "fallback": "allow"}, device="cuda" if cuda else "cpu") \
            as receipt:
        layer(torch.randn(4, 8))
    assert [n.precision for n in _nodes(receipt, "matmul")] == ["fp32" if cuda else "bf16"]


@pytest.mark.parametrize("name, expected", [
    ("void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64, 128, 64, 4, false, false, "
     "cutlass::bfloat16_t>>(Flash_fwd_params)", ("attention", "flash")),
    ("void pytorch_flash::flash_bwd_dq_dk_dv_loop_seqk_parallel_kernel<Flash_bwd_kernel_traits<64>>"
     "(Flash_bwd_params)", ("attention", "flash")),
    ("fmha_cutlassF_bf16_aligned_64x64_rf_sm80(PyTorchMemEffAttention::AttentionKernel<cutlass::bfloat16_t>"
     "::Params)", ("attention", "efficient")),
    ("fmha_cutlassB_bf16_aligned_128x64_k64_sm80", ("attention", "efficient")),
    ("cudnn_generated_fort_native_sdpa_sm90_knob_7_64x128x64_4x1x1_kernel0_0", ("attention", "cudnn")),
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1_execute_segment_k_off_"
     "kernel__5x_cublas", ("matmul", INDISTINGUISHABLE)),
    ("nvjet_tst_128x256_64x4_1x2_h_bz_coopA_TNT", ("matmul", INDISTINGUISHABLE)),
    ("void cutlass::Kernel2<cutlass_80_tensorop_bf16_s16816gemm_relu_bf16_64x64_64x4_tn_align8>(Params)",
     ("matmul", INDISTINGUISHABLE)),
    ("sm80_xmma_fprop_implicit_gemm_tf32f32_tf32f32_f32_nhwckrsc_nchw_tilesize128x128x16_stage4_warpsize2x2x1_"
     "g1_tensor16x8x8_execute_kernel__5x_cudnn", ("conv", "cudnn")),
    ("void at::native::(anonymous namespace)::vectorized_layer_norm_kernel<c10::BFloat16, float>", (
        "layernorm", "native")),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<float>>", None),
])
def test_gpu_kernel_names_map_to_vocabulary_names(name, expected):
    assert classify_kernel(name) == expected


def test_the_blas_note_says_the_two_libraries_cannot_be_told_apart():
    assert BLAS_NOTE == "cublas/cublaslt: not distinguishable from kernel names"


def test_capture_graph_on_the_cpu_shows_in_the_receipt():
    with xrt_torch.profile(exec_policy={"fallback": "allow"}) as receipt:
        step = xrt_torch.capture_graph(lambda x: x * 2, torch.ones(2))
        step(torch.ones(2))
    assert [(v.kind, v.subject) for v in receipt.violations] == [("option", "cuda_graphs")]


def test_kernels_torch_has_no_switch_for_go_through_xpuruntime_kernels():
    xk = pytest.importorskip("xpuruntime.kernels")
    if "triton" not in xk.get_registry().kernels("layernorm"):
        pytest.skip("no Triton LayerNorm registered")
    missing = xk.get_registry().get("layernorm", "triton").availability()
    if missing:  # then torch's own layer_norm serves the list's next entry, with a note (tested below)
        pytest.skip(f"the Triton LayerNorm cannot be imported here: {missing}")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8))
    x = torch.randn(4, 8, requires_grad=True)
    expected = model(x)
    policy = {"layernorm": ["triton", "native"], "matmul": ["triton", "default"]}
    with xrt_torch.profile(kernel_policy=policy, exec_policy={"fallback": "error"}) as receipt:
        assert xk.active_policy().kernels == xrt.KernelPolicy(policy)  # one policy for both
        y = model(x)
        y.sum().backward()
    assert torch.allclose(y, expected, atol=1e-6)
    assert receipt.requested["kernels"]["layernorm"] == ["triton", "native"]
    assert "xpuruntime.kernels dispatch log" in receipt.evidence
    ran = {(n.name, n.kernel) for n in receipt.nodes}
    # CPU tensors: the Triton kernel needs CUDA tensors, so the list's next entry runs on any machine (the GPU
    # kernel matrix, tests/gpu, runs layernorm=triton on CUDA tensors)
    assert ("xpuruntime::layer_norm", "native") in ran and ("xpuruntime::layer_norm_backward", "native") in ran
    assert {k for name, k in ran if name.startswith("xpuruntime::matmul")} <= {"default", "triton"}
    assert receipt.honored, receipt.table()
    assert xk.active_policy().kernels == xrt.KernelPolicy()


def test_a_registered_kernel_whose_module_is_missing_is_passed_over_with_a_note():
    xk = pytest.importorskip("xpuruntime.kernels")
    missing = xk.get_registry().get("layernorm", "triton").availability()
    if not missing:
        pytest.skip("triton is importable here")
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8))
    x = torch.randn(4, 8)
    with xrt_torch.profile(kernel_policy={"layernorm": ["triton", "native"]}, exec_policy={"fallback": "error"}) as r:
        y = model(x)
    assert torch.allclose(y, model(x))
    assert any("layernorm: triton cannot be selected" in n for n in r.notes), r.notes
    assert r.honored, r.table()
