"""Faults during a run or a compile: timeouts are honoured where the engine allows it (refused by name where it
does not), and an engine that fails mid-run leaves the session usable for the next run.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np
import pytest
from _rel_models import matmul_chain, reshape_model

from xpuruntime.errors import ExecutionTimeoutError, PolicyViolationError, XpuRuntimeError
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
                                                                   **execution})


# -- execution_timeout_ms ------------------------------------------------------------------------
@pytest.mark.slow
def test_a_1_ms_execution_timeout_stops_a_long_run(engine: str, chain: Any) -> None:
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


def test_compile_timeout_is_refused_by_name_where_the_engine_cannot_cancel(engine: str, chain: Any) -> None:
    if engine == "onnxruntime":
        pytest.skip("ONNX Runtime cancels a load (tested above)")
    with pytest.raises(PolicyViolationError, match="compile_timeout_ms"):
        InferenceSession(chain, engine=engine, exec_policy={"compile_timeout_ms": 1000, "fallback": "error"})


# -- an engine that fails mid-run ------------------------------------------------------------------
def test_a_run_that_fails_inside_the_engine_leaves_the_session_usable(engine: str) -> None:
    sess = session(reshape_model(), engine)
    good = {"x": np.arange(6, dtype=np.float32), "s": np.array([2, 3], np.int64)}
    bad = {"x": np.arange(4, dtype=np.float32), "s": np.array([3, 5], np.int64)}  # 4 values cannot be 3x5
    for _ in range(5):
        with pytest.raises(XpuRuntimeError) as info:
            sess.run(bad)
        assert type(info.value).__module__ == "xpuruntime.errors"  # ours, never the engine's own type
        np.testing.assert_array_equal(sess.run(good)["y"], np.arange(6, dtype=np.float32).reshape(2, 3))


def test_a_failing_feed_set_in_run_many_leaves_the_session_usable(engine: str) -> None:
    sess = session(reshape_model(), engine)
    good = {"x": np.arange(6, dtype=np.float32), "s": np.array([3, 2], np.int64)}
    bad = {"x": np.arange(4, dtype=np.float32), "s": np.array([3, 5], np.int64)}
    with pytest.raises(XpuRuntimeError):
        sess.run_many([good, bad, good])
    outs = sess.run_many([good] * 4)
    assert all(np.array_equal(o["y"], np.arange(6, dtype=np.float32).reshape(3, 2)) for o in outs)


def test_explain_after_a_failed_run_still_works(engine: str) -> None:
    sess = session(reshape_model(), engine)
    with pytest.raises(XpuRuntimeError):
        sess.run({"x": np.arange(4, dtype=np.float32), "s": np.array([3, 5], np.int64)})
    report = sess.explain({"x": np.arange(6, dtype=np.float32), "s": np.array([2, 3], np.int64)})
    assert report.profiled and report.nodes
