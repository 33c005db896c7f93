"""``session.prepare`` on CUDA (issue 13): ONNX Runtime's CUDA-graph binding, its IO binding of device tensors into
caller-owned outputs, and the torch engine's captured graph (numpy and device tensors), each against ``run`` and a
CPU reference, with new values every call. Run on a machine with an NVIDIA GPU."""

from __future__ import annotations

import numpy as np
import pytest

import xpuruntime as xrt
from xpuruntime.inference.samples import matmul_relu


def _x(seed: int, shape: tuple[int, ...] = (32, 64)) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.gpu("onnxruntime")
@pytest.mark.parametrize("graphs", [False, True])
def test_ort_prepared_numpy_runs_match_the_cpu(graphs: bool) -> None:
    model = matmul_relu(m=32, k=64, n=64)
    policy = {"fallback": "error", **({"cuda_graphs": True, "static_shape": True} if graphs else {})}
    sess = xrt.InferenceSession(model, device="cuda", exec_policy=policy)
    host = xrt.InferenceSession(model, device="cpu")
    run = sess.prepare({"x": _x(0)})
    for seed in range(1, 5):
        np.testing.assert_allclose(run({"x": _x(seed)})["y"], host.run({"x": _x(seed)})["y"], rtol=1e-3, atol=1e-3)
    strided = np.ascontiguousarray(_x(9)[::-1])[::-1]  # negative strides: ONNX Runtime copies them itself
    assert not strided.flags.c_contiguous
    np.testing.assert_allclose(run({"x": strided})["y"], host.run({"x": _x(9)})["y"], rtol=1e-3, atol=1e-3)
    with pytest.raises(xrt.InputError):  # 16 rows for the model's static 32: the session's own check says so
        run({"x": _x(0, (16, 64))})


@pytest.mark.torch
@pytest.mark.gpu("onnxruntime", "torch")
def test_ort_prepared_device_tensors_into_caller_buffers() -> None:
    import torch

    model = matmul_relu(m=32, k=64, n=64)
    sess = xrt.InferenceSession(model, device="cuda", exec_policy={"fallback": "error"})
    host = xrt.InferenceSession(model, device="cpu")
    x, y = torch.from_numpy(_x(0)).cuda(), torch.empty(32, 64, device="cuda")
    run = sess.prepare({"x": x}, outputs={"y": y})
    other = torch.empty(32, 64, device="cuda")
    sess.run({"x": x}, outputs={"y": other})  # run() with other buffers meanwhile: the prepared binding is its own
    for seed in range(1, 4):
        x.copy_(torch.from_numpy(_x(seed)))
        assert run()["y"] is y
        torch.cuda.synchronize()
        np.testing.assert_allclose(y.cpu().numpy(), host.run({"x": _x(seed)})["y"], rtol=1e-3, atol=1e-3)
    with pytest.raises(xrt.InputError, match="not the device tensor"):
        run({"x": x.clone()})


@pytest.mark.torch
@pytest.mark.gpu("torch")
@pytest.mark.parametrize("execution", [{"cuda_graphs": True}, {"compile": "reduce-overhead"}, {}])
def test_torch_prepared_runs_on_cuda_match_run(execution: dict[str, object]) -> None:
    import torch

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.LayerNorm(128), torch.nn.GELU(),
                                 torch.nn.Linear(128, 64))
    example = torch.randn(32, 64)
    sess = xrt.InferenceSession(module, device="cuda", engine="torch",
                                exec_policy={"precision": "fp16", "static_shape": True, **execution},
                                engine_options={"example_inputs": (example,)})
    name, out = sess.input_info[0].name, sess.output_info[0].name
    run = sess.prepare({name: _x(0)})
    for seed in range(1, 4):
        got, want = run({name: _x(seed)})[out], sess.run({name: _x(seed)})[out]
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)
    keep = run({name: _x(7)})[out].copy()
    run({name: _x(8)})
    np.testing.assert_allclose(run({name: _x(7)})[out], keep)  # results are the caller's: never overwritten later
    feed, buffer = torch.from_numpy(_x(1)).cuda(), torch.empty(32, 64, device="cuda")
    into = sess.prepare({name: feed}, outputs={out: buffer})
    for seed in range(2, 5):
        feed.copy_(torch.from_numpy(_x(seed)))
        assert into()[out] is buffer
        torch.cuda.synchronize()
        np.testing.assert_allclose(buffer.cpu().numpy(), sess.run({name: _x(seed)})[out], rtol=1e-3, atol=1e-3)


@pytest.mark.torch
@pytest.mark.gpu("torch")
def test_torch_graph_prepared_with_a_host_tensor_sees_it_refilled() -> None:
    """A CPU tensor fed to a CUDA-graph session: the prepared call copies the caller's tensor (not a device copy
    made once at prepare), so a refill in place is seen."""
    import torch

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.GELU())
    sess = xrt.InferenceSession(module, device="cuda", engine="torch",
                                exec_policy={"precision": "fp16", "static_shape": True, "cuda_graphs": True},
                                engine_options={"example_inputs": (torch.randn(32, 64),)})
    name, out = sess.input_info[0].name, sess.output_info[0].name
    feed, buffer = torch.from_numpy(_x(0)), torch.empty(32, 64, device="cuda")
    run = sess.prepare({name: feed}, outputs={out: buffer})
    feed.copy_(torch.from_numpy(_x(3)))
    run()
    torch.cuda.synchronize()
    np.testing.assert_allclose(buffer.cpu().numpy(), sess.run({name: _x(3)})[out], rtol=1e-3, atol=1e-3)


@pytest.mark.torch
@pytest.mark.gpu("torch")
def test_torch_graph_repeat_and_prepared_run_raise_after_close() -> None:
    """session.run's repeat of a captured graph, and a prepared run, both taken before close(): each call after it
    raises the closed-session error instead of replaying the graph of a closed session."""
    import torch

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.GELU())
    sess = xrt.InferenceSession(module, device="cuda", engine="torch",
                                exec_policy={"precision": "fp16", "static_shape": True, "cuda_graphs": True},
                                engine_options={"example_inputs": (torch.randn(32, 64),)})
    name = sess.input_info[0].name
    for seed in range(3):
        sess.run({name: _x(seed)})
    repeat, run = sess.engine._repeat, sess.prepare({name: _x(0)})
    assert repeat is not None
    sess.close()
    for call in (repeat, run, sess.run):
        with pytest.raises(xrt.XpuRuntimeError, match="closed"):
            call({name: _x(1)})
