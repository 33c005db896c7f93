"""Policies applied to PyTorch's switches: the translation table, exact restore, nesting, threads, errors."""

from __future__ import annotations

import os
import threading
import warnings

import pytest
import torch

pytestmark = pytest.mark.torch

import xpuruntime as xrt  # noqa: E402
import xpuruntime.pytorch as xrt_torch  # noqa: E402
from xpuruntime.receipts import PolicyViolationWarning  # noqa: E402

SDP = torch.nn.attention.SDPBackend
HAS_PRIORITY = hasattr(torch._C, "_get_sdp_priority_order")
HAS_NEW_FP32 = hasattr(torch._C, "_get_fp32_precision_getter")
HAS_CUBLASLT = torch.version.cuda is not None


def _enabled() -> list[str]:
    cuda = torch.backends.cuda
    flags = {"flash": cuda.flash_sdp_enabled(), "efficient": cuda.mem_efficient_sdp_enabled(),
             "cudnn": cuda.cudnn_sdp_enabled(), "math": cuda.math_sdp_enabled()}
    return [name for name, on in flags.items() if on]


def _first_priority() -> int:
    return torch._C._get_sdp_priority_order()[0]


@pytest.fixture
def unusual_start(monkeypatch, read_switches):
    """Start from settings nobody has by default, so a restore to defaults would be caught."""
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    saved = read_switches()
    torch.backends.cuda.enable_math_sdp(False)
    torch.backends.cudnn.benchmark = True
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.allow_tf32 = False
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads - 1) if threads > 1 else 2)
    yield read_switches()
    torch.backends.cuda.enable_math_sdp(saved["math"])
    torch.backends.cudnn.benchmark = saved["benchmark"]
    torch.use_deterministic_algorithms(saved["deterministic"], warn_only=saved["warn_only"])
    torch.set_float32_matmul_precision(saved["matmul_precision"])
    torch.backends.cudnn.allow_tf32 = saved["cudnn_tf32"]
    if HAS_NEW_FP32:
        for key, value in saved.items():
            if key.startswith("fp32 "):
                torch._C._set_fp32_precision_setter(*key[5:].split("."), value)
    torch.set_num_threads(threads)


def test_a_policy_block_sets_every_switch_and_restores_each_exactly(unusual_start, switches):
    kp = {"attention": ["flash", "math"], "matmul": "cublas", "conv": "cudnn_exhaustive"}
    ep = xrt.ExecutionPolicy(precision="fp32", deterministic=True, num_threads=1, fallback="error")
    with xrt_torch.policy(kernel_policy=kp, exec_policy=ep) as applied:
        assert _enabled() == ["flash", "math"]  # fallback="error": only the listed backends
        if HAS_PRIORITY:
            assert _first_priority() == int(SDP.FLASH_ATTENTION)
        assert torch.backends.cudnn.benchmark and torch.backends.cudnn.benchmark_limit in (0, None)
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.backends.cudnn.deterministic and torch.get_num_threads() == 1
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"  # already deterministic: left as it was
        assert torch.get_float32_matmul_precision() == "highest"
        if HAS_NEW_FP32:
            assert torch.backends.cuda.matmul.fp32_precision == "ieee"
            assert torch.backends.cudnn.conv.fp32_precision == "ieee"
        assert applied.honored, applied.table()
        assert applied.requested["torch.nn.attention.sdpa_kernel"] == ["FLASH_ATTENTION", "MATH"]
        assert applied.requested["torch.backends.cuda.preferred_blas_library"] == "cublas"
    assert switches() == unusual_start


def test_tf32_precision_reaches_both_apis_and_torch_reads_them_without_complaint():
    with xrt_torch.policy(exec_policy={"precision": "tf32"}):
        assert torch.get_float32_matmul_precision() == "high"
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        if HAS_NEW_FP32:
            assert torch.backends.cuda.matmul.fp32_precision == "tf32"


