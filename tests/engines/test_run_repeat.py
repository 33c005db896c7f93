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


@pytest.fixture(scope="module")
def bert(bert_onnx: Any) -> Path:
    return bert_onnx(True)


def _feeds(seed: int = 0, batch: int = 2, seq: int = 16) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"input_ids": rng.integers(0, 100, (batch, seq)).astype(np.int64),
            "attention_mask": np.ones((batch, seq), np.int64)}


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_run_repeats_a_configuration_seen_twice_and_gives_what_the_engine_gives(bert: Path, engine: str) -> None:
    if engine == "openvino":
        pytest.importorskip("openvino")
    bare = ort.InferenceSession(str(bert), providers=["CPUExecutionProvider"])
    with xrt.InferenceSession(str(bert), engine=engine) as sess:
        eng = sess.engine
        sess.run(_feeds(0))
        assert eng._repeat is None  # once is not a loop
        sess.run(_feeds(1))
        assert eng._repeat is not None
        spans = len(sess.report.spans)
        for seed in (2, 3, 4):
            assert eng._repeat(_feeds(seed)) is not MISS  # the repeat takes it
            got = sess.run(_feeds(seed))
            want = dict(zip(["hidden", "pooled"], bare.run(None, _feeds(seed))))
            assert list(got) == ["hidden", "pooled"]
            for name in want:
                np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-4)
        assert len(sess.report.spans) == spans + 6 and sess.report.spans[-1]["name"] == "run"  # a span per run
        # another shape takes the full path and gives its own results; two in a row repeat that one instead
        other = _feeds(5, batch=1, seq=8)
        assert eng._repeat(other) is MISS
        np.testing.assert_allclose(sess.run(other)["pooled"], bare.run(None, other)[1], rtol=1e-4, atol=1e-4)
        sess.run(other)
        assert eng._repeat(other) is not MISS and eng._repeat(_feeds(6)) is MISS


def test_feeds_that_do_not_fit_get_the_full_paths_errors_with_a_repeat_in_place(bert: Path) -> None:
    with xrt.InferenceSession(str(bert)) as sess:
        sess.run(_feeds(0))
        sess.run(_feeds(1))
        assert sess.engine._repeat is not None
        feeds = _feeds(2)
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


def test_feeds_that_are_not_plain_arrays_are_never_repeated(bert: Path, tmp_path: Path) -> None:
    with xrt.InferenceSession(str(bert)) as sess:
        mapped = {}
        for name, value in _feeds().items():
            mapped[name] = np.memmap(tmp_path / name, dtype=value.dtype, mode="w+", shape=value.shape)
            mapped[name][:] = value
        for _ in range(3):
            np.testing.assert_allclose(sess.run(mapped)["pooled"], sess.engine.run_impl(
                _feeds(), sess.engine._output_list, None)[1], rtol=1e-5, atol=1e-5)
        assert sess.engine._repeat is None


def test_a_profile_collects_every_run_through_the_full_path(bert: Path) -> None:
    with xrt.InferenceSession(str(bert)) as sess:
        for seed in range(3):
            sess.run(_feeds(seed))
        with profile() as prof:
            sess.run(_feeds(4))
        assert [s["name"] for s in prof.spans] == ["run"]
        assert prof.reports and prof.reports[0].engine == "onnxruntime"  # the full path's replay, profiled


def test_a_closed_session_refuses_runs_it_had_repeated(bert: Path) -> None:
    sess = xrt.InferenceSession(str(bert))
    for seed in range(3):
        sess.run(_feeds(seed))
    sess.close()
    with pytest.raises(xrt.XpuRuntimeError, match="closed"):
        sess.run(_feeds(0))


def test_an_engine_failure_in_a_repeated_run_is_an_xpuruntime_error(bert: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    with xrt.InferenceSession(str(bert)) as sess:
        def broken(_given: Any) -> Any:
            raise RuntimeError("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : bad input")
        monkeypatch.setattr(sess.engine, "prepare_impl", lambda *_a: broken)
        sess.run(_feeds(0))
        sess.run(_feeds(1))
        spans = len(sess.report.spans)
        with pytest.raises(xrt.InputError, match="ONNX Runtime refused the inputs"):
            sess.run(_feeds(2))
        assert len(sess.report.spans) == spans + 1  # the failed run's span is kept, as the full path keeps it


@pytest.mark.parametrize("policy", [{}, {"precision": "bf16"}])
def test_torch_runs_repeat_too(policy: dict[str, Any]) -> None:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.LayerNorm(32), torch.nn.GELU(),
                                 torch.nn.Linear(32, 8))
    x = torch.randn(4, 16)
    with xrt.InferenceSession(module, engine="torch", exec_policy=policy or None,
                              engine_options={"example_inputs": (x,)}) as sess, \
            xrt.InferenceSession(module, engine="torch", exec_policy=policy or None,
                                 engine_options={"example_inputs": (x,)}) as plain:
        name = sess.input_info[0].name
        rng = np.random.default_rng(0)
        feeds = [{name: rng.standard_normal((4, 16)).astype(np.float32)} for _ in range(5)]
        for f in feeds[:2]:
            sess.run(f)
        assert sess.engine._repeat is not None
        for f in feeds[2:]:
            got, want = sess.run(f), plain.engine.run_impl(f, plain.engine._output_list, None)
            np.testing.assert_array_equal(next(iter(got.values())), want[0])
        assert sess.run({name: x.numpy()}).keys() == plain.run({name: x.numpy()}).keys()


def test_a_few_configurations_keep_their_repeats(bert: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Traffic moving between a few shapes: each configuration's lean call is made once, then kept (at most four)."""
    with xrt.InferenceSession(str(bert)) as sess:
        eng, made = sess.engine, []
        prepare_impl = eng.prepare_impl
        monkeypatch.setattr(eng, "prepare_impl", lambda *a: made.append(a[0]["input_ids"].shape) or prepare_impl(*a))
        shapes = [(1, 8), (2, 16), (1, 8), (2, 16), (1, 8)]
        for batch, seq in shapes:
            for seed in range(3):
                feeds = _feeds(seed, batch, seq)
                np.testing.assert_allclose(sess.run(feeds)["pooled"], eng.run_impl(feeds, eng._output_list, None)[1],
                                           rtol=1e-5, atol=1e-5)
        assert made == [(1, 8), (2, 16)]
        for seq in (4, 5, 6, 7):
            for seed in range(2):
                sess.run(_feeds(seed, 1, seq))
        assert [key[0][0][1] for key in eng._repeats] == [(1, 4), (1, 5), (1, 6), (1, 7)]  # the oldest dropped
