"""The runtime layer on a real GPU: streams and events on cuda.core and on torch, memory info and pinned buffers,
the context form of capture_graph, and traces of a CUDA run.

    pytest -q tests/gpu/test_runtime_gpu.py
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import xpuruntime as xrt
from xpuruntime.runtime import memory, stream

pytestmark = pytest.mark.gpu

HAS_CORE = stream._cuda_core_module() is not None
HAS_TORCH = importlib.util.find_spec("torch") is not None
BACKENDS = [b for b, ok in (("cuda.core", HAS_CORE), ("torch", HAS_TORCH)) if ok]


def test_device_lookups_as_the_original_api_shows():
    assert xrt.Device(0) == xrt.Device("cuda:0") == xrt.get_device("cuda:0")
    assert xrt.Device(0).is_cuda and xrt.get_device_count() >= 1


def _busy(backend: str, s: xrt.Stream) -> None:
    """Queue a few milliseconds of GPU work on ``s``."""
    if backend == "torch":
        import torch

        with torch.cuda.stream(s.native):
            a = torch.randn(2048, 2048, device=f"cuda:{s.device.id}")
            for _ in range(20):
                a = a @ a
                a = a / a.norm()
        return
    import cupy

    with cupy.cuda.ExternalStream(s.handle, s.device.id):
        a = cupy.random.standard_normal((2048, 2048), dtype=cupy.float32)
        for _ in range(20):
            a = a @ a
            a = a / cupy.linalg.norm(a)


@pytest.mark.parametrize("backend", BACKENDS)
def test_stream_and_event_record_wait_sync_and_time(backend):
    if backend == "cuda.core":
        pytest.importorskip("cupy")
    s, other = xrt.Stream(0, backend=backend), xrt.Stream("cuda:0", backend=backend, priority=-1)
    assert s.backend == backend and s.handle != 0 and s.__cuda_stream__() == (0, s.handle)
    start, end = xrt.Event(0, backend=backend), xrt.Event(0, backend=backend)
    start.record(s)
    _busy(backend, s)
    end.record(s)
    other.wait(end)  # stream order, no host block
    marker = other.record()
    end.synchronize()
    marker.synchronize()
    assert end.query() and marker.query()
    assert start.elapsed_time(end) > 0.0
    s.synchronize()
    assert s.query()


@pytest.mark.parametrize("backend", BACKENDS)
def test_events_without_timing_refuse_elapsed_time(backend):
    a, b = xrt.Event(0, timing=False, backend=backend), xrt.Event(0, timing=False, backend=backend)
    a.record()
    b.record()
    b.synchronize()
    with pytest.raises(xrt.UnsupportedOperationError):
        a.elapsed_time(b)


def test_device_create_stream():
    s = xrt.Device(0).create_stream()
    s.synchronize()
    assert s.device.id == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_pinned_buffer_is_host_memory_usable_from_numpy(backend):
    with memory.pinned_empty((256, 256), "float32", backend=backend) as buf:
        assert buf.backend == backend and buf.array.shape == (256, 256)
        buf.array[:] = 3.0
        assert float(buf.array.sum()) == 3.0 * 256 * 256
    assert buf.closed


def test_pinned_torch_buffer_is_page_locked():
    torch = pytest.importorskip("torch")
    buf = memory.pinned_empty(1024, "uint8", backend="torch")
    assert torch.from_numpy(buf.array).is_pinned()


def test_memory_info_with_torch_sees_its_pool():
    torch = pytest.importorskip("torch")
    held = torch.empty(64 * 1024**2, dtype=torch.uint8, device="cuda:0")
    info = xrt.memory_info("cuda:0")
    assert info.source == "torch" and info.total > info.free > 0
    assert info.pool["allocated_bytes"] >= held.numel() and info.pool["reserved_bytes"] >= held.numel()
    memory.set_memory_fraction(0.9, 0)
    assert xrt.memory_info(0).limit is None or xrt.memory_info(0).limit <= info.total
    memory.set_memory_fraction(1.0, 0)
    memory.reset_peak_stats(0)


@pytest.mark.skipif(not HAS_CORE, reason="cuda.core is not installed")
def test_memory_info_and_streams_on_cuda_core_without_torch():
    code = textwrap.dedent("""
        import sys
        from xpuruntime.runtime import memory, stream
        import xpuruntime as xrt
        assert stream.stream_backend() == "cuda.core", stream.stream_backend()
        info = memory.memory_info("cuda:0")
        assert info.source == "cuda.core" and info.total > info.free > 0, info
        s = xrt.Stream(0); e = s.record(); e.synchronize()
        with memory.pinned_empty(1000, "float64") as buf:
            buf.array[:] = 1.5
            assert buf.backend == "cuda.core" and buf.array.sum() == 1500.0
        assert "torch" not in sys.modules
        print("ok", sorted(info.pool))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env={**os.environ})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("ok")


