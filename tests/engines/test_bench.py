"""bench (API and CLI), the compile and fusions policy fields, fp16/bf16 weights cast once on torch, IO binding
reuse on ONNX Runtime. Real engines, small models; no timed assertions."""

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
from xpuruntime.inference.samples import tiny_transformer

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bench") / "tiny.onnx"
    onnx.save(tiny_transformer(), str(path))
    return path


@pytest.fixture(scope="module")
def bert(bert_onnx: Any) -> Path:
    """A real BERT (transformers BertModel, random weights) exported to ONNX (tests/engines/conftest.py)."""
    return bert_onnx(False)


def _bert_feeds(batch: int = 2, seq: int = 16) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"input_ids": rng.integers(0, 100, (batch, seq)).astype(np.int64),
            "attention_mask": np.ones((batch, seq), np.int64)}


# -- policy fields -----------------------------------------------------------------------------------
def test_compile_and_fusions_are_policy_fields_that_keep_old_hashes() -> None:
    ex = xrt.ExecutionPolicy(compile="reduce_overhead", fusions="BERT")
    assert (ex.compile, ex.fusions) == ("reduce-overhead", "bert")
    assert xrt.ExecutionPolicy(compile="off", fusions="off").hash == xrt.ExecutionPolicy().hash
    with pytest.raises(xrt.PolicyError, match="did you mean 'max-autotune'"):
        xrt.ExecutionPolicy(compile="max-autotun")


def test_engines_without_a_compiler_refuse_compile_by_name(tiny: Path) -> None:
    sess = xrt.InferenceSession(tiny, exec_policy={"compile": "reduce-overhead", "fallback": "allow"})
    refused = [v for v in sess.report.violations if v.subject == "compile"]
    assert refused and refused[0].kind == "option" and "torch.compile" in refused[0].reason
    with pytest.raises(xrt.PolicyViolationError, match="compile"):
        xrt.InferenceSession(tiny, exec_policy={"compile": "default", "fallback": "error"})


def test_openvino_refuses_compile_by_name(tiny: Path) -> None:
    pytest.importorskip("openvino")
    sess = xrt.InferenceSession(tiny, engine="openvino", exec_policy={"compile": "default", "fallback": "allow"})
    assert any(v.subject == "compile" and v.kind == "option" for v in sess.report.violations)


# -- ONNX Runtime transformer fusions ----------------------------------------------------------------------
def test_bert_fusions_show_fused_ops_in_the_receipt_and_keep_outputs(bert: Path) -> None:
    plain = xrt.InferenceSession(bert)
    fused = xrt.InferenceSession(bert, exec_policy={"fusions": "bert"})
    ops = {n.op_type for n in fused.report.nodes}
    assert {"SkipLayerNormalization", "BiasGelu"} <= ops
    assert not {"SkipLayerNormalization", "BiasGelu"} & {n.op_type for n in plain.report.nodes}
    assert any("SkipLayerNormalization x" in n for n in fused.report.notes)
    assert fused.report.requested["fusions"] == "bert"
    feeds = _bert_feeds()
    np.testing.assert_allclose(fused.run(feeds)["last_hidden_state"], plain.run(feeds)["last_hidden_state"],
                               atol=1e-4)


def test_fused_copy_is_cached_by_hash_and_combines_with_fp16(bert: Path, tmp_path: Path) -> None:
    policy = {"fusions": "auto", "precision": "fp16", "cache_dir": str(tmp_path)}
    first = xrt.InferenceSession(bert, exec_policy=policy)
    second = xrt.InferenceSession(bert, exec_policy=policy)
    assert not any("cached:" in n for n in first.report.notes)
    assert any("transformer fusions" in n and "cached:" in n for n in second.report.notes)
    assert "SkipLayerNormalization" in {n.op_type for n in second.report.nodes}
    out = second.run(_bert_feeds())["last_hidden_state"]
    ref = xrt.InferenceSession(bert).run(_bert_feeds())["last_hidden_state"]
    assert out.dtype == np.float32 and np.abs(out - ref).max() < 0.05


