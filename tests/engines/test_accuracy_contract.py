"""The accuracy contract (``execution.accuracy``) and ``validate()`` on real engines, and the evidence the
construction receipt carries (issue 11 items 3 and 5)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

from xpuruntime.errors import EngineUnavailableError, PolicyViolationError
from xpuruntime.inference.samples import tiny_convnet, tiny_transformer
from xpuruntime.inference.session import InferenceSession

TIGHT = {"rtol": 1e-7, "atol": 0.0}


@pytest.fixture(scope="module")
def transformer() -> Any:
    return tiny_transformer()


def overflow_model() -> Any:
    """``relu((x @ W) @ W)`` with W = 300: 2.88e6 for x = 2, finite in float32, beyond float16's 65504."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.full((4, 4), 300.0, np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm1"),
             helper.make_node("MatMul", ["h", "w"], ["h2"], name="mm2"), helper.make_node("Relu", ["h2"], ["y"])]
    graph = helper.make_graph(nodes, "overflow", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model


def session(model: Any, engine: str = "onnxruntime", **execution: Any) -> InferenceSession:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return InferenceSession(model, engine=engine, exec_policy={"fallback": "allow", **execution})


# -- evidence at construction --------------------------------------------------------------------------------------
def test_ort_cpu_fp16_is_unverified_at_construction_and_refused_under_error(transformer: Any) -> None:
    """The false pass of issue 11: the assignment info has no types, so fp16 is not honoured on its word."""
    report = session(transformer, precision="fp16").report
    assert report.evidence_of["precision"] == "unverified" and report.evidence_of["providers"] == "observed"
    assert report.unverified == ["precision"] and not report.violations and report.honored is False
    with pytest.raises(PolicyViolationError, match=r"\[precision\].*float32 behind Casts"):
        InferenceSession(transformer, exec_policy={"precision": "fp16", "fallback": "error"})


def test_fp32_on_its_own_float32_model_is_configured_and_honoured(transformer: Any) -> None:
    report = InferenceSession(transformer, exec_policy={"fallback": "error"}).report
    assert report.honored and report.evidence_of["precision"] == "configured"
    explained = session(transformer).explain({"x": np.ones((1, 3, 64), np.float32)})
    assert explained.evidence_of["precision"] == "observed"  # the profile's tensor types


def test_ort_int8_is_observed_from_the_quantised_op_types(transformer: Any) -> None:
    report = InferenceSession(transformer, exec_policy={"precision": "int8", "fallback": "error"}).report
    assert report.honored and report.evidence_of["precision"] == "observed"


def test_openvino_fp16_is_observed_from_the_runtime_model(transformer: Any) -> None:
    pytest.importorskip("openvino")
    report = InferenceSession(transformer, engine="openvino", exec_policy={"precision": "fp16",
                                                                           "fallback": "error"}).report
    assert report.honored and report.evidence_of["precision"] == "observed"
    assert not any("profiled run" in n for n in report.notes)  # nothing needed verifying


def test_torch_bf16_is_verified_by_one_profiled_run_under_error() -> None:
    torch = pytest.importorskip("torch")
    module = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    options = {"example_inputs": (torch.randn(2, 8),)}
    loose = InferenceSession(module, engine="torch", engine_options=options,
                             exec_policy={"precision": "bf16", "fallback": "allow"}).report
    assert loose.unverified == ["precision"] and all(n.evidence == "unverified" for n in loose.nodes)
    strict = InferenceSession(module, engine="torch", engine_options=options,
                              exec_policy={"precision": "bf16", "fallback": "error"}).report
    assert strict.honored and strict.evidence_of["precision"] == "observed"
    assert any(n.startswith("verified by one profiled run on seeded inputs (input float32[2, 8])")
               for n in strict.notes)


# -- the accuracy contract ------------------------------------------------------------------------------------------
def test_a_tight_tolerance_on_fp16_is_an_accuracy_violation(transformer: Any) -> None:
    report = session(transformer, precision="fp16", accuracy=TIGHT).report
    (record,) = report.accuracy
    assert record["output"] == "y" and record["reference"] == "onnxruntime fp32" and record["within"] is False
    assert 0 < record["max_abs"] < 0.1 and record["finite"]
    (violation,) = [v for v in report.violations if v.kind == "accuracy"]
    assert violation.subject == "y" and violation.requested == "rtol=1e-07 atol=0 vs onnxruntime fp32"
    assert violation.actual.startswith("max abs ")
    assert report.evidence_of["accuracy"] == "observed"


def test_a_loose_tolerance_holds_and_under_error_a_broken_one_raises() -> None:
    model = tiny_convnet(channels=4, size=8)
    pytest.importorskip("openvino")
    ok = InferenceSession(model, engine="openvino",
                          exec_policy={"precision": "fp16", "fallback": "error", "accuracy": {"rtol": 0.05,
                                                                                              "atol": 0.05}})
    assert ok.report.honored and ok.report.accuracy[0]["within"] is True
    with pytest.raises(PolicyViolationError, match=r"\[accuracy\] logits: requested rtol=1e-07 atol=0"):
        InferenceSession(model, engine="openvino", exec_policy={"precision": "fp16", "fallback": "error",
                                                                "accuracy": TIGHT})


def test_non_finite_outputs_are_an_accuracy_violation_without_a_contract() -> None:
    """float16 overflows to inf in OpenVINO (ONNX Runtime's CPU provider runs this graph in float32)."""
    pytest.importorskip("openvino")
    sess = session(overflow_model(), "openvino", precision="fp16")
    x = {"x": np.full((1, 4), 2.0, np.float32)}
    assert not np.isfinite(sess.run(x)["y"]).all()
    report = sess.validate(x)
    (violation,) = [v for v in report.violations if v.kind == "accuracy"]
    assert violation.actual == "4 of 4 non-finite" and "overflowed" in violation.reason
    assert report.accuracy[0]["finite"] is False and report.accuracy[0]["reference_finite"] is True
    fp32 = session(overflow_model(), "openvino").validate(x)
    assert fp32.accuracy[0]["max_abs"] == 0.0 and not fp32.violations


def test_validate_with_seeded_inputs_and_a_reference_engine_by_name(transformer: Any) -> None:
    pytest.importorskip("openvino")
    sess = session(transformer, accuracy={"rtol": 1e-3, "atol": 1e-4, "reference": "openvino"})
    assert sess.report.honored and sess.report.accuracy[0]["reference"] == "openvino"
    report = sess.validate({"x": np.random.default_rng(1).standard_normal((1, 8, 64)).astype(np.float32)})
    assert report.accuracy[0]["within"] is True and 0 < report.accuracy[0]["max_abs"] < 1e-3
    assert report.to_dict()["accuracy"][0]["reference"] == "openvino"


def test_an_unknown_reference_engine_is_refused_by_name(transformer: Any) -> None:
    with pytest.raises(EngineUnavailableError, match="unknown engine 'openvin'"):
        session(transformer, accuracy={"rtol": 0, "atol": 0, "reference": "openvin"})


def test_torch_bf16_against_its_fp32_reference() -> None:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.GELU(), torch.nn.Linear(16, 4))
    sess = InferenceSession(module, engine="torch", engine_options={"example_inputs": (torch.randn(3, 16),)},
                            exec_policy={"precision": "bf16", "fallback": "allow", "accuracy": TIGHT})
    record = sess.report.accuracy[0]
    assert record["reference"] == "torch fp32" and record["within"] is False and 0 < record["max_rel"] < 0.1
    assert any(v.kind == "accuracy" for v in sess.report.violations)
    assert next(module.parameters()).dtype == torch.float32  # the user's module was not cast


def test_cli_run_validate_shows_the_accuracy(tmp_path: Any, transformer: Any) -> None:
    import json

    import onnx
    from typer.testing import CliRunner

    from xpuruntime.cli import app

    onnx.save(transformer, tmp_path / "m.onnx")
    (tmp_path / "p.yaml").write_text("execution:\n  precision: fp16\n  fallback: allow\n")
    result = CliRunner().invoke(app, ["run", str(tmp_path / "m.onnx"), "--random-inputs", "--dim", "seq=8", "--validate", "--json",
                                      "-p", str(tmp_path / "p.yaml")])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)["report"]
    assert report["accuracy"][0]["output"] == "y" and report["evidence_of"]["precision"] == "unverified"
    assert report["unverified"] == ["precision"] and report["honored"] is False


def test_compare_validate_adds_each_engines_own_accuracy(transformer: Any) -> None:
    pytest.importorskip("openvino")
    from xpuruntime.inference.compare import compare

    result = compare(transformer, ["onnxruntime", "openvino"], exec_policy={"precision": "fp16", "fallback": "allow"},
                     rtol=0.05, atol=0.05, validate=True)
    assert [r.report.accuracy[0]["reference"] for r in result.runs] == ["onnxruntime fp32", "openvino fp32"]
