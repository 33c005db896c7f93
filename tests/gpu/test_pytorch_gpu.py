"""xpuruntime.pytorch and engine="torch" on a real GPU: backends proven by receipts, strict violations,
cuBLASLt, CUDA graphs of a whole training step, the torch engine with CUDA graphs.

Run with ``-s`` to see the receipts (kernel names as the profiler saw them).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

F = torch.nn.functional

import xpuruntime as xrt  # noqa: E402
import xpuruntime.pytorch as xrt_torch  # noqa: E402
from xpuruntime.pytorch._receipt import BLAS_NOTE, INDISTINGUISHABLE  # noqa: E402
from xpuruntime.receipts import PolicyViolationWarning  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.gpu("torch")]


@pytest.fixture(autouse=True)
def _no_leftover_policy():
    yield
    from xpuruntime.pytorch import _state

    assert _state.active() is None
    _state.reset()


def _qkv(dtype: torch.dtype = torch.bfloat16, grad: bool = True) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator(device="cuda").manual_seed(0)
    return tuple(torch.randn(4, 16, 1024, 64, device="cuda", dtype=dtype, generator=gen, requires_grad=grad)
                 for _ in range(3))


def _attention_nodes(receipt: xrt.ExecutionReport) -> list:
    return [n for n in receipt.nodes if n.op_type == "attention"]


@pytest.mark.parametrize("backend", ["flash", "efficient", "cudnn", "math"])
def test_each_attention_backend_is_selected_and_proven_by_the_receipt(backend):
    q, k, v = _qkv()
    strict = {"fallback": "error"}
    with xrt_torch.policy(kernel_policy={"attention": backend}, exec_policy=strict) as applied:
        F.scaled_dot_product_attention(q, k, v, is_causal=True).sum().backward()  # warm-up
        with xrt_torch.profile() as receipt:
            F.scaled_dot_product_attention(q, k, v, is_causal=True).sum().backward()
    print(f"\n--- attention={backend}: {applied.requested}\n{receipt.table()}")
    nodes = _attention_nodes(receipt)
    # math is a composite: its backward is autograd's bmm/softmax backward, recorded as matmul nodes
    assert len(nodes) >= (1 if backend == "math" else 2), "forward and backward"
    assert {n.kernel for n in nodes} == {backend} and {n.requested_kernel for n in nodes} == {backend}
    assert {n.provider for n in nodes} == {"cuda"} and {n.precision for n in nodes} == {"bf16"}
    assert all(n.time_us and n.time_us > 0 for n in nodes)
    assert receipt.honored, receipt.table()
    if backend == "flash":
        assert any("flash" in n.name for n in nodes)
    if backend == "efficient":
        assert any("fmha_cutlass" in n.name or "efficient" in n.name for n in nodes)


def test_flash_on_fp32_inputs_raises_under_error_and_is_a_violation_under_warn():
    q, k, v = _qkv(torch.float32, grad=False)
    with pytest.raises(xrt.PolicyViolationError, match="attention"):
        with xrt_torch.policy(kernel_policy={"attention": "flash"}, exec_policy={"fallback": "error"}):
            F.scaled_dot_product_attention(q, k, v)
    with pytest.warns(PolicyViolationWarning, match="flash"):
        with xrt_torch.profile(kernel_policy={"attention": "flash"}, exec_policy={"fallback": "warn"}) as receipt:
            F.scaled_dot_product_attention(q, k, v)
    print(f"\n--- flash on fp32, fallback=warn\n{receipt.table()}")
    [node] = _attention_nodes(receipt)
    assert node.requested_kernel == "flash" and node.kernel in ("efficient", "cudnn", "math")
    assert any(v.kind == "kernel" and v.requested == "flash" for v in receipt.violations)


def test_cublaslt_is_set_and_the_receipt_says_what_kernel_names_can_prove():
    a = torch.randn(2048, 2048, device="cuda", dtype=torch.bfloat16)
    with xrt_torch.policy(kernel_policy={"matmul": "cublaslt"}, exec_policy={"fallback": "error"}) as applied:
        assert "lt" in str(torch.backends.cuda.preferred_blas_library()).lower()
        a @ a
        with xrt_torch.profile() as receipt:
            a @ a
    print(f"\n--- matmul=cublaslt: {applied.requested}\n{receipt.table()}")
    nodes = [n for n in receipt.nodes if n.op_type == "matmul"]
    assert nodes and {n.requested_kernel for n in nodes} == {"cublaslt"}
    assert {n.kernel for n in nodes} <= {"cublaslt", INDISTINGUISHABLE}
    if INDISTINGUISHABLE in {n.kernel for n in nodes}:
        assert any(note.startswith(BLAS_NOTE) and "cublaslt" in note for note in receipt.notes)
    assert receipt.honored
    assert receipt.requested["switches_during_run"]["preferred_blas_library"] == "cublaslt"


def _training(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(256, 1024), torch.nn.GELU(), torch.nn.LayerNorm(1024),
                                torch.nn.Linear(1024, 256)).cuda()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, capturable=True)

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = F.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        return loss

    return model, opt, step


def _batches(n: int = 5) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator(device="cuda").manual_seed(1)
    return [(torch.randn(64, 256, device="cuda", generator=gen), torch.randn(64, 256, device="cuda", generator=gen))
            for _ in range(n)]


def test_a_captured_training_step_matches_eager_steps_and_replays():
    batches = _batches()
    ref_model, _, ref_step = _training()
    ref_losses = [ref_step(x, y).item() for x, y in batches]
    model, opt, step = _training()
    static = tuple(t.clone() for t in batches[0])
    graphed = xrt_torch.capture_graph(step, *static, state=(model, opt), fallback="error")
    assert graphed.captured
    losses = [graphed(x, y).item() for x, y in batches]
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5, atol=1e-6)
    for got, want in zip(model.parameters(), ref_model.parameters()):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    with xrt_torch.profile() as receipt:
        graphed(*batches[0])
    print(f"\n--- one replay of the captured training step\n{receipt.table()}")
    assert any(n.op_type == "matmul" for n in receipt.nodes), "graph kernels are classified by name"


def test_a_captured_step_under_a_bf16_policy_with_autocast_keeps_training():
    model, opt, step = _training()
    batches = _batches(8)
    policy = xrt.Policy(kernels={"matmul": "cublaslt"}, execution={"precision": "bf16", "fallback": "error"})
    with xrt_torch.policy(policy):
        graphed = xrt_torch.capture_graph(step, *(t.clone() for t in batches[0]), state=(model, opt))
        losses = [graphed(*batches[0]).item() for _ in range(8)]
    assert graphed.captured and losses[-1] < losses[0], losses  # weights update between replays


def test_a_triton_layernorm_named_by_the_policy_runs_and_the_receipt_proves_it():
    xk = pytest.importorskip("xpuruntime.kernels")
    pytest.importorskip("triton")
    if "triton" not in xk.get_registry().kernels("layernorm"):
        pytest.skip("no Triton LayerNorm registered in xpuruntime.kernels")
    norm = torch.nn.LayerNorm(768).cuda()
    x = torch.randn(8192, 768, device="cuda", requires_grad=True)  # fp32, as autocast keeps LayerNorm inputs
    expected = F.layer_norm(x, (768,), norm.weight, norm.bias)
    with xrt_torch.policy(kernel_policy={"layernorm": "triton"}, exec_policy={"fallback": "error"}):
        norm(x).sum().backward()  # warm-up: Triton compiles
        with xrt_torch.profile() as receipt:
            y = norm(x)
            y.sum().backward()
    print(f"\n--- layernorm=triton\n{receipt.table()}")
    torch.testing.assert_close(y, expected, rtol=1e-4, atol=1e-4)
    nodes = [n for n in receipt.nodes if n.op_type == "layernorm"]
    assert {n.kernel for n in nodes} == {"triton"} and len(nodes) == 2 and receipt.honored
    assert "xpuruntime.kernels dispatch log" in receipt.evidence


class _Block(torch.nn.Module):
    def __init__(self, dim: int = 256, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.norm = torch.nn.LayerNorm(dim)
        self.qkv = torch.nn.Linear(dim, 3 * dim)
        self.out = torch.nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2)
                   for z in self.qkv(self.norm(x)).chunk(3, dim=-1))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return x + self.out(y.transpose(1, 2).reshape(b, t, c))


def test_the_torch_engine_on_cuda_with_cuda_graphs():
    torch.manual_seed(0)
    model = _Block()
    x = torch.randn(4, 128, 256)
    sess = xrt.InferenceSession(model, engine="torch", device="cuda",
                                kernel_policy={"attention": "flash", "matmul": "cublaslt"},
                                exec_policy={"precision": "bf16", "cuda_graphs": True, "static_shape": True,
                                             "fallback": "error"},
                                engine_options={"example_inputs": (x,)})
    assert sess.report.honored and sess.report.requested["cuda_graphs"] is True
    expected = model.cuda()(x.cuda()).detach()
    for _ in range(3):
        out = sess.run({"x": x.cuda()})["output"]
        assert out.is_cuda
        torch.testing.assert_close(out.float(), expected, rtol=5e-2, atol=5e-2)
    assert sess.engine._graph is not None and sess.engine._graph.captured
    host = sess.run({"x": x.numpy()})["output"]
    assert isinstance(host, np.ndarray) and host.shape == (4, 128, 256)
    receipt = sess.explain({"x": x.numpy()})
    print(f"\n--- torch engine, CUDA graph replay\n{receipt.table()}")
    assert receipt.profiled and receipt.nodes


def test_the_torch_engine_on_cuda_proves_flash_in_explain():
    torch.manual_seed(0)
    x = torch.randn(4, 128, 256)
    sess = xrt.InferenceSession(_Block(), engine="torch", device="cuda", kernel_policy={"attention": "flash"},
                                exec_policy={"precision": "bf16", "fallback": "error"},
                                engine_options={"example_inputs": (x,)})
    receipt = sess.explain({"x": x.numpy()})
    print(f"\n--- torch engine, eager bf16\n{receipt.table()}")
    [attn] = _attention_nodes(receipt)
    assert (attn.kernel, attn.provider, attn.precision) == ("flash", "cuda", "bf16") and receipt.honored


@pytest.mark.parametrize("execution", [{"cuda_graphs": True}, {"compile": "reduce-overhead"},
                                       {"compile": "default", "cuda_graphs": True}],
                         ids=["graphs", "reduce-overhead", "compile-graphs"])
def test_the_torch_engine_hot_paths_follow_new_inputs_and_never_alias_earlier_results(execution):
    """numpy feeds take the captured graph's direct path (or torch.compile's CUDA graphs without a step mark):
    every call's outputs are its own, equal to the eager fp16 module's, and earlier results stay intact."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.GELU(), torch.nn.LayerNorm(128),
                                torch.nn.Linear(128, 16)).eval()
    x = torch.randn(4, 64)
    sess = xrt.InferenceSession(model, engine="torch", device="cuda",
                                exec_policy={"precision": "fp16", "static_shape": True, **execution},
                                engine_options={"example_inputs": (x,), "precision_mode": "cast-all"})
    reference = model.cuda().half()
    rng = np.random.default_rng(0)
    feeds = [rng.standard_normal((4, 64)).astype(np.float32) for _ in range(5)]
    results = [sess.run({"input": f})["output"] for f in feeds]
    tensors = [sess.run([torch.from_numpy(f).cuda()])[0] for f in feeds[:2]]
    for f, got in zip(feeds, results):
        with torch.inference_mode():
            want = reference(torch.from_numpy(f).cuda().half()).float().cpu().numpy()
        assert np.allclose(got, want, atol=2e-2, rtol=2e-2)
    assert not np.allclose(results[0], results[1])
    assert not torch.allclose(tensors[0], tensors[1])  # the first tensor result survived the second call
    sess.close()