def test_capture_graph_context_form_captures_runs_and_replays():
    torch = pytest.importorskip("torch")
    import xpuruntime.pytorch as xrt_torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8)).cuda()
    x = torch.randn(16, 64, device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up, as torch's CUDA graph notes ask
        for _ in range(3):
            model(x).sum().backward()
    torch.cuda.current_stream().wait_stream(side)
    model.zero_grad(set_to_none=True)
    with xrt_torch.capture_graph() as g:
        y = model(x)
    torch.cuda.synchronize()
    assert g.captured and torch.allclose(y, model(x))
    x.copy_(torch.randn(16, 64, device="cuda"))
    g.replay()
    torch.cuda.synchronize()
    assert torch.allclose(y, model(x), atol=1e-5)


def test_trace_of_a_cuda_run_has_the_cuda_provider_track(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime has no CUDA provider (pip install onnxruntime-gpu)")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [64, 256])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [64, 256])
    w = helper.make_tensor("w", TensorProto.FLOAT, [256, 256], np.ones(256 * 256, np.float32) / 256)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
                               helper.make_node("Relu", ["h"], ["y"], name="relu")], "g", [x], [y], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    sess = xrt.InferenceSession(model.SerializeToString(), device="cuda:0")
    report = sess.explain({"x": np.ones((64, 256), np.float32)})
    trace = report.to_trace()
    threads = {e["args"]["name"] for e in trace["traceEvents"] if e["name"] == "thread_name"}
    assert "CUDAExecutionProvider" in threads
    nodes = [e for e in trace["traceEvents"] if e["ph"] == "X" and e["args"].get("node") == "mm"]
    assert nodes and nodes[0]["args"]["provider"] == "CUDAExecutionProvider"
    (tmp_path / "cuda.trace.json").write_text(json.dumps(trace))
    page = report.to_html()
    assert "CUDAExecutionProvider" in page and "<svg" in page


def test_profile_context_over_a_cuda_session_and_torch():
    torch = pytest.importorskip("torch")
    import xpuruntime.pytorch as xrt_torch
    from xpuruntime.runtime.profiler import profile

    with profile() as prof, xrt_torch.profile() as receipt:
        torch.nn.functional.linear(torch.ones(64, 64, device="cuda"), torch.ones(64, 64, device="cuda"))
    prof.add(receipt)
    events = prof.to_trace()["traceEvents"]
    assert any(e.get("cat") == "kernel" for e in events), "torch profiler GPU kernels in the trace"


def test_capture_graph_context_form_refuses_a_host_sync_by_name():
    torch = pytest.importorskip("torch")
    import xpuruntime.pytorch as xrt_torch

    x = torch.ones(4, device="cuda")
    x.sum().item()  # warm-up
    with pytest.raises(xrt.PolicyViolationError, match="capture_graph"):
        with xrt_torch.capture_graph():
            x.sum().item()  # a host sync is not capturable
    _assert_usable(torch)


def test_after_failed_captures_random_ops_and_triton_kernels_still_run():
    """Issue: a failed capture left torch's default CUDA generator in capture mode, and every later random op in
    the process raised 'Offset increment outside graph capture encountered unexpectedly'."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("triton")
    import xpuruntime.pytorch as xrt_torch
    from xpuruntime.kernels import triton_layernorm as tln
    from xpuruntime.receipts import PolicyViolationWarning

    x = torch.ones(4, device="cuda")
    x.sum().item()
    with pytest.raises(xrt.PolicyViolationError, match="could not capture the block"):
        with xrt_torch.capture_graph(fallback="allow"):
            torch.randn(4, device="cuda").sum().item()  # random numbers, then a host sync, inside the capture
    _assert_usable(torch)
    with pytest.warns(PolicyViolationWarning, match="could not capture it"):
        step = xrt_torch.capture_graph(lambda t: t.sum().item(), x, fallback="warn")  # the function form
    assert not step.captured and step(x) == 4.0
    _assert_usable(torch)
    torch.manual_seed(0)
    a = torch.randn(8, 256, device="cuda")
    torch.manual_seed(0)
    assert torch.equal(a, torch.randn(8, 256, device="cuda"))  # seeding and the eager stream work as before
    y, mean, _ = tln.layer_norm_forward(a, torch.ones(256, device="cuda"), torch.zeros(256, device="cuda"), 1e-5)
    torch.testing.assert_close(mean, a.mean(-1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y, torch.nn.functional.layer_norm(a, (256,)), rtol=1e-4, atol=1e-4)
    g = torch.cuda.CUDAGraph()  # and a later capture with random numbers in it captures and replays
    static = torch.zeros(4, device="cuda")
    with torch.cuda.graph(g):
        static.copy_(torch.rand(4, device="cuda"))
    g.replay()
    torch.cuda.synchronize()
    assert bool(((static >= 0) & (static < 1)).all())


def _assert_usable(torch):
    """The default stream is current again and the default generator draws eagerly."""
    assert torch.cuda.current_stream() == torch.cuda.default_stream()
    assert not torch.cuda.is_current_stream_capturing()
    assert torch.randn(16, device="cuda").isfinite().all()
    torch.cuda.synchronize()
