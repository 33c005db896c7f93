"""Kernel registry, dispatcher, active policy, dispatch logs and the torch ops, as a user meets them on a CPU.

The Triton kernels themselves run on a GPU (tests/gpu/test_triton_kernels.py); here they are checked through
Triton's interpreter in a subprocess when triton is installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import warnings

import pytest

import xpuruntime.kernels as xk
from xpuruntime import KernelPolicy, Policy, PolicyError, PolicyViolationError, UnsupportedOperationError
from xpuruntime.kernels import DispatchContext, Dispatcher, KernelRegistry
from xpuruntime.policies import vocabulary
from xpuruntime.receipts import PolicyViolationWarning

TRITON_ON_CPU = "Triton kernels run on CUDA tensors; got a cpu tensor"


def _ln_ctx(device: str = "cpu", dtype: str = "bf16", rows: int = 8, hidden: int = 768) -> DispatchContext:
    return DispatchContext("layernorm", device=device, dtype=dtype, dims={"rows": rows, "hidden": hidden},
                           shapes=((rows, hidden),))


def _mm_ctx(dtype: str = "bf16", m: int = 64, n: int = 64, k: int = 64, device: str = "cpu") -> DispatchContext:
    return DispatchContext("matmul", device=device, dtype=dtype, dims={"batch": 1, "m": m, "n": n, "k": k},
                           shapes=((m, k), (k, n)))


@pytest.fixture
def registry() -> KernelRegistry:
    """A private registry with kernels that all run on the CPU, so order and rules are what decides."""
    reg = KernelRegistry()
    reg.register("matmul", "default", forward=lambda a, b: "default", default=True)
    reg.register("matmul", "cublas", forward=lambda a, b: "cublas", devices=("cuda",))
    reg.register("matmul", "triton", forward=lambda a, b: "triton", dtypes=("fp16", "bf16"))
    reg.register("matmul", "nvmath", forward=lambda a, b: "nvmath")
    return reg


@pytest.fixture
def logs():
    xk.clear_dispatch_logs()
    xk.enable_dispatch_logging()
    yield xk.get_dispatch_logs
    xk.disable_dispatch_logging()
    xk.clear_dispatch_logs()


# ----------------------------------------------------------------------------------------------- package
def test_importing_kernels_imports_neither_torch_nor_triton():
    code = ("import sys, xpuruntime.kernels as k; k.get_registry()\n"
            "print([m for m in ('torch', 'triton') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# ----------------------------------------------------------------------------------------------- registry
def test_builtin_kernels_are_listed_by_op():
    reg = xk.get_registry()
    assert reg.ops()[:3] == ["layernorm", "matmul", "attention"]
    assert reg.kernels("layernorm") == ["native", "triton"]
    assert reg.kernels("matmul") == ["default", "cublas", "cublaslt", "triton", "nvmath"]
    assert reg.kernels("attention") == ["default", "flash", "efficient", "cudnn", "math"]
    assert reg.default("layer_norm").name == "native" and reg.default("gemm").name == "default"
    described = {k["name"]: k for k in reg.describe()["layernorm"]}
    assert described["triton"]["requires"] == ["torch", "triton"] and described["native"]["default"] is True


def test_register_adds_the_name_to_the_policy_vocabulary_and_never_activates_it(registry: KernelRegistry):
    assert "test_fused_gemm" not in vocabulary.kernels_for("matmul")
    registry.register("matmul", "test_fused_gemm", forward=lambda a, b: None, description="a test kernel")
    assert "test_fused_gemm" in vocabulary.kernels_for("matmul")
    assert KernelPolicy(matmul="test_fused_gemm").get("matmul") == "test_fused_gemm"  # now a valid policy
    assert Dispatcher(registry).select("matmul", _mm_ctx(), Policy()).kernel == "default"  # not active


def test_register_twice_needs_replace_and_unknown_names_get_a_hint(registry: KernelRegistry):
    with pytest.raises(UnsupportedOperationError, match="already registered"):
        registry.register("matmul", "triton", forward=lambda a, b: None)
    registry.register("matmul", "triton", forward=lambda a, b: "new", replace=True)
    assert registry.get("matmul", "triton").load_forward()(1, 2) == "new"
    with pytest.raises(UnsupportedOperationError) as err:
        registry.get("matmul", "tritn")
    assert err.value.hint == "did you mean 'triton'?"


def test_unregister_moves_the_default(registry: KernelRegistry):
    registry.unregister("matmul", "default")
    assert registry.kernels("matmul") == ["cublas", "triton", "nvmath"]
    assert registry.default("matmul").name == "cublas"


def test_supports_checks_device_then_dtype_then_modules_then_the_kernel_check():
    reg = KernelRegistry()
    impl = reg.register("layernorm", "native", devices=("cuda",), dtypes=("bf16",), requires=("no_such_module_xyz",),
                        supports=lambda ctx: "hidden too large" if ctx.dim("hidden") > 4096 else None,
                        install_hint="pip install no-such-module")
    assert impl.supports(_ln_ctx("cpu")) == "runs on cuda tensors only; got a cpu tensor"
    assert impl.supports(_ln_ctx("cuda", "fp32")) == "dtype fp32 is not supported (supported: bf16)"
    assert impl.supports(_ln_ctx("cuda")) == "no_such_module_xyz is not installed (pip install no-such-module)"
    ok = reg.register("layernorm", "test_ok", dtypes=("bfloat16",),
                      supports=lambda ctx: "hidden too large" if ctx.dim("hidden") > 4096 else None)
    assert ok.supports(_ln_ctx(hidden=8192)) == "hidden too large"
    assert ok.supports(_ln_ctx(hidden=1024)) is None


def test_dispatch_context_canonicalises_and_is_read_only():
    ctx = DispatchContext("layer_norm", device="cuda", dtype="bf16", dims={"rows": 2, "hidden": 3})
    assert ctx.op == "layernorm" and ctx.dim("hidden") == 3 and ctx.dim("batch") is None
    assert ctx.describe() == "layernorm bf16 cuda rows=2 hidden=3"
    with pytest.raises(TypeError):
        ctx.dims["rows"] = 5  # type: ignore[index]


# ----------------------------------------------------------------------------------------------- dispatcher
@pytest.mark.torch  # the native kernel it falls back to is torch's
def test_triton_is_skipped_on_cpu_with_its_reason():
    sel = xk.select("layernorm", _ln_ctx(), KernelPolicy(layernorm=["triton", "native"]))
    assert sel.kernel == "native" and not sel.fallback
    assert [name for name, _ in sel.skipped] == ["triton"]
    assert sel.skipped[0][1].startswith(TRITON_ON_CPU) or "triton is not installed" in sel.skipped[0][1]
    assert sel.reason == "kernels.layernorm = [triton, native]: triton skipped; native applies"


def test_the_policy_list_order_is_respected(registry: KernelRegistry):
    d = Dispatcher(registry)
    assert d.select("matmul", _mm_ctx(), KernelPolicy(matmul=["nvmath", "triton"])).kernel == "nvmath"
    assert d.select("matmul", _mm_ctx(), KernelPolicy(matmul=["triton", "nvmath"])).kernel == "triton"
    sel = d.select("matmul", _mm_ctx(), KernelPolicy(matmul=["cublas", "triton", "nvmath"]))
    assert sel.kernel == "triton" and sel.skipped == (("cublas", "runs on cuda tensors only; got a cpu tensor"),)


def test_auto_and_default_mean_the_registry_default(registry: KernelRegistry):
    d = Dispatcher(registry)
    for name in ("auto", "default"):
        sel = d.select("matmul", _mm_ctx(), KernelPolicy(matmul=name))
        assert sel.kernel == "default" and sel.reason.endswith(f"{name} -> default (the registry's default)")
    assert d.select("matmul", _mm_ctx(), Policy()).reason.startswith("no matmul preference in the policy")


def test_rules_by_dtype_and_shape_pick_different_kernels(registry: KernelRegistry):
    kp = KernelPolicy(matmul="default")
    kp.set("matmul", "nvmath", when={"dtype": "bf16", "k": ">=4096"})
    kp.set("matmul", ["cublas", "triton"], when={"dtype": ["fp16", "bf16"], "m": "1..64"})
    d = Dispatcher(registry)
    big_k = d.select("matmul", _mm_ctx("bf16", m=128, k=8192), kp)
    assert big_k.kernel == "nvmath" and big_k.reason.startswith("kernels.matmul.rules[0] = nvmath")
    skinny = d.select("matmul", _mm_ctx("fp16", m=16, k=1024), kp)
    assert skinny.kernel == "triton" and skinny.skipped[0][0] == "cublas"
    assert d.select("matmul", _mm_ctx("fp32", m=16, k=1024), kp).kernel == "default"  # no rule for fp32
    assert d.select("matmul", _mm_ctx("int64", m=16), kp).kernel == "default"  # dtype rules ignore unknown dtypes


@pytest.mark.torch  # the default kernel it falls back to is torch's
def test_a_vocabulary_kernel_without_an_implementation_is_skipped_with_a_reason():
    ctx = DispatchContext("attention", device="cpu", dtype="fp32",
                          dims={"batch": 1, "heads": 2, "seq_q": 8, "seq_k": 8, "head_dim": 16})
    sel = xk.select("attention", ctx, KernelPolicy(attention=["triton", "default"]))
    assert sel.kernel == "default"
    assert sel.skipped[0][0] == "triton" and "no implementation is registered" in sel.skipped[0][1]


def test_fallback_error_names_the_skipped_kernels_and_reasons(registry: KernelRegistry):
    policy = Policy(kernels={"matmul": ["cublas", "triton"]}, execution={"fallback": "error"})
    with pytest.raises(PolicyViolationError) as err:
        Dispatcher(registry).select("matmul", _mm_ctx("fp32"), policy)
    text = str(err.value)
    assert "matmul fp32 cpu" in text
    assert "cublas: runs on cuda tensors only; got a cpu tensor" in text
    assert "triton: dtype fp32 is not supported (supported: fp16, bf16)" in text
    assert [name for name, _ in err.value.violations] == ["cublas", "triton"]


def test_fallback_warn_warns_and_uses_the_default(registry: KernelRegistry):
    policy = Policy(kernels={"matmul": "cublas"}, execution={"fallback": "warn"})
    with pytest.warns(PolicyViolationWarning, match="runs on cuda tensors only"):
        sel = Dispatcher(registry).select("matmul", _mm_ctx(), policy)
    assert sel.kernel == "default" and sel.fallback
    assert sel.reason == ("fallback=warn: nothing in kernels.matmul = cublas applies; "
                          "using the op's default kernel (default)")


def test_fallback_allow_is_silent_and_an_explicit_rule_overrides_the_policy(registry: KernelRegistry):
    policy = Policy(kernels={"matmul": "cublas"}, execution={"fallback": "allow"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Dispatcher(registry).select("matmul", _mm_ctx(), policy).kernel == "default"
    with pytest.raises(PolicyViolationError):
        Dispatcher(registry).select("matmul", _mm_ctx(), policy, fallback="error")
    with pytest.raises(PolicyError, match="unknown fallback"):
        Dispatcher(registry).select("matmul", _mm_ctx(), policy, fallback="ignore")


def test_a_kernel_policy_alone_falls_back_with_a_warning(registry: KernelRegistry):
    with pytest.warns(PolicyViolationWarning):
        assert Dispatcher(registry).select("matmul", _mm_ctx(), KernelPolicy(matmul="cublas")).kernel == "default"


def test_select_refuses_a_context_for_another_op():
    with pytest.raises(UnsupportedOperationError, match="another op"):
        xk.select("matmul", _ln_ctx())


# ----------------------------------------------------------------------------------------------- active policy
def test_use_policy_nests_and_restores():
    assert xk.active_policy().kernels.get("layernorm") is None
    with xk.use_policy(KernelPolicy(layernorm="triton")) as outer:
        assert xk.active_policy() is outer
        with xk.use_policy({"kernels": {"layernorm": "native"}}):
            assert xk.active_policy().kernels.get("layernorm") == "native"
        assert xk.active_policy().kernels.get("layernorm") == "triton"
    assert xk.active_policy().kernels.get("layernorm") is None


def test_use_policy_restores_on_error():
    with pytest.raises(RuntimeError), xk.use_policy({"kernels": {"matmul": "triton"}}):
        raise RuntimeError("boom")
    assert xk.active_policy().kernels.get("matmul") is None


def test_the_dispatcher_reads_the_active_policy():
    with xk.use_policy(Policy(kernels={"layernorm": "triton"}, execution={"fallback": "error"})):
        with pytest.raises(PolicyViolationError, match="triton"):
            xk.select("layernorm", _ln_ctx())


def test_set_active_policy_is_process_wide_and_use_policy_is_per_thread():
    seen: list[str | None] = []

    def other_thread() -> None:
        seen.append(xk.active_policy().kernels.get("matmul"))

    previous = xk.set_active_policy({"kernels": {"matmul": "triton"}})
    try:
        with xk.use_policy({"kernels": {"matmul": "cublas"}}):
            assert xk.active_policy().kernels.get("matmul") == "cublas"
            thread = threading.Thread(target=other_thread)
            thread.start()
            thread.join()
        assert xk.active_policy().kernels.get("matmul") == "triton"
    finally:
        assert xk.set_active_policy(previous).kernels.get("matmul") == "triton"
    assert seen == ["triton"]
    assert xk.active_policy().kernels.get("matmul") is None


# ----------------------------------------------------------------------------------------------- dispatch log
def test_logging_is_off_by_default_and_records_each_decision_when_on(registry: KernelRegistry):
    xk.clear_dispatch_logs()
    Dispatcher(registry).select("matmul", _mm_ctx(), KernelPolicy(matmul="triton"))
    assert xk.get_dispatch_logs() == []
    xk.enable_dispatch_logging()
    try:
        Dispatcher(registry).select("matmul", _mm_ctx("bf16", m=16), KernelPolicy(matmul=["cublas", "triton"]))
        (record,) = xk.get_dispatch_logs()
    finally:
        xk.disable_dispatch_logging()
        xk.clear_dispatch_logs()
    assert (record.op, record.kernel, record.dtype, record.device) == ("matmul", "triton", "bf16", "cpu")
    assert record.shapes == [[16, 64], [64, 64]] and record.dims == {"batch": 1, "m": 16, "n": 64, "k": 64}
    assert record.skipped == [("cublas", "runs on cuda tensors only; got a cpu tensor")]
    assert record.requested == ["cublas", "triton"] and record.gpu_time_ms is None
    assert record.to_dict()["reason"] == record.reason


def test_the_log_is_bounded_and_filterable(logs, registry: KernelRegistry):
    xk.enable_dispatch_logging(maxlen=3)
    d = Dispatcher(registry)
    for m in range(1, 6):
        d.select("matmul", _mm_ctx(m=m), Policy())
    assert [r.dims["m"] for r in logs()] == [3, 4, 5]
    assert logs("layernorm") == []
    xk.clear_dispatch_logs()
    assert logs() == []
    with pytest.raises(UnsupportedOperationError):
        xk.enable_dispatch_logging(maxlen=0)


def test_logging_is_thread_safe(logs, registry: KernelRegistry):
    d = Dispatcher(registry)

    def work() -> None:
        for _ in range(200):
            d.select("matmul", _mm_ctx(), Policy())

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(logs()) == 1600


def test_dispatch_logging_collects_a_block_and_restores_the_previous_state(registry: KernelRegistry):
    assert not xk.dispatch_logging_enabled()
    with xk.dispatch_logging() as records:
        Dispatcher(registry).select("matmul", _mm_ctx(), KernelPolicy(matmul="nvmath"))
    assert [r.kernel for r in records] == ["nvmath"]
    assert not xk.dispatch_logging_enabled()
    xk.clear_dispatch_logs()


def test_two_overlapping_blocks_in_two_threads_each_collect_their_own_and_end_independently(
        registry: KernelRegistry):
    """Thread A opens a block, B opens one, A's ends while B's is open: B keeps recording; after both, logging
    is off again (the state of a block lives in a ContextVar, not in module globals)."""
    d = Dispatcher(registry)
    a_open, b_open, a_closed, b_done = (threading.Event() for _ in range(4))
    seen: dict[str, list[str]] = {}

    def a() -> None:
        with xk.dispatch_logging() as records:
            a_open.set()
            b_open.wait(5)
            d.select("matmul", _mm_ctx(), KernelPolicy(matmul="nvmath"))
        seen["a"] = [r.kernel for r in records]
        a_closed.set()

    def b() -> None:
        a_open.wait(5)
        with xk.dispatch_logging() as records:
            b_open.set()
            a_closed.wait(5)
            assert xk.dispatch_logging_enabled()
            d.select("matmul", _mm_ctx(), KernelPolicy(matmul="triton"))
        seen["b"] = [r.kernel for r in records]
        b_done.set()

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert seen == {"a": ["nvmath"], "b": ["triton"]}
    assert not xk.dispatch_logging_enabled()
    assert xk.get_dispatch_logs() == []


# ----------------------------------------------------------------------------------------------- torch ops
try:  # the tests that use them are marked torch: tests/conftest.py skips them without it
    import torch
    import torch.nn.functional as F
except ImportError:  # pragma: no cover - CI installs torch
    torch = F = None

needs_torch = pytest.mark.torch


@pytest.fixture
def counting_kernel():
    """A layernorm kernel (PyTorch's math underneath) that counts its forward and backward calls."""
    from xpuruntime.kernels import torch_ops

    calls: list[str] = []

    def forward(*args):
        calls.append("forward")
        return torch_ops.native_layer_norm_forward(*args)

    def backward(*args):
        calls.append("backward")
        return torch_ops.native_layer_norm_backward(*args)

    xk.get_registry().register("layernorm", "test_counting", forward=forward, backward=backward, replace=True)
    yield calls
    xk.get_registry().unregister("layernorm", "test_counting")


@needs_torch
def test_the_custom_ops_are_registered_and_pass_opcheck():
    from xpuruntime.kernels import torch_ops  # noqa: F401  (registers the ops)

    x = torch.randn(3, 4, 16, requires_grad=True)
    w, b = torch.randn(16, requires_grad=True), torch.randn(16, requires_grad=True)
    for args in ((x, w, b, 1e-5, True, True), (x, None, None, 1e-5, True, True)):
        result = torch.library.opcheck(torch.ops.xpuruntime.layer_norm.default, args)
        assert set(result.values()) == {"SUCCESS"}, result
    a, m = torch.randn(2, 1, 5, 7, requires_grad=True), torch.randn(3, 7, 2, requires_grad=True)
    result = torch.library.opcheck(torch.ops.xpuruntime.matmul.default, (a, m, True, True))
    assert set(result.values()) == {"SUCCESS"}, result


@needs_torch
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape", [(4, 768), (2, 3, 1000), (5, 1)])
def test_layer_norm_native_matches_torch_forward_and_backward(shape: tuple[int, ...], affine: bool):
    torch.manual_seed(0)
    hidden = shape[-1]
    x = torch.randn(*shape, requires_grad=True)
    w = torch.randn(hidden, requires_grad=True) if affine else None
    b = torch.randn(hidden, requires_grad=True) if affine else None
    dy = torch.randn(*shape)
    y = xk.layer_norm(x, w, b, 1e-6)
    leaves = [t for t in (x, w, b) if t is not None]
    grads = torch.autograd.grad(y, leaves, dy)
    ref = F.layer_norm(x, (hidden,), w, b, 1e-6)
    ref_grads = torch.autograd.grad(ref, leaves, dy)
    torch.testing.assert_close(y, ref)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want)


