"""``session.prepare`` (issue 13): one configuration checked once, then the engine's own call. Real engines (ONNX
Runtime, OpenVINO, torch) on a real BERT (transformers config, random weights) exported to ONNX and on small modules;
results equal ``session.run``'s, every feed that does not fit is refused with an XpuRuntimeError, and a bench can
time the prepared call beside ``run``. The CUDA paths (IO binding, CUDA graphs) run in ``tests/gpu``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

import xpuruntime as xrt
from xpuruntime.cli import app
from xpuruntime.inference.samples import add_mul, matmul_relu, tiny_transformer
from xpuruntime.runtime.profiler import profile

pytest.importorskip("onnxruntime")


def _feeds(seed: int = 0, batch: int = 2, seq: int = 16) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"input_ids": rng.integers(0, 100, (batch, seq)).astype(np.int64),
            "attention_mask": np.ones((batch, seq), np.int64)}


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_a_prepared_run_gives_what_run_gives_on_a_real_bert(bert: Path, engine: str) -> None:
    if engine == "openvino":
        pytest.importorskip("openvino")
    with xrt.InferenceSession(str(bert), engine=engine) as sess:
        first = _feeds(0)
        run = sess.prepare(first)
        assert isinstance(run, xrt.PreparedRun) and run.output_names == ["hidden", "pooled"]
        for seed in (0, 1, 2):
            feeds = _feeds(seed)
            got, want = run(feeds), sess.run(feeds)
            assert list(got) == ["hidden", "pooled"]
            for name in want:
                np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-5)
        first["input_ids"][:] = 7  # run() runs the prepared arrays as they are now
        np.testing.assert_allclose(run()["hidden"], sess.run(first)["hidden"], rtol=1e-5, atol=1e-5)
        np.copyto(run.inputs["input_ids"], _feeds(4)["input_ids"])  # the leanest loop: refill in place, run()
        assert run.inputs["input_ids"] is first["input_ids"]
        np.testing.assert_allclose(run()["pooled"], sess.run(_feeds(4))["pooled"], rtol=1e-5, atol=1e-5)


def test_feeds_that_do_not_fit_are_refused_with_the_prepared_shape(bert: Path) -> None:
    with xrt.InferenceSession(str(bert)) as sess:
        run = sess.prepare(_feeds(batch=2, seq=16))
        with pytest.raises(xrt.InputError, match="does not fit this prepared run") as err:
            run(_feeds(batch=1, seq=16))
        assert "int64[2, 16]" in str(err.value) and "prepare" in str(err.value)
        with pytest.raises(xrt.InputError, match="dtype"):  # the session's own check names the problem
            run({**_feeds(), "input_ids": _feeds()["input_ids"].astype(np.float32)})
        with pytest.raises(xrt.InputError, match="unknown input"):
            run({**_feeds(), "bogus": np.zeros(1)})
        with pytest.raises(xrt.InputError, match="missing input"):
            run({"input_ids": _feeds()["input_ids"]})
        # a feed the session accepts after converting it (not C-contiguous) takes the full check, then runs
        feeds = _feeds(3)
        strided = {k: np.asfortranarray(v) for k, v in feeds.items()}
        np.testing.assert_allclose(run(strided)["pooled"], sess.run(feeds)["pooled"], rtol=1e-5, atol=1e-5)


def test_list_feeds_output_names_and_caller_buffers(bert: Path) -> None:
    with xrt.InferenceSession(str(bert)) as sess:
        feeds = _feeds()
        listed = sess.prepare([feeds["input_ids"], feeds["attention_mask"]], ["pooled"])
        out = listed()
        assert isinstance(out, list) and len(out) == 1
        np.testing.assert_allclose(out[0], sess.run(feeds)["pooled"], rtol=1e-5, atol=1e-5)
        buffer = np.empty((2, 64), np.float32)
        into = sess.prepare(feeds, ["pooled"], outputs={"pooled": buffer})
        result = into(_feeds(5))
        assert result["pooled"] is buffer
        np.testing.assert_allclose(buffer, sess.run(_feeds(5))["pooled"], rtol=1e-5, atol=1e-5)
        with pytest.raises(xrt.InputError, match="unknown output"):
            sess.prepare(feeds, ["nope"])


def test_a_closed_session_refuses_its_prepared_runs() -> None:
    sess = xrt.InferenceSession(matmul_relu(k=8, n=4))
    run = sess.prepare({"x": np.ones((2, 8), np.float32)})
    sess.close()
    with pytest.raises(xrt.XpuRuntimeError, match="closed"):
        run()


def test_an_engine_failure_in_a_prepared_run_is_an_xpuruntime_error(monkeypatch: pytest.MonkeyPatch) -> None:
    sess = xrt.InferenceSession(matmul_relu(k=8, n=4))
    run = sess.prepare({"x": np.ones((2, 8), np.float32)})

    def broken(_given: Any) -> Any:
        raise RuntimeError("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : bad input")
    monkeypatch.setattr(run, "_call", broken)
    with pytest.raises(xrt.InputError, match="ONNX Runtime refused the inputs"):
        run()


def test_prepared_calls_are_traced_while_a_profile_collects(bert: Path) -> None:
    with xrt.InferenceSession(str(bert)) as sess:
        run = sess.prepare(_feeds())
        before = len(sess.report.spans)
        run()
        assert len(sess.report.spans) == before  # no span per call when nothing collects them
        with profile() as prof:
            run(_feeds(1))
        assert [s["name"] for s in prof.spans] == ["run"] and prof.spans[0]["args"]["prepared"] is True
        assert prof.reports and prof.reports[0].engine == "onnxruntime"  # the profiled replay of the prepared run


# -- torch ------------------------------------------------------------------------------------------------------
def _torch_session(**policy: Any) -> Any:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.LayerNorm(32), torch.nn.GELU(),
                                 torch.nn.Linear(32, 8))
    x = torch.randn(4, 16)
    return xrt.InferenceSession(module, engine="torch", exec_policy=policy or None,
                                engine_options={"example_inputs": (x,)}), module, x


@pytest.mark.parametrize("policy", [{}, {"precision": "bf16"}, {"precision": "fp32"}])
def test_torch_numpy_prepared_runs_match_run(policy: dict[str, Any]) -> None:
    sess, _module, x = _torch_session(**policy)
    name, out = sess.input_info[0].name, sess.output_info[0].name
    run = sess.prepare({name: x.numpy()})
    for seed in range(3):
        feed = np.random.default_rng(seed).standard_normal((4, 16)).astype(np.float32)
        np.testing.assert_array_equal(run({name: feed})[out], sess.run({name: feed})[out])
    with pytest.raises(xrt.InputError, match="size 5 on axis 0"):  # the module's static shape: the session's check
        run({name: np.zeros((5, 16), np.float32)})


def test_torch_tensors_into_caller_buffers_stay_the_prepared_tensors() -> None:
    torch = pytest.importorskip("torch")
    sess, module, x = _torch_session()
    name, out_name = sess.input_info[0].name, sess.output_info[0].name
    feed, out = x.clone(), torch.empty(4, 8)
    run = sess.prepare({name: feed}, outputs={out_name: out})
    feed.copy_(torch.randn(4, 16))  # refilled in place: the next call sees it
    assert run()[out_name] is out
    with torch.no_grad():
        torch.testing.assert_close(out, module(feed))
    assert run({name: feed})[out_name] is out
    with pytest.raises(xrt.InputError, match="not the device tensor this run was prepared with"):
        run({name: feed.clone()})
    feed.resize_(64, 16)  # resized in place: torch takes the tensor itself and refuses the new shape
    with pytest.raises(xrt.XpuRuntimeError, match="torch failed during the run"):
        run()


def test_bench_times_run_and_prepared_rows_in_the_same_rounds(tmp_path: Path) -> None:
    path = tmp_path / "tiny.onnx"
    onnx.save(tiny_transformer(), str(path))
    result = xrt.bench(str(path), dims={"seq": 8}, warmup=1, repeat=5, baseline="both", call="both")
    rows = {r.label: r for r in result.rows}
    assert list(rows) == ["onnxruntime:default", "onnxruntime:default (prepared)", "bare onnxruntime:default",
                          "same-instance onnxruntime:default"]
    prepared = rows["onnxruntime:default (prepared)"]
    assert prepared.call == "prepared" and rows["onnxruntime:default"].call == "run"
    assert prepared.p50_ms and prepared.overhead and prepared.overhead_same
    assert rows["onnxruntime:default"].overhead and rows["onnxruntime:default"].overhead_same
    only = xrt.bench(str(path), dims={"seq": 8}, warmup=0, repeat=2, call="prepared")
    assert [(r.label, r.call) for r in only.rows] == [("onnxruntime:default", "prepared")]
    with pytest.raises(xrt.InputError, match="'run', 'prepared' or 'both'"):
        xrt.bench(str(path), dims={"seq": 8}, repeat=1, call="fast")
    cli = CliRunner().invoke(app, ["bench", str(path), "--dim", "seq=8", "--warmup", "0", "--repeat", "2",
                                   "--call", "both", "--json"])
    assert cli.exit_code == 0, cli.output
    assert [r["call"] for r in json.loads(cli.stdout)["rows"]] == ["run", "prepared"]


def test_a_prepared_row_of_a_candidate_that_failed_is_not_run(tmp_path: Path) -> None:
    path = tmp_path / "tiny.onnx"
    onnx.save(tiny_transformer(), str(path))
    result = xrt.bench(str(path), engines=["onnxruntime"], feeds={"x": np.ones((1, 8, 63), np.float32)}, warmup=0,
                       repeat=1, call="both")
    assert all(r.error for r in result.rows)
    assert result.rows[1].error.startswith("not run: onnxruntime:default failed")


def test_the_prepared_cuda_graph_call_is_the_graph_bindings_replay_written_out(bert: Path) -> None:
    """ONNX Runtime's CUDA-graph path on the CPU provider (a GraphBinding over CPU OrtValues, as
    test_ort_graph_binding does): the prepared call copies the new feeds into the bound inputs, runs the binding and
    returns copies, as GraphBinding.run does."""
    import onnxruntime as ort

    from xpuruntime.inference.engines import _onnxruntime as tr

    with xrt.InferenceSession(str(bert)) as sess, xrt.InferenceSession(str(bert)) as plain:
        eng = sess.engine
        eng._graphs, eng._graph = True, tr.GraphBinding(ort, eng.session, 0, device="cpu")
        run = sess.prepare(_feeds(0))
        results = []
        for seed in (1, 2, 3):
            got = run(_feeds(seed))
            results.append(got)
            np.testing.assert_allclose(got["hidden"], plain.run(_feeds(seed))["hidden"], rtol=1e-5, atol=1e-5)
        assert not np.allclose(results[0]["hidden"], results[1]["hidden"])  # each result its own copy
        assert run._call.__name__ == "graph_call"  # the written-out replay, not GraphBinding.run


def test_strided_numpy_feeds_run_as_run_runs_them(bert: Path) -> None:
    """ONNX Runtime copies strided arrays itself (no contiguity check per prepared call); torch's prepared calls
    take the full check for them (torch.from_numpy refuses negative strides)."""
    with xrt.InferenceSession(str(bert)) as sess:
        run = sess.prepare(_feeds())
        flipped = {k: np.ascontiguousarray(v[:, ::-1])[:, ::-1] for k, v in _feeds(2).items()}  # negative strides
        assert not flipped["input_ids"].flags.c_contiguous
        np.testing.assert_allclose(run(flipped)["hidden"], sess.run(_feeds(2))["hidden"], rtol=1e-5, atol=1e-5)
    sess, _module, x = _torch_session()
    name, out = sess.input_info[0].name, sess.output_info[0].name
    run = sess.prepare({name: x.numpy()})
    feed = np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32)
    reversed_ = np.ascontiguousarray(feed[::-1])[::-1]
    np.testing.assert_array_equal(run({name: reversed_})[out], sess.run({name: feed})[out])


@pytest.mark.parametrize("policy", [{}, {"precision": "bf16"}])
def test_a_transformers_model_on_torch_prepared_picks_its_outputs_by_attribute(policy: dict[str, Any],
                                                                              bert_module: Any) -> None:
    """transformers' BertModel through the torch engine: the prepared numpy path reads ModelOutput fields as
    attributes (its __getitem__ rebuilds a dict per call) and gives what run gives."""
    torch = pytest.importorskip("torch")
    from xpuruntime.inference.engines.torch import _Picker

    model = bert_module
    feeds = _feeds()
    example = (torch.from_numpy(feeds["input_ids"]), torch.from_numpy(feeds["attention_mask"]))
    with xrt.InferenceSession(model, engine="torch", exec_policy=policy or None,
                              engine_options={"example_inputs": example,
                                              "input_names": ["input_ids", "attention_mask"]}) as sess:
        run = sess.prepare(feeds)
        for seed in (1, 2):
            got, want = run(_feeds(seed)), sess.run(_feeds(seed))
            assert list(got) == list(want) == sess.engine._output_list
            for name in want:
                np.testing.assert_array_equal(got[name], want[name])
    pick = _Picker(["last_hidden_state", "pooler_output"])
    with torch.inference_mode():
        out = model(*example)
    tensors = pick(out)
    assert tensors[0] is out.last_hidden_state and tensors[1] is out.pooler_output
    assert pick.by_type[type(out)].__qualname__.endswith("<lambda>")  # attribute reads, not the flattening fallback
    assert _Picker([0])(out.last_hidden_state)[0] is out.last_hidden_state
    assert [t.shape for t in _Picker([1, 0])((out.pooler_output, (out.last_hidden_state,)))] == \
        [out.last_hidden_state.shape, out.pooler_output.shape]


def _sum_product() -> Any:
    """a, b -> s = a + b, p = a * b, float32 [n, 4]."""
    return add_mul("n", 4, outputs=("s", "p"))


def _ab(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"a": rng.standard_normal((2, 4)).astype(np.float32), "b": rng.standard_normal((2, 4)).astype(np.float32)}


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_caller_buffers_for_some_outputs_and_in_another_order_give_what_run_gives(engine: str) -> None:
    if engine == "openvino":
        pytest.importorskip("openvino")
    with xrt.InferenceSession(_sum_product(), engine=engine) as sess:
        buffer = np.empty((2, 4), np.float32)
        run = sess.prepare(_ab(), outputs={"s": buffer})  # one buffer, both outputs requested
        got, want = run(_ab(1)), sess.run(_ab(1))
        assert list(got) == ["s", "p"] and got["s"] is buffer
        np.testing.assert_allclose(got["p"], want["p"])
        bp, bs = np.empty((2, 4), np.float32), np.empty((2, 4), np.float32)
        listed = sess.prepare([_ab()["a"], _ab()["b"]], outputs={"p": bp, "s": bs})  # buffers named in another order
        out = listed()
        assert out[0] is bs and out[1] is bp  # the model's output order, as run() gives it
        assert isinstance(listed(_ab(2)), dict)  # the form follows the call's feeds, as run()'s does


def test_an_array_refilled_in_place_is_seen_even_when_prepare_had_to_convert_it() -> None:
    sess, _module, x = _torch_session()
    name, out = sess.input_info[0].name, sess.output_info[0].name
    feed = np.asfortranarray(x.numpy())  # not C-contiguous: the torch engine converts it
    run = sess.prepare({name: feed})
    assert run.inputs[name] is feed
    new = np.random.default_rng(5).standard_normal((4, 16)).astype(np.float32)
    feed[...] = new
    np.testing.assert_array_equal(run()[out], sess.run({name: new})[out])
    with xrt.InferenceSession(_sum_product()) as ort_sess:  # ONNX Runtime takes the strided array itself
        fortran = {k: np.asfortranarray(v) for k, v in _ab().items()}
        ort_run = ort_sess.prepare(fortran)
        fortran["a"][...] = 3.0
        np.testing.assert_allclose(ort_run()["s"], ort_sess.run({"a": np.full((2, 4), 3.0, np.float32),
                                                                  "b": _ab()["b"]})["s"])


def test_torch_models_returning_int_keyed_dicts_and_a_bare_tensor_feed() -> None:
    torch = pytest.importorskip("torch")

    class IntKeys(torch.nn.Module):
        def forward(self, a: Any, b: Any) -> Any:
            return {0: a + b, 1: a * b}

    ab = _ab()
    with xrt.InferenceSession(IntKeys(), engine="torch", engine_options={
            "example_inputs": (torch.from_numpy(ab["a"]), torch.from_numpy(ab["b"])), "input_names": ["a", "b"]}) as s:
        run = s.prepare(ab)
        got, want = run(_ab(1)), s.run(_ab(1))
        assert list(got) == list(want) == ["0", "1"]
        np.testing.assert_array_equal(got["1"], want["1"])
    sess, module, x = _torch_session()
    run = sess.prepare(x)  # one input, fed as a bare tensor
    assert isinstance(run(x), list) and isinstance(run([x]), list)
    with torch.no_grad():
        torch.testing.assert_close(run(x)[0], module(x))  # tensors in, tensors out, as run() gives


def test_an_ndarray_subclass_given_to_prepare_is_a_host_feed(tmp_path: Path) -> None:
    ab = _ab()
    mapped = np.memmap(tmp_path / "a.bin", dtype=np.float32, mode="w+", shape=(2, 4))
    mapped[:] = ab["a"]
    with xrt.InferenceSession(_sum_product()) as sess:
        run = sess.prepare({"a": mapped, "b": ab["b"]})
        assert "bound tensor" not in repr(run)
        np.testing.assert_allclose(run(_ab(3))["p"], sess.run(_ab(3))["p"])


# -- the call written out per configuration -----------------------------------------------------------------------
def test_the_call_written_out_gives_what_the_general_call_gives_and_hands_it_the_rest(bert: Path) -> None:
    general = xrt.PreparedRun.__call__  # the class the session documents; each run's own class only adds its call
    with xrt.InferenceSession(str(bert)) as sess:
        run, again = sess.prepare(_feeds()), sess.prepare(_feeds(1))
        assert isinstance(run, xrt.PreparedRun) and type(run) is not xrt.PreparedRun
        assert type(run).__name__ == "PreparedRun" and type(run) is type(again)  # one class per configuration
        for feeds in (_feeds(2), None):
            got, want = run(feeds), general(run, feeds)
            assert list(got) == list(want) == ["hidden", "pooled"]
            for name in want:
                np.testing.assert_array_equal(got[name], want[name])
        # what the written-out tests let through goes to the general call: each of these still runs or is refused
        feeds = _feeds(3)
        strided = {k: np.asfortranarray(v) for k, v in feeds.items()}  # not C order: converted there
        np.testing.assert_allclose(run(strided)["pooled"], sess.run(feeds)["pooled"], rtol=1e-5, atol=1e-5)

        class Feeds(dict):  # type: ignore[type-arg]
            pass
        np.testing.assert_allclose(run(Feeds(feeds))["pooled"], sess.run(feeds)["pooled"], rtol=1e-5, atol=1e-5)
        with pytest.raises(xrt.InputError, match="does not fit this prepared run"):
            run({"input_ids": feeds["input_ids"][:1], "attention_mask": feeds["attention_mask"][:1]})
        with pytest.raises(xrt.InputError, match="unknown input"):
            run({"input_ids": feeds["input_ids"], "bogus": feeds["attention_mask"]})


def test_input_and_output_names_of_any_spelling_enter_the_written_out_call_as_data() -> None:
    from onnx import TensorProto, helper

    names = ["x'\"\\n", "a\nb", "{0} __import__('os')", "π"]
    outs = [f"out {name}" for name in names]
    graph = helper.make_graph(
        [helper.make_node("Identity", [n], [o]) for n, o in zip(names, outs)], "names",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in names],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, [2]) for o in outs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    feeds = {n: np.full(2, i, np.float32) for i, n in enumerate(names)}
    with xrt.InferenceSession(model) as sess:
        run = sess.prepare(feeds)
        got = run({n: v + 1 for n, v in feeds.items()})
        assert list(got) == outs
        for i, o in enumerate(outs):
            np.testing.assert_array_equal(got[o], np.full(2, i + 1, np.float32))
        listed = sess.prepare(list(feeds.values()))
        assert isinstance(listed(), list) and len(listed()) == 4
