"""The ONNX Runtime engine's per-call path (issue 13): what a run returns and refuses after the hot path was cut.

Outputs are compared with a bare ``onnxruntime.InferenceSession`` built the way the engine built its own (the
baseline of ``xpuruntime bench``). The CUDA-graph path cannot capture on the CPU; here the engine drives its real
``GraphBinding`` on CPU OrtValues (the binding the GPU tests run under ``cuda_graphs``), which exercises every
per-call step of that path: feeds copied in place, one ``run_with_iobinding`` of the same binding, outputs read back.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

from xpuruntime.errors import InputError
from xpuruntime.inference import InferenceSession
from xpuruntime.inference.engines import _onnxruntime as tr
from xpuruntime.inference.samples import add_mul, matmul_relu, tiny_transformer

ort = pytest.importorskip("onnxruntime")


def _bare(sess: InferenceSession) -> Any:
    eng = sess.engine
    source = str(eng.model.path) if eng.model.path else eng.model.data
    return ort.InferenceSession(source, sess_options=eng._session_options(), providers=eng.plan.providers)


def _feeds(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"a": rng.standard_normal((2, 8)).astype(np.float32), "b": rng.standard_normal((2, 8)).astype(np.float32)}


def _graph_session(model: Any, feeds: dict[str, np.ndarray]) -> InferenceSession:
    """A session on its CUDA-graph path, its binding on CPU OrtValues (the CPU provider captures nothing)."""
    sess = InferenceSession(model, exec_policy={"cuda_graphs": True, "fallback": "allow",
                                                "fixed_shapes": {k: list(v.shape) for k, v in feeds.items()}})
    sess.engine._graphs = True
    sess.engine._graph = tr.GraphBinding(ort, sess.engine.session, 0, device="cpu")
    return sess


@pytest.fixture(scope="module")
def two() -> Any:
    """``y = a + b``, ``z = a * b``: two inputs, two outputs, float32 [2, 8]."""
    return add_mul(2, 8)


# -- the host path -----------------------------------------------------------------------------------------------
def _assert_equals_bare_call_after_call(sess: Any, calls: int) -> None:
    """Each run equals the bare session's, and an earlier result is never overwritten by a later run."""
    bare = _bare(sess)
    kept = []
    for seed in range(calls):
        feeds = _feeds(seed)
        out = sess.run(feeds)
        y, z = bare.run(None, feeds)
        np.testing.assert_array_equal(out["y"], y)
        np.testing.assert_array_equal(out["z"], z)
        kept.append((out["y"], y.copy(), out["z"], z.copy()))
    for ours_y, want_y, ours_z, want_z in kept:
        np.testing.assert_array_equal(ours_y, want_y)
        np.testing.assert_array_equal(ours_z, want_z)


def test_host_runs_equal_the_bare_session_call_after_call(two: Any) -> None:
    _assert_equals_bare_call_after_call(InferenceSession(two), 4)


def test_host_run_forms_output_subsets_and_run_many(two: Any) -> None:
    sess = InferenceSession(two)
    feeds = _feeds(7)
    y, z = _bare(sess).run(None, feeds)
    assert list(sess.run(feeds)) == ["y", "z"]
    (only_z,) = sess.run([feeds["a"], feeds["b"]], ["z"])
    np.testing.assert_array_equal(only_z, z)
    np.testing.assert_array_equal(sess.run(feeds, "y")["y"], y)
    many = sess.run_many([feeds, _feeds(8)])
    np.testing.assert_array_equal(many[0]["z"], z)
    np.testing.assert_array_equal(many[1]["y"], sum(_feeds(8).values()))


def test_a_run_under_execution_timeout_gives_the_same_outputs(two: Any) -> None:
    feeds = _feeds(3)
    timed = InferenceSession(two, exec_policy={"execution_timeout_ms": 60_000})
    np.testing.assert_array_equal(timed.run(feeds)["z"], InferenceSession(two).run(feeds)["z"])