@pytest.mark.skipif(not HAS_NEW_FP32, reason="torch < 2.9 has no fp32_precision API")
def test_a_mixed_fp32_state_is_left_alone_and_restored_exactly(switches):
    before = switches()
    try:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cuda.matmul.fp32_precision = "ieee"  # now torch refuses legacy reads: mixed APIs
        mixed = switches()
        assert str(mixed["matmul_tf32"]).startswith("refused")
        with xrt_torch.policy(exec_policy={"precision": "tf32"}):
            assert torch.backends.cuda.matmul.fp32_precision == "tf32"
        assert switches() == mixed
    finally:
        torch.set_float32_matmul_precision(before["matmul_precision"])
        for key in ("cuda.matmul", "mkldnn.matmul"):
            torch._C._set_fp32_precision_setter(*key.split("."), before[f"fp32 {key}"])


def test_warn_keeps_the_other_backends_behind_the_requested_one_on_cuda_and_math_on_the_cpu():
    policy = xrt.Policy(kernels={"attention": "efficient"}, execution={"fallback": "allow"})
    on_cuda = xrt_torch.translate(policy, device="cuda")
    assert [n for n in ("flash", "efficient", "cudnn", "math") if on_cuda.settings[f"sdpa.{n}"]] == \
        ["flash", "efficient", "cudnn", "math"]
    if HAS_PRIORITY:
        assert on_cuda.sdpa_backends()[0] == "EFFICIENT_ATTENTION"
    on_cpu = xrt_torch.translate(policy, device="cpu")  # torch's CPU dispatcher ignores the priority order
    assert on_cpu.sdpa_backends() == ["EFFICIENT_ATTENTION", "MATH"]
    assert any("efficient is a CUDA backend" in n for n in on_cpu.notes)
    with xrt_torch.policy(policy) as applied:
        expected = on_cuda if torch.cuda.is_available() else on_cpu
        assert applied.requested["torch.nn.attention.sdpa_kernel"] == expected.sdpa_backends()
        assert set(_enabled()) == {n for n in ("flash", "efficient", "cudnn", "math") if expected.settings[f"sdpa.{n}"]}
        if HAS_PRIORITY:
            assert _first_priority() == int(SDP.EFFICIENT_ATTENTION)


def test_blocks_nest_the_inner_one_wins_and_the_outer_comes_back(switches):
    base = switches()
    with xrt_torch.policy(kernel_policy={"attention": "flash", "conv": "cudnn_exhaustive"},
                          exec_policy={"fallback": "error"}):
        outer = switches()
        with xrt_torch.policy(kernel_policy={"attention": "math"}):
            assert _enabled() == ["math"]
            assert torch.backends.cudnn.benchmark  # the outer conv choice still holds
            assert xrt_torch.get_kernel_policy() == xrt.KernelPolicy(attention="math", conv="cudnn_exhaustive")
        assert switches() == outer
        assert xrt_torch.get_kernel_policy() == xrt.KernelPolicy(attention="flash", conv="cudnn_exhaustive")
    assert switches() == base and xrt_torch.get_kernel_policy() is None


def test_threads_see_their_own_policy_and_the_switches_come_back_whatever_the_exit_order(switches):
    base = switches()
    kernels = ["flash", "math", "efficient", "cudnn"]
    start, seen, errors = threading.Barrier(len(kernels)), {}, []
    leave = [threading.Event() for _ in kernels]

    def work(i: int, kernel: str) -> None:
        try:
            with xrt_torch.policy(kernel_policy={"attention": kernel}, exec_policy={"fallback": "allow"}):
                start.wait(timeout=10)
                seen[kernel] = xrt_torch.get_kernel_policy().get("attention")
                leave[i].wait(timeout=10)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i, k)) for i, k in enumerate(kernels)]
    for t in threads:
        t.start()
    for i in (2, 0, 3, 1):  # leave in an order unrelated to the entry order
        leave[i].set()
    for t in threads:
        t.join(timeout=20)
    assert not errors and seen == {k: k for k in kernels}
    assert xrt_torch.get_kernel_policy() is None
    assert switches() == base