@needs_torch
def test_layer_norm_gradients_pass_gradcheck_in_float64():
    x = torch.randn(3, 7, dtype=torch.float64, requires_grad=True)
    w = torch.randn(7, dtype=torch.float64, requires_grad=True)
    b = torch.randn(7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *t: xk.layer_norm(*t, 1e-5), (x, w, b))


@needs_torch
@pytest.mark.parametrize("dtype_name", ["bfloat16", "float16"])
def test_layer_norm_in_reduced_precision_matches_torch(dtype_name: str):
    dtype = getattr(torch, dtype_name)
    x = torch.randn(6, 64, dtype=dtype, requires_grad=True)
    w, b = torch.randn(64, dtype=dtype, requires_grad=True), torch.randn(64, dtype=dtype, requires_grad=True)
    xk.layer_norm(x, w, b).float().sum().backward()
    got = [t.grad for t in (x, w, b)]
    for t in (x, w, b):
        t.grad = None
    F.layer_norm(x, (64,), w, b).float().sum().backward()
    for g, t in zip(got, (x, w, b), strict=True):
        torch.testing.assert_close(g, t.grad)


@needs_torch
@pytest.mark.parametrize(("sa", "sb"), [((5, 7), (7, 3)), ((2, 5, 7), (7, 3)), ((2, 1, 5, 7), (3, 7, 4)),
                                        ((7,), (7, 3)), ((5, 7), (7,)), ((7,), (7,))])
