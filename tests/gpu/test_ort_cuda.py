"""ONNX Runtime's CUDA provider on a real GPU: placement, precision, CUDA graphs, zero-copy IO.

Run on a machine with an NVIDIA GPU and the CUDA build of ONNX Runtime (onnxruntime-gpu).
"""

from __future__ import annotations

import numpy as np
import pytest

import xpuruntime as xrt
from xpuruntime.inference.samples import matmul_relu, tiny_transformer

pytestmark = pytest.mark.gpu("onnxruntime")


def _strict(**kw: object) -> xrt.ExecutionPolicy:
    return xrt.ExecutionPolicy(fallback="error", **kw)


def test_every_node_is_on_the_cuda_provider():
    sess = xrt.InferenceSession(tiny_transformer(), device="cuda", exec_policy=_strict())
    assert sess.report.honored, sess.report.table()
    assert {n.provider for n in sess.report.nodes} <= {"CUDAExecutionProvider"} | {
        n.provider for n in sess.report.nodes if n.op_type in ("Shape", "Size")}
    x = np.random.default_rng(0).standard_normal((2, 16, 64)).astype(np.float32)
    ref = xrt.InferenceSession(tiny_transformer(), device="cpu").run({"x": x})["y"]
    np.testing.assert_allclose(sess.run({"x": x})["y"], ref, rtol=1e-3, atol=1e-3)
    profiled = sess.explain({"x": x})
    assert profiled.profiled and all(n.time_us is not None for n in profiled.nodes)
    assert "CUDAExecutionProvider" in profiled.providers_used


def test_tensorrt_without_libraries_is_a_violation_and_raises_when_strict():
    with pytest.warns(xrt.inference.PolicyViolationWarning):
        sess = xrt.InferenceSession(matmul_relu(), device="cuda", engine="onnxrt+trt",
                                    exec_policy=xrt.ExecutionPolicy(fallback="warn"))
    assert not sess.report.honored
    assert any(v.requested == "TensorrtExecutionProvider" for v in sess.report.violations)
    with pytest.raises(xrt.PolicyViolationError, match="TensorrtExecutionProvider"):
        xrt.InferenceSession(matmul_relu(), device="cuda", engine="onnxrt+trt", exec_policy=_strict())


def _matmul_error(precision: str, x: np.ndarray, model: object) -> float:
    sess = xrt.InferenceSession(model, device="cuda", exec_policy=_strict(precision=precision))
    assert sess.report.requested["provider_options"]["CUDAExecutionProvider"]["use_tf32"] == (
        "1" if precision == "tf32" else "0")
    y = sess.run({"x": x})["y"]
    import onnx.numpy_helper as nh

    w = nh.to_array(model.graph.initializer[0]).astype(np.float64)  # type: ignore[attr-defined]
    ref = np.maximum(x.astype(np.float64) @ w, 0)
    return float(np.max(np.abs(y - ref)))


def test_fp32_versus_tf32_changes_the_error_of_a_large_matmul():
    model = matmul_relu(m=256, k=4096, n=1024)
    x = np.random.default_rng(1).standard_normal((256, 4096)).astype(np.float32)
    err_fp32, err_tf32 = _matmul_error("fp32", x, model), _matmul_error("tf32", x, model)
    print(f"max abs error vs float64: fp32 {err_fp32:.3g}, tf32 {err_tf32:.3g}")
    assert err_fp32 * 20 < err_tf32, (err_fp32, err_tf32)


@pytest.mark.torch
@pytest.mark.gpu("torch")
def test_dlpack_feeds_and_preallocated_outputs_are_zero_copy():
    import torch

    sess = xrt.InferenceSession(matmul_relu(m=64, k=256, n=256), device="cuda", exec_policy=_strict())
    x = torch.randn(64, 256, device="cuda")
    y = torch.empty(64, 256, device="cuda")
    ptr = y.data_ptr()
    result = sess.run({"x": x}, outputs={"y": y})
    torch.cuda.synchronize()
    assert result["y"] is y and y.data_ptr() == ptr
    expected = sess.run({"x": x.cpu().numpy()})["y"]
    np.testing.assert_allclose(y.cpu().numpy(), expected, rtol=1e-5, atol=1e-5)



