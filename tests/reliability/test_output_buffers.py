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
    env = {**os.environ, "PYTHONPATH": str(SRC)}
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
