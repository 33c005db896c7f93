"""Item 1: caller-owned output buffers are checked in one place (``feeds.check_output_buffer``) before any engine
writes into them. A read-only memory map used to crash the process inside ONNX Runtime (SIGSEGV), and an immutable
``bytes`` object was overwritten; OpenVINO raised a raw ``ValueError``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import xpuruntime as xrt
from xpuruntime.errors import InputError

SRC = Path(__file__).resolve().parents[2] / "src"
FEEDS = {"x": np.ones((2, 8), np.float32)}


def _buffers(tmp_path: Path) -> dict[str, Any]:
    np.save(tmp_path / "o.npy", np.zeros((2, 4), np.float32))
    return {"mmap_readonly": np.load(tmp_path / "o.npy", mmap_mode="r"),
            "bytes": np.frombuffer(bytes(32), np.float32).reshape(2, 4),
            "fortran": np.zeros((4, 2), np.float32).T, "stepped": np.zeros((2, 8), np.float32)[:, ::2],
            "float64": np.zeros((2, 4), np.float64), "rank": np.zeros(8, np.float32),
            "static_dim": np.zeros((2, 5), np.float32), "shared_dim": np.zeros((3, 4), np.float32),
            "list": [[0.0] * 4] * 2, "masked": np.ma.zeros((2, 4), np.float32), "none": None}


@pytest.mark.parametrize("kind", ["mmap_readonly", "bytes", "fortran",
                                  "stepped", "float64", "rank", "static_dim", "shared_dim", "list", "masked", "none"])
def test_a_bad_output_buffer_is_an_input_error_and_is_never_written(engine: str, mm: Any, tmp_path: Path,
                                                                       kind: str):
    buffer = _buffers(tmp_path)[kind]
    before = np.array(buffer, copy=True) if buffer is not None else None
    with xrt.InferenceSession(mm, engine=engine) as sess:
        with pytest.raises(InputError, match="preallocated output 'y'"):
            sess.run(FEEDS, outputs={"y": buffer})
        good = np.empty((2, 4), np.float32)
        assert sess.run(FEEDS, outputs={"y": good})["y"] is good  # the session is unharmed
    if before is not None:
        np.testing.assert_array_equal(np.asarray(buffer), before)


def test_a_read_only_memory_map_no_longer_crashes_the_process(engine: str, tmp_path: Path):
    """The original crash, in a child process: it must end with an InputError, not a signal."""
    code = f"""
import numpy as np, xpuruntime as xrt
from xpuruntime.errors import InputError
from xpuruntime.inference.samples import matmul_relu
np.save("o.npy", np.zeros((2, 4), np.float32))
sess = xrt.InferenceSession(matmul_relu(k=8, n=4), engine={engine!r})
try:
    sess.run({{"x": np.ones((2, 8), np.float32)}}, outputs={{"y": np.load("o.npy", mmap_mode="r")}})
except InputError:
    print("refused")
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "refused", out.stderr[-2000:]


def test_outputs_must_be_a_mapping(mm: Any):
    with xrt.InferenceSession(mm) as sess, pytest.raises(InputError, match="map output names"):
        sess.run(FEEDS, outputs=[np.empty((2, 4), np.float32)])


def test_torch_tensors_are_checked_too(mm: Any):
    torch = pytest.importorskip("torch")
    with xrt.InferenceSession(mm) as sess:  # ONNX Runtime binds numpy and CUDA buffers, not CPU tensors
        with pytest.raises(InputError, match="not a buffer this engine can write"):
            sess.run(FEEDS, outputs={"y": torch.zeros(2, 4)})
    from xpuruntime.inference.feeds import TensorInfo, check_output_buffer

    info = TensorInfo("y", (2, 4), "float32")
    with pytest.raises(InputError, match="requires grad"):
        check_output_buffer("y", torch.zeros(2, 4, requires_grad=True), info)
    with pytest.raises(InputError, match="not contiguous"):
        check_output_buffer("y", torch.zeros(4, 2).T, info)
    with pytest.raises(InputError, match="does not fit"):
        check_output_buffer("y", torch.zeros(2, 4, dtype=torch.float64), info)
    check_output_buffer("y", torch.zeros(2, 4), info)


