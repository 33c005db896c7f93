"""``session.run`` repeating its last configuration (issue 13): after the same dict of numpy feeds (names, shapes,
dtypes) ran twice through the full path, later runs of that configuration take the prepared call, with the run's
trace span. Real engines on a real BERT (transformers config, random weights) exported to ONNX, and on torch;
results equal a bare engine's, every feed that does not fit still gets the full path's own error, and nothing is
repeated while a profile collects or after the session closed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import xpuruntime as xrt
from xpuruntime.inference.prepared import MISS
from xpuruntime.runtime.profiler import profile

ort = pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_run_repeats_a_configuration_seen_twice_and_gives_what_the_engine_gives(bert_feeds: Any, bert: Path,
                                                                                engine: str) -> None:
    if engine == "openvino":
        pytest.importorskip("openvino")
    bare = ort.InferenceSession(str(bert), providers=["CPUExecutionProvider"])
    with xrt.InferenceSession(str(bert), engine=engine) as sess:
        eng = sess.engine
        sess.run(bert_feeds(0))
        assert eng._repeat is None  # once is not a loop
        sess.run(bert_feeds(1))
        assert eng._repeat is not None
        spans = len(sess.report.spans)
        for seed in (2, 3, 4):
            assert eng._repeat(bert_feeds(seed)) is not MISS  # the repeat takes it
            got = sess.run(bert_feeds(seed))
            want = dict(zip(["hidden", "pooled"], bare.run(None, bert_feeds(seed))))
            assert list(got) == ["hidden", "pooled"]
            for name in want:
                np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-4)
        assert len(sess.report.spans) == spans + 6 and sess.report.spans[-1]["name"] == "run"  # a span per run
        # another shape takes the full path and gives its own results; two in a row repeat that one instead
        other = bert_feeds(5, batch=1, seq=8)
        assert eng._repeat(other) is MISS
        np.testing.assert_allclose(sess.run(other)["pooled"], bare.run(None, other)[1], rtol=1e-4, atol=1e-4)
        sess.run(other)
        assert eng._repeat(other) is not MISS and eng._repeat(bert_feeds(6)) is MISS


def test_feeds_that_do_not_fit_get_the_full_paths_errors_with_a_repeat_in_place(bert_feeds: Any, bert: Path) -> None:
    with xrt.InferenceSession(str(bert)) as sess:
        sess.run(bert_feeds(0))
        sess.run(bert_feeds(1))
        assert sess.engine._repeat is not None
        feeds = bert_feeds(2)
        with pytest.raises(xrt.InputError, match="dtype"):
            sess.run({**feeds, "input_ids": feeds["input_ids"].astype(np.float32)})
        with pytest.raises(xrt.InputError, match="missing input"):
            sess.run({"input_ids": feeds["input_ids"]})
        with pytest.raises(xrt.InputError, match="unknown input"):
            sess.run({**feeds, "bogus": feeds["input_ids"]})
        # strided (ONNX Runtime takes them as they are) or as a list: the same results
        want = sess.run(feeds)["pooled"]
        strided = {k: np.asfortranarray(v) for k, v in feeds.items()}
        np.testing.assert_allclose(sess.run(strided)["pooled"], want, rtol=1e-5, atol=1e-5)
        listed = sess.run([feeds["input_ids"], feeds["attention_mask"]])
        assert isinstance(listed, list)
        np.testing.assert_allclose(listed[1], want, rtol=1e-5, atol=1e-5)
        # other output names, or caller buffers: the full path
        assert list(sess.run(feeds, ["pooled"])) == ["pooled"]


def test_feeds_that_are_not_plain_arrays_are_never_repeated(bert_feeds: Any, bert: Path, tmp_path: Path) -> None:
    with xrt.InferenceSession(str(bert)) as sess:
        mapped = {}
        for name, value in bert_feeds().items():
            mapped[name] = np.memmap(tmp_path / name, dtype=value.dtype, mode="w+", shape=value.shape)
            mapped[name][:] = value
        for _ in range(3):
            np.testing.assert_allclose(sess.run(mapped)["pooled"], sess.engine.run_impl(
                bert_feeds(), sess.engine._output_list, None)[1], rtol=1e-5, atol=1e-5)
        assert sess.engine._repeat is None


def test_a_profile_collects_every_run_through_the_full_path(bert_feeds: Any, bert: Path) -> None:
    with xrt.InferenceSession(str(bert)) as sess:
        for seed in range(3):
            sess.run(bert_feeds(seed))
        with profile() as prof:
            sess.run(bert_feeds(4))
        assert [s["name"] for s in prof.spans] == ["run"]
        assert prof.reports and prof.reports[0].engine == "onnxruntime"  # the full path's replay, profiled


def test_a_closed_session_refuses_runs_it_had_repeated(bert_feeds: Any, bert: Path) -> None:
    sess = xrt.InferenceSession(str(bert))
    for seed in range(3):
        sess.run(bert_feeds(seed))
    sess.close()
    with pytest.raises(xrt.XpuRuntimeError, match="closed"):
        sess.run(bert_feeds(0))


def test_a_repeat_taken_before_close_raises_after_it(bert_feeds: Any, bert: Path) -> None:
    """A thread that read the repeat just before another thread closed the session: its call raises the closed
    error instead of running on what close() released."""
    sess = xrt.InferenceSession(str(bert))
    for seed in range(3):
        sess.run(bert_feeds(seed))
    taken = sess.engine._repeat
    assert taken is not None
    sess.close()
    with pytest.raises(xrt.XpuRuntimeError, match="closed"):
        taken(bert_feeds(0))


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_a_run_ending_after_close_installs_no_repeat(engine: str, bert_feeds: Any, bert: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """close() in another thread while a run is in the engine: the run ends afterwards and would make the repeat
    (its second sighting of the configuration); the closed session keeps none and later runs raise."""
    if engine == "openvino":
        pytest.importorskip("openvino")
    sess = xrt.InferenceSession(str(bert), engine=engine)
    eng = sess.engine
    sess.run(bert_feeds(0))  # the first sighting
    real = eng.run_impl

    def closing(*args: Any) -> Any:
        out = real(*args)
        eng._closed = True  # what close() sets first, as another thread's close() lands here
        return out
    monkeypatch.setattr(eng, "run_impl", closing)
    sess.run(bert_feeds(1))
    assert eng._repeat is None and not eng._repeats
    monkeypatch.setattr(eng, "run_impl", real)
    sess.close()
    with pytest.raises(xrt.XpuRuntimeError, match="closed"):
        sess.run(bert_feeds(2))


def test_an_engine_failure_in_a_repeated_run_is_an_xpuruntime_error(bert_feeds: Any, bert: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    with xrt.InferenceSession(str(bert)) as sess:
        def broken(_given: Any) -> Any:
            raise RuntimeError("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : bad input")
        monkeypatch.setattr(sess.engine, "prepare_impl", lambda *_a: broken)
        sess.run(bert_feeds(0))
        sess.run(bert_feeds(1))
        spans = len(sess.report.spans)
        with pytest.raises(xrt.InputError, match="ONNX Runtime refused the inputs"):
            sess.run(bert_feeds(2))
        assert len(sess.report.spans) == spans + 1  # the failed run's span is kept, as the full path keeps it


@pytest.mark.parametrize("policy", [{}, {"precision": "bf16"}])
def test_torch_runs_of_a_transformers_bert_repeat_too(policy: dict[str, Any], bert_module: Any,
                                                       bert_feeds: Any) -> None:
    """transformers' BertModel through the torch engine: the repeat (the prepared numpy path) gives what the
    engine's own run gives, output by output."""
    torch = pytest.importorskip("torch")
    feeds = bert_feeds()
    options = {"example_inputs": (torch.from_numpy(feeds["input_ids"]), torch.from_numpy(feeds["attention_mask"])),
               "input_names": ["input_ids", "attention_mask"]}
    with xrt.InferenceSession(bert_module, engine="torch", exec_policy=policy or None,
                              engine_options=options) as sess:
        eng = sess.engine
        for seed in (0, 1):
            sess.run(bert_feeds(seed))
        assert eng._repeat is not None
        for seed in (2, 3, 4):
            assert eng._repeat(bert_feeds(seed)) is not MISS
            got, want = sess.run(bert_feeds(seed)), eng.run_impl(bert_feeds(seed), eng._output_list, None)
            assert list(got) == eng._output_list
            for value, expected in zip(got.values(), want):
                np.testing.assert_array_equal(value, expected)


