"""Load: 8 threads x 500 runs on one shared session, and on one session per thread, give exactly the serial
results, on every ONNX engine. Each thread feeds its own inputs, so a mixed-up result cannot pass.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from xpuruntime.inference import InferenceSession

THREADS, RUNS = 8, 500  # README "Reliability" quotes these


@pytest.fixture(scope="module")
def inputs() -> list[list[np.ndarray]]:
    rng = np.random.default_rng(0)
    return [[rng.standard_normal((1 + (t + i) % 3, 8)).astype(np.float32) for i in range(RUNS)]
            for t in range(THREADS)]


def serial(sess: InferenceSession, inputs: list[list[np.ndarray]]) -> list[list[np.ndarray]]:
    return [[sess.run({"x": x})["y"] for x in per_thread] for per_thread in inputs]


def in_threads(work: Callable[[int], list[np.ndarray]]) -> list[list[np.ndarray]]:
    results: list[Any] = [None] * THREADS
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def body(t: int) -> None:
        try:
            start.wait()
            results[t] = work(t)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(t,)) for t in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors[0]
    return results


def assert_identical(got: list[list[np.ndarray]], want: list[list[np.ndarray]]) -> None:
    for t in range(THREADS):
        for i in range(RUNS):
            np.testing.assert_array_equal(got[t][i], want[t][i], err_msg=f"thread {t} run {i}")


@pytest.mark.slow
def test_threads_sharing_one_session_get_the_serial_results(engine: str, mm: Any,
                                                            inputs: list[list[np.ndarray]]) -> None:
    sess = InferenceSession(mm, engine=engine)
    want = serial(sess, inputs)
    got = in_threads(lambda t: [sess.run({"x": x})["y"] for x in inputs[t]])
    assert_identical(got, want)


@pytest.mark.slow
def test_one_session_per_thread_gets_the_serial_results(engine: str, mm: Any,
                                                        inputs: list[list[np.ndarray]]) -> None:
    want = serial(InferenceSession(mm, engine=engine), inputs)

    def work(t: int) -> list[np.ndarray]:
        own = InferenceSession(mm, engine=engine)  # created concurrently too
        return [own.run({"x": x})["y"] for x in inputs[t]]

    assert_identical(in_threads(work), want)


@pytest.mark.slow
def test_run_many_from_threads_gets_the_serial_results(engine: str, mm: Any,
                                                       inputs: list[list[np.ndarray]]) -> None:
    sess = InferenceSession(mm, engine=engine)
    want = serial(sess, inputs)
    got = in_threads(lambda t: [o["y"] for o in sess.run_many([{"x": x} for x in inputs[t]])])
    assert_identical(got, want)


@pytest.mark.slow
@pytest.mark.parametrize("execution", [{}, {"num_threads": 1}, {"execution_timeout_ms": 60_000}],
                         ids=["engine threads", "one thread", "timeout path"])
def test_failing_runs_among_good_ones_under_threads(engine: str, execution: dict[str, Any]) -> None:
    """Half the threads send feeds that fail inside the engine while the others run: every good run is
    exact, every bad one an InputError (OpenVINO recompiles after failures while other threads run)."""
    from _rel_models import make_model, vi
    from onnx import TensorProto, helper

    from xpuruntime.errors import InputError

    model = make_model([helper.make_node("MatMul", ["x", "y"], ["z"])],
                       [vi("x", TensorProto.FLOAT, ["a", "b"]), vi("y", TensorProto.FLOAT, ["c", "d"])],
                       [vi("z", TensorProto.FLOAT, ["a", "d"])])
    sess = InferenceSession(model, engine=engine, exec_policy=execution)
    x, y, bad_y = (np.arange(6, dtype=np.float32).reshape(2, 3), np.ones((3, 2), np.float32),
                   np.ones((4, 2), np.float32))
    want = x @ y

    def work(t: int) -> list[np.ndarray]:
        outs = []
        for _ in range(60):
            if t % 2:
                with pytest.raises(InputError):
                    sess.run({"x": x, "y": bad_y})
            else:
                outs.append(sess.run({"x": x, "y": y})["z"])
        return outs

    for outs in in_threads(work)[::2]:
        for out in outs:
            np.testing.assert_array_equal(out, want)


@pytest.mark.slow
def test_threads_sharing_prepared_runs_get_the_serial_results(engine: str, mm: Any,
                                                              inputs: list[list[np.ndarray]]) -> None:
    """One prepared run per input shape, shared by every thread, beside session.run on the same session."""
    sess = InferenceSession(mm, engine=engine)
    want = serial(sess, inputs)
    prepared = {rows: sess.prepare({"x": np.zeros((rows, 8), np.float32)}) for rows in (1, 2, 3)}

    def work(t: int) -> list[np.ndarray]:
        out = []
        for i, x in enumerate(inputs[t]):
            out.append(prepared[x.shape[0]]({"x": x})["y"] if (t + i) % 4 else sess.run({"x": x})["y"])
        return out

    assert_identical(in_threads(work), want)