@pytest.mark.torch
@pytest.mark.gpu("torch")
def test_the_same_device_tensors_again_repeat_the_binding_and_see_new_values():
    """Engine.run's repeat path on CUDA: the second call with the same tensors is ``run_with_iobinding`` of the
    binding built by the first; new values written in place are read; a resized output takes the full path."""
    import torch

    sess = xrt.InferenceSession(matmul_relu(m=32, k=64, n=64), device="cuda", exec_policy=_strict())
    host = xrt.InferenceSession(matmul_relu(m=32, k=64, n=64), device="cpu")
    x, y = torch.randn(32, 64, device="cuda"), torch.empty(32, 64, device="cuda")
    sess.run({"x": x}, outputs={"y": y})
    again = sess.engine._again
    assert again is not None
    for seed in range(3):
        x.copy_(torch.from_numpy(np.random.default_rng(seed).standard_normal((32, 64)).astype(np.float32)))
        assert sess.run({"x": x}, outputs={"y": y})["y"] is y
        torch.cuda.synchronize()
        np.testing.assert_allclose(y.cpu().numpy(), host.run({"x": x.cpu().numpy()})["y"], rtol=1e-3, atol=1e-3)
    assert sess.engine._again is again  # repeated, not rebuilt
    y2 = torch.empty(16, 64, device="cuda")
    with pytest.raises(xrt.InputError):
        sess.run({"x": x}, outputs={"y": y2})  # full check: 16 rows for 32
    z = torch.empty(32, 64, device="cuda")
    sess.run({"x": x}, outputs={"y": z})
    torch.cuda.synchronize()
    assert torch.equal(z, y) and sess.engine._again is not again

def test_cuda_graphs_replay_correctly_with_io_binding():
    model = matmul_relu(m=32, k=128, n=128)
    policy = xrt.ExecutionPolicy(fallback="error", cuda_graphs=True, static_shape=True)
    sess = xrt.InferenceSession(model, device="cuda", exec_policy=policy)
    opts = sess.report.requested["provider_options"]["CUDAExecutionProvider"]
    assert opts["enable_cuda_graph"] == "1"
    eager = xrt.InferenceSession(model, device="cuda", exec_policy=_strict())
    rng = np.random.default_rng(2)
    for _ in range(5):  # the first runs capture, the later ones replay with new data in the same buffers
        x = rng.standard_normal((32, 128)).astype(np.float32)
        np.testing.assert_allclose(sess.run({"x": x})["y"], eager.run({"x": x})["y"], rtol=1e-5, atol=1e-5)


def _graphs_against_plain(name: str, shapes: dict[str, int], base: dict[str, object]) -> None:
    """cuda_graphs on and off over the same (fp16, fused) model copy: the replays match the plain runs."""
    pytest.importorskip("transformers")
    from xpuruntime import corpus

    path = corpus.build_onnx(name, dynamic=True)
    first = corpus.sample_feeds(name, shapes)
    policy = {**base, "fixed_shapes": {k: list(v.shape) for k, v in first.items()}, "fallback": "allow"}
    graphs = xrt.InferenceSession(path, device="cuda", exec_policy={**policy, "cuda_graphs": True})
    assert graphs.report.requested["provider_options"]["CUDAExecutionProvider"]["enable_cuda_graph"] == "1"
    plain = xrt.InferenceSession(path, device="cuda", exec_policy=policy)
    for seed in range(5):  # runs 1-2 are regular, 3 captures, 4-5 replay with new data in the same buffers
        feeds = corpus.sample_feeds(name, shapes, seed=seed)
        got, want = graphs.run(feeds), plain.run(feeds)
        assert got.keys() == want.keys()
        for key in want:
            assert got[key].shape == want[key].shape, key
            np.testing.assert_allclose(got[key], want[key], rtol=2e-2, atol=2e-2, err_msg=f"{name} {key} run {seed}")


def test_cuda_graphs_with_fp16_and_bert_fusions_match_the_plain_runs():
    """ORT's fused contrib ops (SkipLayerNormalization, Attention) have no ONNX shape inference: the binding takes
    output shapes from ORT's first run (issue 13: this raised TypeInferenceError)."""
    _graphs_against_plain("bert", {"batch": 2, "seq": 16}, {"precision": "fp16", "fusions": "bert"})


def test_cuda_graphs_on_a_dynamic_batch_cnn_with_fixed_shapes():
    """A CNN exported with a symbolic batch: fixed_shapes fixes the input, ORT's run fixes the output's shape
    (issue 13: 'cuda_graphs needs a static shape for output')."""
    _graphs_against_plain("resnet50", {"batch": 2}, {"precision": "fp16"})