def test_matmul_matches_torch_with_gradients(sa: tuple[int, ...], sb: tuple[int, ...]):
    a, b = torch.randn(*sa, requires_grad=True), torch.randn(*sb, requires_grad=True)
    out = xk.matmul(a, b)
    ref = torch.matmul(a, b)
    torch.testing.assert_close(out, ref)
    dout = torch.randn_like(ref)
    grads, ref_grads = torch.autograd.grad(out, (a, b), dout), torch.autograd.grad(ref, (a, b), dout)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want)


@needs_torch
def test_bad_inputs_say_what_was_expected():
    from xpuruntime import InputError

    with pytest.raises(InputError, match="weight does not match"):
        xk.layer_norm(torch.randn(2, 8), torch.ones(7))
    with pytest.raises(InputError, match="do not line up"):
        xk.matmul(torch.randn(2, 8), torch.randn(7, 3))


@needs_torch
def test_ops_log_shapes_dtype_kernel_and_backward(logs):
    x = torch.randn(4, 6, 32, requires_grad=True)
    with xk.use_policy({"kernels": {"layernorm": ["triton", "native"]}}):
        y = xk.layer_norm(x, torch.ones(32), torch.zeros(32))
    y.sum().backward()
    forward, backward = logs("layernorm")
    assert (forward.kernel, forward.phase, forward.shapes, forward.dtype) == ("native", "forward", [[4, 6, 32]], "fp32")
    assert forward.dims == {"rows": 24, "hidden": 32} and forward.requires_grad and forward.training
    assert forward.skipped[0][0] == "triton"
    assert (backward.kernel, backward.phase, backward.reason) == ("native", "backward", "the kernel the forward ran")