def test_auto_fusions_leave_a_model_without_attention_alone(tiny: Path) -> None:
    from xpuruntime.inference.samples import tiny_convnet

    sess = xrt.InferenceSession(tiny_convnet(), exec_policy={"fusions": "auto"})
    assert any("no attention in the graph" in n for n in sess.report.notes)


# -- IO binding reuse ------------------------------------------------------------------------------
def test_reused_io_binding_follows_new_data_and_shapes(bert: Path) -> None:
    sess = xrt.InferenceSession(bert)
    reference = {b: sess.run(_bert_feeds(b))["last_hidden_state"] for b in (2, 3)}
    for batch in (2, 2, 3, 2):
        out = np.empty((batch, 16, 64), np.float32)
        feeds = _bert_feeds(batch)
        got = sess.run(feeds, outputs={"last_hidden_state": out})["last_hidden_state"]
        np.testing.assert_allclose(got, reference[batch], atol=1e-5)
    feeds, out = _bert_feeds(2), np.empty((2, 16, 64), np.float32)
    sess.run(feeds, outputs={"last_hidden_state": out})
    feeds["input_ids"][:] = _bert_feeds(3)["input_ids"][:2]  # the same buffer, new data
    changed = sess.run(feeds, outputs={"last_hidden_state": out})["last_hidden_state"]
    np.testing.assert_allclose(changed, reference[3][:2], atol=1e-5)


# -- torch: weights cast once, compile through the policy ------------------------------------------------
def _block() -> Any:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.LayerNorm(32)).eval()


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_torch_casts_weights_once_and_keeps_norms_in_fp32(precision: str) -> None:
    torch = pytest.importorskip("torch")
    model, x = _block(), torch.randn(4, 16)
    sess = xrt.InferenceSession(model, engine="torch", exec_policy={"precision": precision},
                                engine_options={"example_inputs": (x,)})
    cast = sess.report.requested["weights_cast"]
    assert cast["dtype"] == {"bf16": "bfloat16", "fp16": "float16"}[precision] and cast["kept_float32"] == ["2"]
    assert "torch.autocast" not in sess.report.requested
    out = sess.run({"input": x.numpy()})["output"]
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, model(x).detach().numpy(), atol=0.1)
    assert next(model.parameters()).dtype == torch.float32  # the user's module is untouched


def test_torch_cast_all_mode_casts_the_norms_too_like_a_plain_half() -> None:
    torch = pytest.importorskip("torch")
    model, x = _block(), torch.randn(4, 16)
    sess = xrt.InferenceSession(model, engine="torch", exec_policy={"precision": "bf16"},
                                engine_options={"example_inputs": (x,), "precision_mode": "cast-all"})
    cast = sess.report.requested["weights_cast"]
    assert cast["kept_float32"] == [] and cast["norms"] == "cast"
    assert all(p.dtype == torch.bfloat16 for p in sess.engine.module.parameters())
    bare = _block().to(torch.bfloat16)
    with torch.inference_mode():
        want = bare(x.to(torch.bfloat16)).float().numpy()
    np.testing.assert_array_equal(sess.run({"input": x.numpy()})["output"], want)  # the same numbers as by hand


def test_torch_autocast_mode_stays_available() -> None:
    torch = pytest.importorskip("torch")
    sess = xrt.InferenceSession(_block(), engine="torch", exec_policy={"precision": "bf16"},
                                engine_options={"example_inputs": (torch.randn(4, 16),), "precision_mode": "autocast"})
    assert sess.report.requested["torch.autocast"] == "bf16" and "weights_cast" not in sess.report.requested