def test_set_kernel_policy_lasts_until_cleared_and_blocks_apply_over_it(switches):
    base = switches()
    report = xrt_torch.set_kernel_policy(attention="flash_v2", conv="cudnn_exhaustive")
    try:
        xk = pytest.importorskip("xpuruntime.kernels")
        assert xk.active_policy().kernels.get("attention") == "flash"  # one process-wide policy for both
        assert report.honored and xrt_torch.get_kernel_policy() == xrt.KernelPolicy(attention="flash",
                                                                                    conv="cudnn_exhaustive")
        assert torch.backends.cudnn.benchmark
        with xrt_torch.policy(kernel_policy={"attention": "math"}, exec_policy={"fallback": "error"}):
            assert _enabled() == ["math"] and torch.backends.cudnn.benchmark
            assert xrt_torch.get_kernel_policy().get("conv") == "cudnn_exhaustive"
        assert "flash" in _enabled() and xrt_torch.get_kernel_policy().get("attention") == "flash"
        xrt_torch.set_kernel_policy(xrt.KernelPolicy(conv="cudnn_heuristic"))  # replaces, from the same base
        assert not torch.backends.cudnn.benchmark and xrt_torch.get_kernel_policy().get("attention") is None
    finally:
        xrt_torch.clear_kernel_policy()
    assert switches() == base and xrt_torch.get_kernel_policy() is None
    assert not xk.active_policy().kernels


def test_bad_op_and_kernel_names_are_refused_with_the_closest_name():
    with pytest.raises(xrt.PolicyError, match="attention"):
        xrt_torch.set_kernel_policy(atention="flash")
    with pytest.raises(xrt.PolicyError, match="did you mean 'flash'"):
        with xrt_torch.policy(kernel_policy={"attention": "flsh"}):
            pass  # pragma: no cover
    with pytest.raises(xrt.PolicyError, match="fp16"):
        xrt_torch.autocast(dtype="fp61").__enter__()
    assert xrt_torch.get_kernel_policy() is None


