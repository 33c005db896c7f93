"""Item 4: OpenVINO timeouts. After one run timed out, the next ignored its ``execution_timeout_ms`` (OpenVINO's
``create_infer_request()`` waits while another request runs), and with a model that never ends the process could
not exit. ``close()`` during a run gave a raw ``AttributeError``. Each case runs in a child process with a bound."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("openvino")

SRC = Path(__file__).resolve().parents[2] / "src"

ENDLESS = '''
import numpy as np, onnx
from onnx import helper as h, TensorProto as T
def endless():
    """A Loop of 2**62 trips: it never ends, and OpenVINO's cancel() does not stop it."""
    body = h.make_graph([h.make_node("Identity", ["c"], ["c_out"]), h.make_node("Add", ["v", "one"], ["v_out"])],
        "body", [h.make_tensor_value_info("i", T.INT64, []), h.make_tensor_value_info("c", T.BOOL, []),
                 h.make_tensor_value_info("v", T.FLOAT, [4])],
        [h.make_tensor_value_info("c_out", T.BOOL, []), h.make_tensor_value_info("v_out", T.FLOAT, [4])],
        [h.make_tensor("one", T.FLOAT, [4], [1, 1, 1, 1])])
    g = h.make_graph([h.make_node("Loop", ["M", "cond", "x"], ["y"], body=body)], "endless",
        [h.make_tensor_value_info("x", T.FLOAT, [4])], [h.make_tensor_value_info("y", T.FLOAT, [4])],
        [h.make_tensor("M", T.INT64, [], [2**62]), h.make_tensor("cond", T.BOOL, [], [True])])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)]); m.ir_version = 8
    return m
'''


def _child(code: str, tmp_path: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    (tmp_path / "endless_model.py").write_text(ENDLESS)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(tmp_path)])}
    dump = f"import faulthandler; faulthandler.dump_traceback_later({timeout - 10}, exit=True)\n"
    try:  # a hang prints every thread's stack (faulthandler) and ends the child, else fails with TimeoutExpired
        return subprocess.run([sys.executable, "-c", dump + code], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the child hung past {timeout} s; its stderr:\n{exc.stderr!r}")


def test_every_run_keeps_its_limit_and_the_process_exits(tmp_path: Path):
    out = _child('''
import sys, numpy as np, xpuruntime as xrt
from endless_model import endless
from xpuruntime.errors import ExecutionTimeoutError
s = xrt.InferenceSession(endless().SerializeToString(), engine="openvino", exec_policy={"execution_timeout_ms": 300})
for _ in range(3):
    try:
        s.run({"x": np.zeros(4, np.float32)})
    except ExecutionTimeoutError:
        print("timeout")
''', tmp_path, timeout=40)  # 3 x 0.3 s of limits; before the fix the second run never returned
    assert out.stdout.split() == ["timeout"] * 3, out.stderr[-2000:]
    assert out.returncode == 0  # the CLI keeps its own status (below); note_exit_status() sets another
    assert "could not be stopped" in out.stderr


def test_the_cli_prints_the_error_and_exits_with_status_1(tmp_path: Path):
    (tmp_path / "p.yaml").write_text("execution: {execution_timeout_ms: 300}\n")
    out = _child('''
import onnx
from endless_model import endless
onnx.save(endless(), "endless.onnx")
from xpuruntime.cli import main
main(["run", "endless.onnx", "-e", "openvino", "--random-inputs", "-p", "p.yaml"])
''', tmp_path, timeout=40)
    assert out.returncode == 1, out.stderr[-2000:]
    assert "error: the run passed execution_timeout_ms" in out.stderr and "Traceback" not in out.stderr


def test_close_during_a_run_is_never_an_attribute_error(tmp_path: Path):
    out = _child('''
import threading, numpy as np, xpuruntime as xrt
from xpuruntime.errors import XpuRuntimeError
from xpuruntime.inference.samples import matmul_relu
s = xrt.InferenceSession(matmul_relu(k=256, n=256), engine="openvino")
x = {"x": np.ones((64, 256), np.float32)}
errors = []
def loop():
    for _ in range(300):
        try:
            s.run(x)
        except XpuRuntimeError:
            pass
        except Exception as exc:
            errors.append(type(exc).__name__)
threads = [threading.Thread(target=loop) for _ in range(3)]
[t.start() for t in threads]
s.close()
[t.join() for t in threads]
print("raw errors:", errors)
''', tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "raw errors: []" in out.stdout


def test_threads_making_their_first_runs_at_once_never_deadlock(tmp_path: Path):
    """OpenVINO 2026.4's binding fills its numpy dtype table (a C++ static that runs Python while it is filled) on the
    first run of a process; threads making their first runs at once deadlocked there, holding the GIL (found as a
    hang of the close() test above in CI; 17 of 40 such children hung at a short switch interval before the fix).
    Five children, four threads each, first runs released together."""
    code = '''
import sys, threading, numpy as np, xpuruntime as xrt
from xpuruntime.inference.samples import matmul_relu
sys.setswitchinterval(1e-6)
s = xrt.InferenceSession(matmul_relu(k=64, n=64), engine="openvino")
go = threading.Barrier(4)
def first():
    go.wait()
    s.run({"x": np.ones((8, 64), np.float32)})
threads = [threading.Thread(target=first) for _ in range(4)]
[t.start() for t in threads]
[t.join() for t in threads]
print("ran")
'''
    for _ in range(5):
        out = _child(code, tmp_path, timeout=40)
        assert out.returncode == 0 and out.stdout.split() == ["ran"], out.stderr[-3000:]