@pytest.mark.parametrize(("feeds", "words"), [
    ({"a": np.ones((2, 8), np.float32)}, "b"),  # an input missing
    ({"a": np.ones((2, 8), np.float32), "b": np.ones((3, 8), np.float32)}, "axis 0"),
    ({"a": np.ones((2, 8), np.float32), "b": np.ones((2, 8), np.float32), "c": np.ones(1, np.float32)}, "c"),
    ({"a": np.ones((2, 8), np.float32), "b": "text"}, "b"),
])
def test_bad_feeds_are_input_errors_on_the_host_path(two: Any, feeds: dict[str, Any], words: str) -> None:
    sess = InferenceSession(two)
    with pytest.raises(InputError) as info:
        sess.run(feeds)
    assert words in str(info.value)
    np.testing.assert_array_equal(sess.run(_feeds(1))["y"], sum(_feeds(1).values()))  # still usable


def test_every_run_names_its_graph_so_onnx_runtime_looks_nothing_up_in_vain(two: Any) -> None:
    """ONNX Runtime's Python ``run_with_iobinding`` reads ``gpu_graph_id`` from the RunOptions on every call; a
    missing entry is a C++ exception raised and caught per call (about 30 us on this CPU: most of the CUDA-graph
    path's overhead here). The engine's RunOptions always carry it: ONNX Runtime's default graph (0) under
    cuda_graphs, no capture (-1) otherwise."""
    plain = InferenceSession(two).engine
    assert plain._run_options.get_run_config_entry("gpu_graph_id") == "-1"
    graphs = _graph_session(two, _feeds(0)).engine
    assert graphs._run_options.get_run_config_entry("gpu_graph_id") == "0"
    assert graphs._run_options.log_severity_level == plain._run_options.log_severity_level == 4


# -- the CUDA-graph path (its binding on CPU OrtValues) -------------------------------------------------------------
def test_graph_path_follows_new_inputs_and_equals_the_bare_session(two: Any) -> None:
    sess = _graph_session(two, _feeds(0))
    _assert_equals_bare_call_after_call(sess, 5)  # each call's outputs its own, not views of the captured buffers
    assert sess.engine._graph.binding is not None and set(sess.engine._graph.inputs) == {"a", "b"}


def test_graph_path_keeps_one_binding_and_the_callers_arrays_untouched(two: Any) -> None:
    feeds = _feeds(0)
    sess = _graph_session(two, feeds)
    kept = {k: v.copy() for k, v in feeds.items()}
    sess.run(feeds)
    graph = sess.engine._graph
    binding, staged = graph.binding, dict(graph.inputs)
    for seed in (1, 2):
        sess.run(_feeds(seed))
        sess.run([*_feeds(seed).values()], ["y"])
    assert graph.binding is binding and graph.inputs == staged  # updated in place, never rebound
    for k, v in feeds.items():
        np.testing.assert_array_equal(v, kept[k])


def test_graph_path_subset_of_outputs_and_a_transformer(two: Any) -> None:
    x = np.random.default_rng(0).standard_normal((1, 16, 64)).astype(np.float32)
    sess = _graph_session(tiny_transformer(), {"x": x})
    bare = _bare(sess)
    for scale in (1.0, 0.5, -1.0):
        np.testing.assert_allclose(sess.run({"x": x * scale}, ["y"])["y"], bare.run(None, {"x": x * scale})[0],
                                   rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("feeds", "words"), [
    ({"a": np.ones((2, 8), np.float32)}, "b"),
    ({"a": np.ones((2, 8), np.float32), "b": np.ones((4, 8), np.float32)}, "axis 0"),
    ({"a": np.ones((2, 8), np.float32), "b": np.ones((2, 8), np.int64).astype(object)}, "b"),
])
def test_bad_feeds_are_input_errors_on_the_graph_path(two: Any, feeds: dict[str, Any], words: str) -> None:
    sess = _graph_session(two, _feeds(0))
    sess.run(_feeds(0))  # captured
    with pytest.raises(InputError) as info:
        sess.run(feeds)
    assert words in str(info.value)
    np.testing.assert_array_equal(sess.run(_feeds(1))["z"], np.multiply(*_feeds(1).values()))


def test_graph_binding_refuses_a_new_shape_on_its_fast_path() -> None:
    """The binding's own check (a model whose inputs stay symbolic after ``fixed_shapes`` reaches it)."""
    sess = InferenceSession(matmul_relu(k=8, n=4))
    graph = tr.GraphBinding(ort, sess.engine.session, 0, device="cpu")
    run = sess.engine.session.run_with_iobinding
    graph.run({"x": np.ones((2, 8), np.float32)}, ["y"], run)
    with pytest.raises(InputError, match="changed shape under cuda_graphs"):
        graph.run({"x": np.ones((3, 8), np.float32)}, ["y"], run)
    (y,) = graph.run({"x": np.full((2, 8), 2.0, np.float32)}, ["y"], run)
    np.testing.assert_allclose(y, sess.run({"x": np.full((2, 8), 2.0, np.float32)})["y"], rtol=1e-6)