@needs_torch
def test_ops_apply_the_fallback_rule():
    x = torch.randn(2, 16)
    with xk.use_policy(Policy(kernels={"layernorm": "triton"}, execution={"fallback": "error"})):
        with pytest.raises(PolicyViolationError, match="triton"):
            xk.layer_norm(x)
    with xk.use_policy(Policy(kernels={"matmul": "triton"}, execution={"fallback": "warn"})):
        with pytest.warns(PolicyViolationWarning):
            torch.testing.assert_close(xk.matmul(x, x.T), x @ x.T)


@needs_torch
def test_backward_runs_the_forward_kernel_after_the_policy_scope_closed(counting_kernel: list[str]):
    x = torch.randn(3, 8, requires_grad=True)
    with xk.use_policy({"kernels": {"layernorm": "test_counting"}}):
        y = xk.layer_norm(x)
    assert counting_kernel == ["forward"]
    y.sum().backward()
    assert counting_kernel == ["forward", "backward"]
    xk.layer_norm(x).sum().backward()  # outside the scope: native again
    assert counting_kernel == ["forward", "backward"]


@needs_torch
def test_torch_compile_has_no_graph_break_and_follows_the_policy_at_run_time(counting_kernel: list[str]):
    torch._dynamo.reset()

    def f(x, w, m):
        return xk.matmul(xk.layer_norm(x, w), m).sum()

    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    x, w, m = (torch.randn(4, 16, requires_grad=True), torch.randn(16, requires_grad=True),
               torch.randn(16, 8, requires_grad=True))
    compiled(x, w, m).backward()
    got = [t.grad.clone() for t in (x, w, m)]
    for t in (x, w, m):
        t.grad = None
    f(x, w, m).backward()
    for g, t in zip(got, (x, w, m), strict=True):
        torch.testing.assert_close(g, t.grad)
    assert counting_kernel == []
    with xk.use_policy({"kernels": {"layernorm": "test_counting"}}):
        loss = compiled(x, w, m)
    loss.backward()
    assert counting_kernel == ["forward", "backward"]
    torch._dynamo.reset()


