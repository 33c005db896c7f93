"""engine="torch": nn.Modules and ExportedPrograms served under a policy, on the CPU."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.torch
F = torch.nn.functional

import xpuruntime as xrt  # noqa: E402
import xpuruntime.pytorch as xrt_torch  # noqa: E402
from xpuruntime.receipts import PolicyViolationWarning  # noqa: E402


class Block(torch.nn.Module):
    """A pre-norm attention block: LayerNorm, QKV projection, SDPA, output projection."""

    def __init__(self, dim: int = 16, heads: int = 2) -> None:
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


def _block(seed: int = 0) -> Block:
    torch.manual_seed(seed)
    return Block()


X = torch.randn(2, 8, 16, generator=torch.Generator().manual_seed(3))


def _session(model: object = None, **kw: object) -> xrt.InferenceSession:
    kw.setdefault("engine_options", {"example_inputs": (X,)})
    return xrt.InferenceSession(model if model is not None else _block(), engine="torch", device="cpu", **kw)


def test_a_module_runs_with_numpy_in_numpy_out_and_tensors_in_tensors_out():
    model = _block()
    sess = _session(model, kernel_policy={"attention": "flash"}, exec_policy={"fallback": "error"})
    assert [i.describe() for i in sess.input_info] == ["x: float32[2, 8, 16]"]
    assert [o.describe() for o in sess.output_info] == ["output: float32[2, 8, 16]"]
    expected = model(X).detach()
    out = sess.run({"x": X.numpy()})["output"]
    assert isinstance(out, np.ndarray) and np.allclose(out, expected.numpy(), atol=1e-5)
    [tensor] = sess.run([X])
    assert isinstance(tensor, torch.Tensor) and torch.allclose(tensor, expected, atol=1e-5)
    assert model.training, "the session serves a copy: the training model keeps its mode"
    assert sess.report.honored and sess.providers == ["cpu"]
    assert {(n.name, n.op_type, n.requested_kernel) for n in sess.report.nodes} == {
        ("norm", "layernorm", None), ("qkv", "matmul", None), ("out", "matmul", None)}


def test_explain_reads_the_kernels_from_the_profiler():
    sess = _session(kernel_policy={"attention": "flash"}, exec_policy={"fallback": "error"})
    receipt = sess.explain({"x": X.numpy()})
    assert receipt.profiled and receipt.honored
    [attn] = [n for n in receipt.nodes if n.op_type == "attention"]
    assert (attn.kernel, attn.requested_kernel, attn.provider) == ("flash", "flash", "cpu")
    assert {n.op_type for n in receipt.nodes} == {"attention", "matmul", "layernorm"}


def test_an_exported_program_brings_its_own_signature_and_bf16_runs_under_autocast():
    program = torch.export.export(_block(), (X,))
    sess = xrt.InferenceSession(program, engine="torch", exec_policy={"precision": "bf16"})
    assert [i.name for i in sess.input_info] == ["x"] and len(sess.output_info) == 1
    name = sess.output_info[0].name
    out = sess.run({"x": X})[name]
    assert out.dtype == torch.float32 and torch.allclose(out, _block()(X).detach(), atol=0.1)
    receipt = sess.explain({"x": X.numpy()})
    assert receipt.requested["precision"] == "bf16"
    assert {n.precision for n in receipt.nodes if n.op_type in ("matmul", "attention")} == {"bf16"}
    assert receipt.honored, receipt.table()


def test_a_strict_policy_torch_cannot_honour_refuses_the_session():
    with pytest.raises(xrt.PolicyViolationError, match="attention"):
        _session(kernel_policy={"attention": "efficient"}, exec_policy={"fallback": "error"})
    with pytest.raises(xrt.PolicyViolationError, match="triton"):
        _session(kernel_policy={"matmul": "triton"}, exec_policy={"fallback": "error"})


def test_fallback_warn_runs_and_explain_names_what_ran():
    with pytest.warns(PolicyViolationWarning, match="efficient cannot run this call"):  # the example run, at the call
        sess = _session(kernel_policy={"attention": "efficient"}, exec_policy={"fallback": "warn"})
    with pytest.warns(PolicyViolationWarning, match="efficient"):
        receipt = sess.explain({"x": X.numpy()})
    # on the CPU: the listed backend plus math, the last resort
    assert [(v.requested, v.actual) for v in receipt.violations if v.kind == "kernel"] == [("efficient", "math")]


@pytest.mark.no_cuda("torch")
def test_cuda_without_a_gpu_and_cuda_graphs_on_the_cpu_follow_the_fallback_rule():
    with pytest.raises(xrt.PolicyViolationError, match="cuda"):
        xrt.InferenceSession(_block(), engine="torch", device="cuda", exec_policy={"fallback": "error"},
                             engine_options={"example_inputs": (X,)})
    with pytest.warns(PolicyViolationWarning, match="cuda"):
        sess = xrt.InferenceSession(_block(), engine="torch", device="cuda", exec_policy={"fallback": "warn"},
                                    engine_options={"example_inputs": (X,)})
    assert sess.report.violations[0].actual == "cpu" and sess.run([X.numpy()])[0].shape == (2, 8, 16)
    with pytest.warns(PolicyViolationWarning, match="CUDA graphs"):
        _session(exec_policy={"cuda_graphs": True, "static_shape": True, "fallback": "warn"})


def test_torch_compile_is_asked_for_through_engine_options():
    sess = _session(engine_options={"example_inputs": (X,), "compile": {"backend": "eager"}})
    assert sess.report.requested["compile"] == "default"  # the mode asked for
    assert any("torch.compile" in n for n in sess.report.notes)
    assert np.allclose(sess.run({"x": X.numpy()})["output"], _block()(X).detach().numpy(), atol=1e-5)


def test_bad_arguments_are_refused_with_what_to_do():
    with pytest.raises(xrt.ModelLoadError, match="example_inputs"):
        xrt.InferenceSession(_block(), engine="torch")
    with pytest.raises(xrt.PolicyError, match="did you mean 'compile'"):
        _session(engine_options={"example_inputs": (X,), "compil": True})
    with pytest.raises(xrt.ModelLoadError, match="nn.Module"):
        xrt.InferenceSession(object(), engine="torch")
    sess = _session()
    with pytest.raises(xrt.InputError, match="dtype"):
        sess.run({"x": X.double()})
    with pytest.raises(xrt.InputError, match="shape"):
        sess.run({"x": torch.zeros(1, 8, 16)})
    with pytest.raises(xrt.InputError, match="'y'"):
        sess.run({"y": X})


def test_a_model_trained_under_a_policy_serves_like_its_onnx_export():
    """Train under a policy, then serve the module (torch) and its ONNX export (onnxruntime) under it."""
    import onnx

    policy = xrt.Policy(kernels={"attention": "math"}, execution={"precision": "fp32", "fallback": "allow"})
    model = _block()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    with xrt_torch.policy(policy):
        for _ in range(3):
            opt.zero_grad()
            model(X).square().mean().backward()
            opt.step()
    model.eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(model, (X,), buffer, dynamo=False, opset_version=17, input_names=["x"],
                          output_names=["output"])
    proto = onnx.load_from_string(buffer.getvalue())
    proto.ir_version = min(proto.ir_version, 10)  # onnxruntime 1.30/1.31 read IR <= 13
    served = xrt.InferenceSession(model, engine="torch", policy=policy, engine_options={"example_inputs": (X,)})
    exported = xrt.InferenceSession(proto, engine="onnxruntime", policy=policy)
    x = np.random.default_rng(0).standard_normal((2, 8, 16)).astype(np.float32)
    np.testing.assert_allclose(served.run({"x": x})["output"], exported.run({"x": x})["output"], rtol=1e-4,
                               atol=1e-5)


def test_a_cast_model_is_observed_in_its_parameters_when_the_profiler_sees_no_ops(monkeypatch: pytest.MonkeyPatch):
    """Under cuda_graphs the profiled run is one graph replay: no per-op dtypes. The weights this engine cast, read
    back from the module, and the model's outputs before the cast back are the evidence then (here the profiler is
    made to see nothing, as it does for a replay); autocast has no such evidence and stays unverified."""
    from xpuruntime.errors import PolicyViolationError

    monkeypatch.setattr(xrt_torch, "profile_run", lambda report, run, *args: run())
    module = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 4))
    options = {"example_inputs": (torch.randn(2, 8),)}
    policy = {"precision": "bf16", "fallback": "error"}
    report = xrt.InferenceSession(module, engine="torch", engine_options=options, exec_policy=policy).report
    assert report.honored and report.evidence_of["precision"] == "observed"
    assert any("floating tensors bfloat16" in e and "(bfloat16)" in e for e in report.evidence)
    with pytest.raises(PolicyViolationError, match=r"\[unverified\] precision: requested bf16"):
        xrt.InferenceSession(module, engine="torch", engine_options={**options, "precision_mode": "autocast"},
                             exec_policy=policy)