def test_torch_compile_comes_from_the_policy() -> None:
    torch = pytest.importorskip("torch")
    sess = xrt.InferenceSession(_block(), engine="torch", exec_policy={"compile": "max-autotune"},
                                engine_options={"example_inputs": (torch.randn(4, 16),)})
    assert sess.report.requested["compile"] == "max-autotune"
    assert any("mode='max-autotune'" in n for n in sess.report.notes)


# -- bench -----------------------------------------------------------------------------------------
def test_bench_times_policies_and_engines_interleaved_with_a_bare_baseline(tiny: Path) -> None:
    result = xrt.bench(tiny, policies=[None, ("level1", {"execution": {"optimize_level": 1}})], dims={"seq": 8},
                       warmup=1, repeat=3, baseline=True)
    labels = [r.label for r in result.rows]
    assert labels == ["onnxruntime:default", "onnxruntime:level1", "bare onnxruntime:default",
                      "bare onnxruntime:level1"]
    for row in result.rows:
        assert row.error is None and row.p50_ms > 0 and row.p99_ms >= row.p50_ms and row.first_run_ms > 0
    for r in result.rows:
        if r.kind == "xpuruntime":
            lo, hi = r.overhead_ci
            assert r.overhead > 0 and lo <= r.overhead <= hi
    assert result.fastest().kind == "xpuruntime"
    data = json.loads(json.dumps(result.to_dict()))
    assert data["settings"]["order"] == "interleaved, shuffled each round (seed 0)" and data["fastest"] in labels


def test_a_same_instance_baseline_drives_the_candidates_own_session_by_hand(tiny: Path) -> None:
    result = xrt.bench(tiny, policies=[None], dims={"seq": 8}, warmup=1, repeat=4, baseline="both")
    xrt_row, bare, same = result.rows
    assert (bare.kind, same.kind) == ("bare", "same-instance") and same.label == "same-instance onnxruntime:default"
    assert same.error is None and same.p50_ms > 0 and "own onnxruntime.InferenceSession" in same.notes[0]
    lo, hi = xrt_row.overhead_same_ci
    assert xrt_row.overhead and xrt_row.overhead_same and lo <= xrt_row.overhead_same <= hi
    assert bare.overhead_same is None and same.overhead is None  # ratios live on the xpuruntime row
    only = xrt.bench(tiny, dims={"seq": 8}, warmup=0, repeat=2, baseline="same")
    assert [r.kind for r in only.rows] == ["xpuruntime", "same-instance"] and only.rows[0].overhead is None


def test_the_same_instance_loop_runs_xpuruntimes_own_session_object(tiny: Path) -> None:
    """The hand loop's calls land on the engine's session (counted), not on a second one."""
    from xpuruntime.inference import _bare
    from xpuruntime.inference.bench import _build

    cand = _build(tiny, "onnxruntime", "x", None, "cpu", {})
    eng = cand.engine
    feeds = {i.name: np.zeros([d if isinstance(d, int) else 8 for d in i.shape], dtype=i.dtype)
             for i in eng.input_info}
    calls = []
    real = eng.session.run
    eng.session.run = lambda *a, **k: calls.append(1) or real(*a, **k)
    make, _ = _bare.same_instance(eng)
    make(feeds, "host")()
    assert calls == [1]
    eng.close()


def test_same_instance_baselines_of_torch_and_openvino(tiny: Path) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("openvino")
    result = xrt.bench(_block(), policies=[("bf16", {"execution": {"precision": "bf16"}})], warmup=1, repeat=3,
                       engine_options={"torch": {"example_inputs": (torch.randn(4, 16),)}}, baseline="same")
    assert [r.label for r in result.rows] == ["torch:bf16", "same-instance torch:bf16"]
    assert result.rows[0].overhead_same and result.rows[1].error is None
    fp32 = xrt.bench(_block(), warmup=0, repeat=2, baseline="same",
                     engine_options={"torch": {"example_inputs": (torch.randn(4, 16),)}})
    assert any("does not set" in n for n in fp32.rows[1].notes)  # the plan's switches: said, not set by the loop
    ov = xrt.bench(tiny, engines=["openvino"], dims={"seq": 8}, warmup=0, repeat=2, baseline="same")
    assert ov.rows[1].error is None and ov.rows[0].overhead_same