# ----------------------------------------------------------------------------------------------- triton (interpreter)
_INTERPRETER_SCRIPT = textwrap.dedent("""
    import numpy as np, torch
    import triton.runtime.interpreter as interp
    if tuple(int(p) for p in np.__version__.split(".")[:2]) >= (2, 4):
        # triton-lang/triton#9171: the interpreter's __index__ calls int() on a 1-element array (numpy >= 2.4)
        _patch = interp._patch_lang_tensor
        def _patched(tensor, scope):
            _patch(tensor, scope)
            scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))
        interp._patch_lang_tensor = _patched
    import xpuruntime.kernels as xk
    torch.manual_seed(0)
    xk.enable_dispatch_logging()
    policy = {"kernels": {"layernorm": "triton", "matmul": "triton"}, "execution": {"fallback": "error"}}

    def rel(a, r):
        return ((a.double() - r).abs().max() / r.abs().max()).item()

    for shape, dtype, tol in [((7, 33), torch.float32, 1e-5), ((2, 3, 100), torch.float16, 2e-3),
                              ((9, 128), torch.bfloat16, 2e-2)]:
        n = shape[-1]
        x, w, b = torch.randn(*shape, dtype=dtype), torch.randn(n, dtype=dtype), torch.randn(n, dtype=dtype)
        dy = torch.randn(*shape, dtype=dtype)
        for t in (x, w, b):
            t.requires_grad_()
        with xk.use_policy(policy):
            y = xk.layer_norm(x, w, b)
        got = [y] + list(torch.autograd.grad(y, (x, w, b), dy))
        ref_in = [t.detach().double().requires_grad_() for t in (x, w, b)]
        ref = torch.nn.functional.layer_norm(ref_in[0], (n,), ref_in[1], ref_in[2])
        want = [ref] + list(torch.autograd.grad(ref, ref_in, dy.double()))
        errors = [rel(g, r) for g, r in zip(got, want, strict=True)]
        assert max(errors) < tol, (shape, dtype, errors)
    a, m = torch.randn(3, 20, 40, dtype=torch.float16), torch.randn(40, 24, dtype=torch.float16)
    with xk.use_policy(policy):
        out = xk.matmul(a, m)
    assert rel(out, a.double() @ m.double()) < 2e-3
    kernels = {(r.op, r.phase, r.kernel) for r in xk.get_dispatch_logs()}
    assert kernels == {("layernorm", "forward", "triton"), ("layernorm", "backward", "triton"),
                       ("matmul", "forward", "triton")}, kernels
    print("ok")
""")


@needs_torch
def test_triton_kernels_through_the_interpreter():
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    result = subprocess.run([sys.executable, "-c", _INTERPRETER_SCRIPT], capture_output=True, text=True,
                            timeout=300, env=env)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]