class _CudaArray:
    """A CUDA array as cupy presents one (``__cuda_array_interface__`` and ``device.id``); never dereferenced."""

    def __init__(self, shape: tuple[int, ...], device_id: int = 0, readonly: bool = False) -> None:
        self.shape, self.device = shape, type("Dev", (), {"id": device_id})()
        self.__cuda_array_interface__ = {"shape": shape, "typestr": "<f4", "data": (1 << 20, readonly),
                                         "version": 3, "strides": None}


def test_cuda_buffers_must_sit_on_the_sessions_device():
    from xpuruntime.inference.feeds import TensorInfo, check_output_buffer
    from xpuruntime.runtime.devices import DeviceSpec

    info, accepts = TensorInfo("y", (2, 4), "float32"), ("numpy", "cuda")
    check_output_buffer("y", _CudaArray((2, 4)), info, accepts, device=DeviceSpec("cuda", 0))
    check_output_buffer("y", _CudaArray((2, 4), 1), info, accepts, device=DeviceSpec("cuda", 1))
    for device, buffer in ((DeviceSpec("cuda", 0), _CudaArray((2, 4), 1)), (DeviceSpec("cpu"), _CudaArray((2, 4)))):
        with pytest.raises(InputError, match="on another device than the session"):
            check_output_buffer("y", buffer, info, accepts, device=device)
    with pytest.raises(InputError, match="read-only"):
        check_output_buffer("y", _CudaArray((2, 4), readonly=True), info, accepts, device=DeviceSpec("cuda", 0))
    check_output_buffer("y", np.empty((2, 4), np.float32), info, accepts, device=DeviceSpec("cuda", 0))


def test_a_torch_cuda_tensor_counts_as_a_cuda_array_where_the_engine_binds_cuda_memory():
    """Without a GPU: a CPU tensor posing as a CUDA one (``is_cuda``) is accepted as a CUDA array; a real CPU tensor
    is refused on an engine that binds CUDA memory and accepted on one that copies into torch tensors."""
    torch = pytest.importorskip("torch")
    from xpuruntime.inference.feeds import TensorInfo, check_output_buffer
    from xpuruntime.runtime.devices import DeviceSpec

    class _OnCuda(torch.Tensor):
        is_cuda = True  # type: ignore[assignment]

    info, cuda0 = TensorInfo("y", (2, 4), "float32"), DeviceSpec("cuda", 0)
    posing = torch.zeros(2, 4).as_subclass(_OnCuda)
    check_output_buffer("y", posing, info, ("numpy", "cuda"), device=cuda0)
    with pytest.raises(InputError, match="not a buffer this engine can write") as refused:
        check_output_buffer("y", torch.zeros(2, 4), info, ("numpy", "cuda"), device=cuda0)
    assert "a torch tensor" in str(refused.value) and "np.from_dlpack" in str(refused.value)
    check_output_buffer("y", torch.zeros(2, 4), info, ("numpy", "torch"), device=cuda0)
    with pytest.raises(InputError, match="requires grad"):
        check_output_buffer("y", torch.zeros(2, 4, requires_grad=True).as_subclass(_OnCuda), info,
                            ("numpy", "cuda"), device=cuda0)


def test_the_same_output_tensors_are_checked_once_and_any_other_buffer_in_full(monkeypatch):
    """A serving loop writing into one set of torch output tensors pays the full check once; a new tensor, another
    shape, or a numpy buffer is checked in full every time (and refused when wrong)."""
    torch = pytest.importorskip("torch")
    from xpuruntime.inference.engine import Engine

    sess = xrt.InferenceSession(torch.nn.Linear(4, 3).eval(), engine="torch",
                                engine_options={"example_inputs": (torch.randn(2, 4),)})
    checks = []
    real = Engine._check_outputs
    monkeypatch.setattr(Engine, "_check_outputs", lambda self, *a: checks.append(1) or real(self, *a))
    x, out = np.ones((2, 4), np.float32), torch.empty(2, 3)
    for _ in range(3):
        sess.run({"input": x}, outputs={"output": out})
    assert len(checks) == 1 and torch.equal(out, torch.from_numpy(sess.run({"input": x})["output"]))
    sess.run({"input": np.ones((2, 4), np.float32)}, outputs={"output": torch.empty(2, 3)})
    with pytest.raises(InputError):
        sess.run({"input": x}, outputs={"output": torch.empty(2, 5)})
    host = np.empty((2, 3), np.float32)
    sess.run({"input": x}, outputs={"output": host})
    sess.run({"input": x}, outputs={"output": host})
    assert len(checks) == 5