def test_a_twin_failing_with_any_error_is_reported_in_its_row_and_the_bench_goes_on(tiny: Path, monkeypatch) -> None:
    """An engine's own error type (ONNX Runtime's InvalidArgument is no RuntimeError; torch raises IndexError) in a
    twin lands in that twin's row, as the candidate's own error does; twins of a failed candidate are not run."""
    from xpuruntime.inference import _bare

    def failing(eng):
        def make(feeds, io):
            def call():
                raise IndexError("index 9 is out of bounds")
            return call
        return make, ["fails on purpose"]

    monkeypatch.setattr(_bare, "same_instance", failing)
    ok = xrt.bench(tiny, dims={"seq": 8}, warmup=1, repeat=3, baseline="both")
    rows = {r.kind: r for r in ok.rows}
    assert "IndexError" in rows["same-instance"].error and rows["same-instance"].p50_ms is None
    assert rows["xpuruntime"].p50_ms and rows["bare"].p50_ms and rows["xpuruntime"].overhead
    monkeypatch.undo()
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Embedding(4, 3)).eval()
    ids = torch.zeros(2, 5, dtype=torch.int64)
    result = xrt.bench(model, feeds={"input": np.full((2, 5), 9, np.int64)}, warmup=0, repeat=2, baseline="both",
                       engine_options={"torch": {"example_inputs": (ids,), "input_names": ["input"]}})
    rows = {r.kind: r for r in result.rows}
    assert rows["xpuruntime"].error  # the candidate's own failure, as an xpuruntime error
    assert rows["bare"].error.startswith("not run") and rows["same-instance"].error.startswith("not run")


def test_device_io_on_the_cpu_is_refused(tiny: Path) -> None:
    with pytest.raises(xrt.InputError, match="CUDA") as info:
        xrt.bench(tiny, io="device", device="cpu")
    assert "io='host'" in str(info.value)


def test_an_unknown_baseline_is_refused(tiny: Path) -> None:
    with pytest.raises(xrt.InputError, match="baseline") as info:
        xrt.bench(tiny, baseline="instance")
    assert "'same'" in str(info.value)


def test_paired_overhead_is_the_median_of_same_round_ratios_with_a_bootstrap_interval() -> None:
    """A slow drift that hits both candidates of a round alike cancels in the paired ratio; rounds one candidate
    missed are left out."""
    from xpuruntime.inference.bench import paired_ratio

    drift = np.linspace(1.0, 3.0, 101)  # the host slows down threefold over the run
    ratio, (lo, hi) = paired_ratio(list(1.02 * drift), list(range(101)), list(drift), list(range(101)))
    assert ratio == pytest.approx(1.02) and lo == pytest.approx(1.02) and hi == pytest.approx(1.02)
    noisy = np.random.default_rng(1).normal(1.0, 0.05, 400)
    ratio, (lo, hi) = paired_ratio(list(noisy), list(range(400)), [1.0] * 400, list(range(400)))
    assert lo < ratio < hi and hi - lo < 0.02 and lo < 1.0 < hi
    assert paired_ratio([1.0], [3], [1.0], [4]) is None
    assert paired_ratio([2.0, 9.0], [0, 1], [1.0], [0])[0] == 2.0


def test_bench_shuffles_the_order_of_every_round() -> None:
    from xpuruntime.inference.bench import BenchRow, _Candidate, _timed

    seen: list[str] = []
    cands = []
    for name in "abc":
        c = _Candidate(BenchRow(name, "x", "p"))
        c.call = (lambda n=name: seen.append(n))
        cands.append(c)
    _timed(cands, 30, "cpu", seed=3)
    rounds = {"".join(seen[i:i + 3]) for i in range(0, 90, 3)}
    assert len(rounds) > 1 and all(sorted(r) == ["a", "b", "c"] for r in rounds)
    assert all(c.rounds == list(range(30)) and len(c.samples) == 30 for c in cands)