def test_a_few_configurations_keep_their_repeats(bert_feeds: Any, bert: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Traffic moving between a few shapes: each configuration's lean call is made once, then kept (at most four)."""
    with xrt.InferenceSession(str(bert)) as sess:
        eng, made = sess.engine, []
        prepare_impl = eng.prepare_impl
        monkeypatch.setattr(eng, "prepare_impl", lambda *a: made.append(a[0]["input_ids"].shape) or prepare_impl(*a))
        shapes = [(1, 8), (2, 16), (1, 8), (2, 16), (1, 8)]
        for batch, seq in shapes:
            for seed in range(3):
                feeds = bert_feeds(seed, batch, seq)
                np.testing.assert_allclose(sess.run(feeds)["pooled"], eng.run_impl(feeds, eng._output_list, None)[1],
                                           rtol=1e-5, atol=1e-5)
        assert made == [(1, 8), (2, 16)]
        for seq in (4, 5, 6, 7):
            for seed in range(2):
                sess.run(bert_feeds(seed, 1, seq))
        assert [key[0][0][1] for key in eng._repeats] == [(1, 4), (1, 5), (1, 6), (1, 7)]  # the oldest dropped


def test_with_an_nvtx_tool_attached_every_run_takes_the_paths_that_open_its_range(
        bert: Path, bert_feeds: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under Nsight (an NVTX tool injected) each run opens its range: session.run builds no repeat, and a prepared
    run keeps the general call, which records a span per call."""
    from xpuruntime.runtime import profiler as _profiler

    monkeypatch.setattr(_profiler, "_ATTACHED", True)  # what nvtx_attached() reads (ranges are no-ops without nvtx)
    with xrt.InferenceSession(str(bert)) as sess:
        for seed in range(3):
            sess.run(bert_feeds(seed))
        assert sess.engine._repeat is None
        run = sess.prepare(bert_feeds(0))
        assert type(run) is xrt.PreparedRun  # not the written-out subclass
        spans = len(sess.report.spans)
        np.testing.assert_allclose(run(bert_feeds(4))["pooled"], sess.engine.run_impl(
            bert_feeds(4), sess.engine._output_list, None)[1], rtol=1e-5, atol=1e-5)
        assert len(sess.report.spans) == spans + 1


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_threads_running_more_configurations_than_are_kept_get_their_own_results(engine: str) -> None:
    """Four threads, six batch sizes (more than the four repeats kept), one session: repeats are made, kept and
    dropped by several threads at once; every result is that thread's own, and nothing escapes as a raw error."""
    import threading

    from xpuruntime.inference.samples import matmul_relu

    if engine == "openvino":
        pytest.importorskip("openvino")
    model = matmul_relu(k=32, n=16)
    weight = next(np.asarray(onnx_numpy(t)) for t in model.graph.initializer)
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((m, 32)).astype(np.float32) for m in range(1, 7)]
    errors: list[str] = []
    with xrt.InferenceSession(model, engine=engine) as sess:
        def loop(offset: int) -> None:
            for i in range(120):
                x = batches[(i // 3 + offset) % len(batches)]  # each size three times in a row: repeats are made
                try:
                    got = sess.run({"x": x})["y"]
                    np.testing.assert_allclose(got, np.maximum(x @ weight, 0), rtol=1e-4, atol=1e-4)
                except Exception as exc:  # noqa: BLE001 - collected, the assertion below names them
                    errors.append(f"{type(exc).__name__}: {exc}")
        threads = [threading.Thread(target=loop, args=(t,)) for t in range(4)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        assert len(sess.engine._repeats) <= 4
    assert errors == []


def onnx_numpy(tensor: Any) -> Any:
    from onnx import numpy_helper

    return numpy_helper.to_array(tensor)


def _strings_model() -> Any:
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Identity", ["s"], ["t"])], "g",
                          [helper.make_tensor_value_info("s", TensorProto.STRING, [3])],
                          [helper.make_tensor_value_info("t", TensorProto.STRING, [3])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model


def test_string_inputs_keep_the_element_check_in_repeats_and_prepared_runs() -> None:
    """A string input's every element is checked (str or bytes) by the full path; neither the repeat nor a prepared
    run's written-out test may skip that for an object array of the same shape."""
    sess = xrt.InferenceSession(_strings_model())
    good, bad = np.array(["a", "b", "c"], dtype=object), np.array([1, None, 2.5], dtype=object)
    for _ in range(3):
        assert list(sess.run({"s": good})["t"]) == ["a", "b", "c"]
    assert sess.engine._repeat is None
    run = sess.prepare({"s": good})
    assert list(run({"s": good})["t"]) == ["a", "b", "c"]
    for call in (sess.run, run):
        with pytest.raises(xrt.InputError, match="string input"):
            call({"s": bad})


def test_keys_that_are_not_plain_str_run_and_poison_no_other_session() -> None:
    """Feed keys of a ``str`` subclass (StrEnum) or ``np.str_`` (names kept in a numpy array) work on every run and
    prepared call; they are never written into generated source, so a later session fed plain names of the same
    configuration still gets its repeat."""
    import enum

    from xpuruntime.inference.samples import add_mul

    class In(enum.StrEnum):
        A = "a"
        B = "b"

    a = np.ones((2, 4), np.float32)
    keyed = [{In.A: a, In.B: a}, dict(zip(np.array(["a", "b"]), [a, a]))]
    for feeds in keyed:
        sess = xrt.InferenceSession(add_mul(rows=2, cols=4))
        for _ in range(3):
            np.testing.assert_array_equal(sess.run(feeds)["y"], a + a)
        np.testing.assert_array_equal(sess.prepare(feeds)(feeds)["z"], a * a)
    plain = xrt.InferenceSession(add_mul(rows=2, cols=4))
    for _ in range(3):
        np.testing.assert_array_equal(plain.run({"a": a, "b": a})["y"], a + a)
    assert plain.engine._repeat is not None and plain.engine._repeat({"a": a, "b": a}) is not MISS


def test_equal_dtypes_that_are_other_objects_each_get_their_repeat() -> None:
    """``np.longlong`` and ``np.int64`` are equal dtypes but distinct objects on Linux: a written-out test cached
    for one must not serve (and miss forever on) the other."""
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Identity", ["i"], ["j"])], "g",
                          [helper.make_tensor_value_info("i", TensorProto.INT64, [2])],
                          [helper.make_tensor_value_info("j", TensorProto.INT64, [2])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    for dtype in (np.longlong, np.int64):
        sess = xrt.InferenceSession(model)
        feeds = {"i": np.array([1, 2], dtype)}
        sess.run(feeds)
        sess.run(feeds)
        assert sess.engine._repeat is not None and sess.engine._repeat(feeds) is not MISS


def test_a_repeat_dropped_for_newer_configurations_raises_after_close() -> None:
    """Only the last four configurations' repeats are kept; one dropped while a thread still held it (read from the
    session just before) raises the closed error after close() like the kept ones."""
    from xpuruntime.inference.samples import add_mul

    sess = xrt.InferenceSession(add_mul(rows="n", cols=4))

    def feeds(n: int) -> dict[str, np.ndarray]:
        return {"a": np.ones((n, 4), np.float32), "b": np.ones((n, 4), np.float32)}
    sess.run(feeds(1))
    sess.run(feeds(1))
    held = sess.engine._repeat
    for n in (2, 3, 4, 5):
        sess.run(feeds(n))
        sess.run(feeds(n))
    assert held not in sess.engine._repeats.values()
    sess.close()
    with pytest.raises(xrt.XpuRuntimeError, match="closed"):
        held(feeds(1))


def test_close_lets_go_of_the_onnxruntime_session(bert_feeds: Any, bert: Path) -> None:
    """close() releases ONNX Runtime's session (its weights and arena) once no call holds it: the engine's cached
    C-method lookups and the repeats held it after close() before."""
    import gc
    import weakref

    sess = xrt.InferenceSession(str(bert))
    for seed in range(3):
        sess.run(bert_feeds(seed))
    native = weakref.ref(sess.engine._native or sess.engine.session)  # the C-extension session, where reachable
    sess.close()
    gc.collect()
    assert native() is None
