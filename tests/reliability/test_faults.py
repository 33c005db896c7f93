"""Faults during a run or a compile: timeouts are honoured where the engine allows it (refused by name where it
does not), and an engine that fails mid-run leaves the session usable for the next run.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np
import pytest
from _rel_models import ONNX_ENGINES, make_model, matmul_chain, reshape_model, vi
from onnx import TensorProto, helper

from xpuruntime.errors import ExecutionTimeoutError, InputError, PolicyViolationError
from xpuruntime.inference import InferenceSession

BIG = np.full((16384, 256), 0.01, np.float32)  # 64 MatMuls of 16384x256x256: about 0.8 s on one thread
SMALL = np.full((1, 256), 0.01, np.float32)


@pytest.fixture(scope="module")
def chain() -> Any:
    return matmul_chain(layers=64, d=256)


def session(model: Any, engine: str, **execution: Any) -> InferenceSession:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # OpenVINO refuses compile_timeout_ms by name: a violation, tested below
        return InferenceSession(model, engine=engine, exec_policy={"fallback": "allow", "num_threads": 1,
                                                                   **execution})  # num_threads=None: the engine's


# -- execution_timeout_ms ------------------------------------------------------------------------
@pytest.mark.slow
def test_a_1_ms_execution_timeout_returns_control_on_time(engine: str, chain: Any) -> None:
    """ONNX Runtime stops the run (RunOptions.terminate); OpenVINO's run finishes in the background."""
    sess = session(chain, engine, execution_timeout_ms=1)
    start = time.perf_counter()
    with pytest.raises(ExecutionTimeoutError):
        sess.run({"x": BIG})
    assert time.perf_counter() - start < 0.5


@pytest.mark.slow
def test_after_a_timeout_the_session_runs_again_and_never_returns_a_stale_result(engine: str, chain: Any) -> None:
    """OpenVINO 2026.4 does not always stop a cancelled run: it keeps computing in the background (the next
    runs may wait behind it and time out themselves), and the request it ran on would hand its output to
    the next run. xpuruntime drops such a request, so a later run is correct or a timeout, never stale."""
    sess = session(chain, engine, execution_timeout_ms=200)
    expected = session(chain, engine).run({"x": SMALL})["y"]
    for _ in range(3):
        with pytest.raises(ExecutionTimeoutError):
            sess.run({"x": BIG})
        attempts = run_until_done(sess, {"x": SMALL}, expected)
        if engine == "onnxruntime":
            assert attempts == 1  # RunOptions.terminate stops the run at the next node


def run_until_done(sess: InferenceSession, feeds: dict[str, np.ndarray], expected: np.ndarray) -> int:
    for attempt in range(1, 30):
        try:
            out = sess.run(feeds)["y"]
        except ExecutionTimeoutError:
            continue
        np.testing.assert_array_equal(out, expected)
        return attempt
    pytest.fail("no run finished within 30 attempts after a timeout")


# -- compile_timeout_ms ----------------------------------------------------------------------------
@pytest.mark.slow
def test_compile_timeout_is_honoured_by_onnxruntime() -> None:
    deep = matmul_chain(layers=3000, d=8)  # about 0.3 s to load: its graph passes run for every node
    with pytest.raises(ExecutionTimeoutError, match="compile_timeout_ms"):
        InferenceSession(deep, exec_policy={"compile_timeout_ms": 1})
    InferenceSession(deep, exec_policy={"compile_timeout_ms": 60_000})  # a generous limit changes nothing


@pytest.mark.parametrize("engine", [e for e in ONNX_ENGINES if e != "onnxruntime"])
def test_compile_timeout_is_refused_by_name_where_the_engine_cannot_cancel(engine: str, chain: Any) -> None:
    with pytest.raises(PolicyViolationError, match="compile_timeout_ms"):
        InferenceSession(chain, engine=engine, exec_policy={"compile_timeout_ms": 1000, "fallback": "error"})


# -- an engine that fails mid-run ------------------------------------------------------------------
def _two_inputs(op: str, **attrs: Any) -> Any:
    return make_model([helper.make_node(op, ["x", "y"], ["z"], **attrs)],
                      [vi("x", TensorProto.FLOAT, ["a", "b"]), vi("y", TensorProto.FLOAT, ["c", "d"])],
                      [vi("z", TensorProto.FLOAT, ["e", "f"])])


def _f(*shape: int) -> np.ndarray:
    return np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)


FAILING = {  # model, feeds that fail inside a node (not visible to a feed check), feeds that run, expected output
    "reshape": (reshape_model, {"x": _f(4), "s": np.array([3, 5], np.int64)},
                {"x": _f(6), "s": np.array([2, 3], np.int64)}, _f(2, 3)),
    "broadcast": (lambda: _two_inputs("Add"), {"x": _f(2, 3), "y": _f(2, 4)}, {"x": _f(2, 3), "y": _f(1, 3)},
                  _f(2, 3) + _f(1, 3)),
    "matmul": (lambda: _two_inputs("MatMul"), {"x": _f(2, 3), "y": _f(4, 2)}, {"x": _f(2, 3), "y": _f(3, 2)},
               _f(2, 3) @ _f(3, 2)),
    "concat": (lambda: _two_inputs("Concat", axis=0), {"x": _f(2, 3), "y": _f(1, 4)}, {"x": _f(2, 3), "y": _f(1, 3)},
               np.concatenate([_f(2, 3), _f(1, 3)])),
}
PATHS = {"one thread": {"num_threads": 1}, "engine threads": {"num_threads": None},
         "timeout path": {"execution_timeout_ms": 60_000}}


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("case", list(FAILING))
def test_a_run_that_fails_inside_the_engine_leaves_the_session_usable(engine: str, case: str, path: str) -> None:
    """Found here, in OpenVINO 2026.4's CPU plugin: with INFERENCE_NUM_THREADS=1 its synchronous infer() drops
    such errors (an empty or the previous run's output comes back, or the process crashes), and after a failed
    MatMul a compiled model can return wrong values. xpuruntime runs single-threaded sessions through
    start_async()/wait() and recompiles after a failed run."""
    make, bad, good, expected = FAILING[case]
    sess = session(make(), engine, **PATHS[path])
    for feeds in (good, bad, good, good, bad, bad, good):
        if feeds is bad:
            with pytest.raises(InputError) as info:  # the inputs' sizes do not fit the node: every engine says so
                sess.run(bad)
            assert type(info.value).__module__ == "xpuruntime.errors"  # ours, never the engine's own type
        else:
            (out,) = sess.run(good).values()
            np.testing.assert_array_equal(out, expected)


def test_a_failing_feed_set_in_run_many_leaves_the_session_usable(engine: str) -> None:
    make, bad, good, expected = FAILING["matmul"]
    sess = session(make(), engine)
    with pytest.raises(InputError):
        sess.run_many([good, bad, good])
    outs = sess.run_many([good] * 4)
    assert all(np.array_equal(o["z"], expected) for o in outs)


def test_explain_after_a_failed_run_still_works(engine: str) -> None:
    make, bad, good, _ = FAILING["broadcast"]
    sess = session(make(), engine)
    with pytest.raises(InputError):
        sess.run(bad)
    report = sess.explain(good)
    assert report.profiled and report.nodes