def test_bench_torch_module_with_its_bare_counterpart() -> None:
    torch = pytest.importorskip("torch")
    result = xrt.bench(_block(), policies=[("bf16", {"execution": {"precision": "bf16"}})], warmup=1, repeat=3,
                       engine_options={"torch": {"example_inputs": (torch.randn(4, 16),)}}, baseline=True)
    assert [r.label for r in result.rows] == ["torch:bf16", "bare torch:bf16"]
    assert result.rows[1].notes[0].startswith("module.to(torch.bfloat16)")
    assert all(r.p50_ms for r in result.rows) and result.rows[0].throughput > 0


def test_bench_reports_a_candidate_that_cannot_load_in_its_row(tiny: Path) -> None:
    result = xrt.bench(tiny, engines=["onnxruntime"], policies=[{"execution": {"compile": "default",
                                                                             "fallback": "error"}}, None],
                       dims={"seq": 4}, warmup=0, repeat=2)
    assert "compile" in result.rows[0].error and result.rows[1].p50_ms


def test_bench_refuses_bad_arguments(tiny: Path) -> None:
    with pytest.raises(xrt.InputError, match="io"):
        xrt.bench(tiny, io="gpu")
    with pytest.raises(xrt.InputError, match="repeat"):
        xrt.bench(tiny, repeat=0)


def test_cli_bench_prints_json_and_a_table(tiny: Path, tmp_path: Path) -> None:
    policy = tmp_path / "level1.yaml"
    policy.write_text("execution:\n  optimize_level: 1\n")
    runner = CliRunner()
    result = runner.invoke(app, ["bench", str(tiny), "--policy", str(policy), "--dim", "seq=8", "--warmup", "1",
                                 "--repeat", "3", "--baseline", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [r["label"] for r in data["rows"]] == ["onnxruntime:level1", "bare onnxruntime:level1"]
    table = runner.invoke(app, ["bench", str(tiny), "--shape", "x=1x8x64", "--repeat", "2", "--warmup", "0"])
    assert table.exit_code == 0 and "p50" in table.stdout
    same = runner.invoke(app, ["bench", str(tiny), "--shape", "x=1x8x64", "--repeat", "2", "--warmup", "0",
                               "--same-instance", "--json"])
    assert same.exit_code == 0, same.output
    assert [r["kind"] for r in json.loads(same.stdout)["rows"]] == ["xpuruntime", "same-instance"]
    bad = runner.invoke(app, ["bench", str(tiny), "--dim", "seq"])
    assert bad.exit_code == 1 and "NAME=SIZE" in bad.output


def test_bench_pairs_give_each_candidate_its_own_engine_options_and_bad_pairs_are_refused() -> None:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8)).eval()
    example = (torch.randn(2, 8),)
    bf16 = {"execution": {"precision": "bf16"}}
    result = xrt.bench(model, pairs=[("torch", ("cast", bf16), {"example_inputs": example}),
                                     ("torch", ("cast-all", bf16), {"example_inputs": example,
                                                                    "precision_mode": "cast-all"}),
                                     ("torch", ("bogus", bf16), {"example_inputs": example, "precision_mode": "x"})],
                       warmup=1, repeat=2)
    rows = {r.label: r for r in result.rows}
    assert rows["torch:cast"].error is None and rows["torch:cast-all"].error is None
    assert "precision_mode" in rows["torch:bogus"].error  # only that candidate got the bad option
    with pytest.raises(xrt.InputError, match="a pair is"):
        xrt.bench(model, pairs=[("torch",)], warmup=0, repeat=1)