@pytest.mark.parametrize("kernels, kind, requested", [
    ({"matmul": "nvmath"}, "kernel", "nvmath"),
    ({"conv": "cudnn_default"}, "kernel", "cudnn_default"),
    ({"attention": "triton"}, "kernel", "triton"),
])
def test_what_torch_cannot_select_follows_the_fallback_rule(kernels, kind, requested, switches):
    base = switches()
    with pytest.raises(xrt.PolicyViolationError, match=requested):
        with xrt_torch.policy(kernel_policy=kernels, exec_policy={"fallback": "error"}):
            pass  # pragma: no cover
    assert switches() == base  # refused before the block: nothing was left set
    with pytest.warns(PolicyViolationWarning, match=requested):
        with xrt_torch.policy(kernel_policy=kernels, exec_policy={"fallback": "warn"}) as applied:
            assert [(v.kind, v.requested) for v in applied.violations] == [(kind, requested)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with xrt_torch.policy(kernel_policy=kernels, exec_policy={"fallback": "allow"}) as applied:
            assert not applied.honored


def test_an_ordered_list_goes_on_to_what_torch_can_select():
    from xpuruntime.policies import vocabulary

    vocabulary.register_kernel("matmul", "test_unserved")  # a name no library serves (nvmath may be installed)
    with xrt_torch.policy(kernel_policy={"matmul": ["test_unserved", "cublas"]},
                          exec_policy={"fallback": "error"}) as applied:
        assert applied.honored
        assert applied.requested["torch.backends.cuda.preferred_blas_library"] == "cublas"
        assert any("test_unserved cannot be selected" in n for n in applied.notes)


def test_the_translation_table_for_execution_fields():
    plan = xrt_torch.translate(xrt.Policy(execution={"precision": "bf16", "execution_timeout_ms": 100}))
    assert plan.autocast == "bf16" and "fp32.matmul" not in plan.settings
    assert [(v.kind, v.subject) for v in plan.violations] == [("option", "execution_timeout_ms")]
    plan = xrt_torch.translate(xrt.Policy(execution={"precision": "int8"}))
    assert [(v.kind, v.requested) for v in plan.violations] == [("precision", "int8")]
    plan = xrt_torch.translate(xrt.Policy(kernels=xrt.KernelPolicy(matmul="cublas").set(
        "matmul", "cublaslt", when={"dtype": "bf16"})))  # xpuruntime.kernels serves both: it applies the rules
    assert plan.settings["blas"] == "cublas" and plan.custom["matmul"] == "per-shape rules"
    plan = xrt_torch.translate(xrt.Policy(kernels=xrt.KernelPolicy(conv="cudnn_heuristic").set(
        "conv", "cudnn_exhaustive", when={"batch": 1})))
    assert plan.settings["cudnn.benchmark"] is False and any("per-shape rules" in n for n in plan.notes)
    plan = xrt_torch.translate(xrt.Policy(kernels={"attention": "auto", "matmul": "auto", "conv": "auto"}))
    assert plan.settings["blas"] == "default" and plan.settings["cudnn.benchmark"] is True
    assert all(plan.settings[f"sdpa.{n}"] for n in ("flash", "efficient", "cudnn", "math"))


@pytest.mark.skipif(HAS_CUBLASLT, reason="this torch has cuBLASLt: the switch is accepted")
def test_cublaslt_on_a_torch_without_cublaslt_is_a_violation(switches):
    base = switches()
    with pytest.raises(xrt.PolicyViolationError, match="cuBLASLt"):
        with xrt_torch.policy(kernel_policy={"matmul": "cublaslt"}, exec_policy={"fallback": "error"}):
            pass  # pragma: no cover
    assert switches() == base
    with pytest.warns(PolicyViolationWarning, match="cuBLASLt"):
        with xrt_torch.policy(kernel_policy={"matmul": "cublasLt"}, exec_policy={"fallback": "warn"}) as applied:
            assert applied.violations[0].subject == "matmul"


def test_deterministic_sets_the_cublas_workspace_and_puts_the_variable_back(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    with xrt_torch.policy(exec_policy={"deterministic": True, "fallback": "error"}) as applied:
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        assert torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.benchmark
        assert applied.requested["torch.use_deterministic_algorithms"] is True
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ


def test_deterministic_after_cuda_started_is_a_violation(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)  # as if a CUDA call had run already
    with pytest.raises(xrt.PolicyViolationError, match="CUBLAS_WORKSPACE_CONFIG"):
        with xrt_torch.policy(exec_policy={"deterministic": True, "fallback": "error"}):
            pass  # pragma: no cover
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ


def test_only_the_switches_a_policy_set_are_restored_so_the_users_own_changes_survive(switches):
    base = switches()
    xrt_torch.set_kernel_policy(attention="math")
    try:
        torch.backends.cudnn.benchmark = True  # the user's own change, after set_kernel_policy
        with xrt_torch.policy(kernel_policy={"conv": "cudnn_heuristic"}):
            assert not torch.backends.cudnn.benchmark
        assert torch.backends.cudnn.benchmark
        xrt_torch.clear_kernel_policy()
        assert torch.backends.cudnn.benchmark and _enabled() == [k for k, v in (
            ("flash", base["flash"]), ("efficient", base["mem_efficient"]), ("cudnn", base["cudnn_sdp"]),
            ("math", base["math"])) if v]
    finally:
        xrt_torch.clear_kernel_policy()
        torch.backends.cudnn.benchmark = base["benchmark"]
    assert switches() == base


@pytest.mark.parametrize("start", ["default", "unusual"])
def test_a_plan_applied_again_replays_exactly_the_switches_its_first_write_set(start, request, switches):
    """An engine applies one plan around every run; from the second time the raw values are replayed in one go.
    Inside, the switches must be those the setters produced; outside, those before; a changed start writes anew."""
    from xpuruntime.pytorch import _state, applied_policy, translate

    before = request.getfixturevalue("unusual_start") if start == "unusual" else switches()
    policy = xrt.Policy(kernels={"attention": ["flash", "math"], "matmul": "cublas"},
                        execution=xrt.ExecutionPolicy(precision="fp32", deterministic=True, num_threads=1))
    plan = translate(policy, execution=True)
    inside = []
    for _ in range(3):
        with applied_policy(policy, plan, receipt=False) as receipt:
            assert receipt is None
            inside.append(switches())
        assert switches() == before
    assert id(plan) in _state._replays and inside[1] == inside[0] and inside[2] == inside[0]
    torch.backends.cudnn.benchmark = not torch.backends.cudnn.benchmark  # another start: the setters run again
    try:
        with applied_policy(policy, plan, receipt=False):
            assert switches() == inside[0]
    finally:
        torch.backends.cudnn.benchmark = not torch.backends.cudnn.benchmark
    assert switches() == before