def test_graph_path_from_several_threads_gives_each_caller_its_outputs(two: Any) -> None:
    sess = _graph_session(two, _feeds(0))
    sess.run(_feeds(0))
    wrong: list[int] = []

    def worker(seed: int) -> None:
        feeds = _feeds(seed)
        for _ in range(30):
            if not np.array_equal(sess.run(feeds)["y"], feeds["a"] + feeds["b"]):
                wrong.append(seed)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []


# -- ONNX Runtime's C methods ------------------------------------------------------------------------------------
def test_the_c_methods_behind_onnx_runtimes_python_wrappers_do_what_the_wrappers_do(two: Any) -> None:
    """``tr.c_session`` / ``binding_call`` / ``value_calls`` (what prepared runs and the binding path call): the same
    results as the public methods on a real session, and the public methods wherever the C objects are missing."""
    from types import SimpleNamespace

    with InferenceSession(two) as sess:
        session, feeds = sess.engine.session, _feeds(0)
        assert tr.c_session(session) is session._sess
        y, z = session.run(None, feeds)
        binding = session.io_binding()
        values = {k: ort.OrtValue.ortvalue_from_numpy(np.zeros_like(v)) for k, v in feeds.items()}
        for k, v in values.items():
            binding.bind_ortvalue_input(k, v)
            update, read = tr.value_calls(v)
            update(feeds[k])
            np.testing.assert_array_equal(read(), feeds[k])
        for name in ("y", "z"):
            binding.bind_output(name, "cpu")
        tr.binding_call(session, binding)(sess.engine._run_options)
        got = [tr.value_calls(v)[1]() for v in binding.get_outputs()]
        np.testing.assert_array_equal(got[0], y)
        np.testing.assert_array_equal(got[1], z)
    public = SimpleNamespace(run=lambda *a: "run", run_with_iobinding=lambda *a: a, update_inplace=lambda x: x,
                             numpy=lambda: "numpy")
    assert tr.c_session(public) is None
    assert tr.binding_call(public, "binding")("options") == ("binding", "options")
    assert tr.value_calls(public) == (public.update_inplace, public.numpy)


def test_onnx_runtimes_silent_retry_on_the_cpu_provider_is_off(two: Any) -> None:
    """ONNX Runtime's Python ``run`` moves a session whose provider failed to the CPU provider and runs again
    (printing two lines); a receipt would not show it, so the engine turns that off and the failure raises."""
    with InferenceSession(two) as sess:
        assert sess.engine.session._enable_fallback is False


def test_the_prepared_graph_call_copies_strided_feeds_in_c_order(two: Any) -> None:
    feeds = _feeds(0)
    with _graph_session(two, feeds) as sess:
        run = sess.prepare(feeds)
        assert run._call.__name__ == "graph_call"
        flipped = {k: np.ascontiguousarray(v[:, ::-1])[:, ::-1] for k, v in _feeds(1).items()}
        assert not flipped["a"].flags.c_contiguous
        got, want = run(flipped), _bare(sess).run(None, _feeds(1))
        np.testing.assert_array_equal(got["y"], want[0])
        np.testing.assert_array_equal(got["z"], want[1])


def test_onnx_runtime_never_moves_a_failed_session_to_the_cpu() -> None:
    """ONNX Runtime's Python ``run()`` answers a provider's ``EPFail`` by re-creating the session on the CPU provider
    and running again (two printed lines, no exception): a fallback the receipt would not show. The engine turns it
    off once it made the session, and an ``EPFail`` becomes an ``XpuRuntimeError`` like any engine failure."""
    from xpuruntime.errors import XpuRuntimeError

    sess = InferenceSession(add_mul(2, 8))
    # ORT's own flag, which disable_fallback() clears (as data: an EPFail needs a provider that fails mid-run,
    # which the CPU provider never does)
    assert sess.engine.session._enable_fallback is False
    fail = ort.capi.onnxruntime_pybind11_state.EPFail("CUDA failure 2: out of memory")
    assert isinstance(sess.engine.run_error(fail), XpuRuntimeError)
