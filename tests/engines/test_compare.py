"""Cross-engine comparison on real engines: ONNX Runtime against itself under other policies, and against OpenVINO.

Engines that report different shapes or dtypes are simulated by small ONNX Runtime subclasses registered
for one test (the comparison must report them, not crash).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

import xpuruntime as xrt
from xpuruntime.cli import app
from xpuruntime.errors import EngineUnavailableError, InputError, PolicyError
from xpuruntime.inference import registered_engine
from xpuruntime.inference.engines.onnxruntime import OnnxRuntimeEngine
from xpuruntime.inference.samples import matmul_relu, tiny_convnet, tiny_transformer

pytest.importorskip("onnxruntime")

INT8 = {"execution": {"precision": "int8"}}


def has_openvino() -> bool:
    return any(e.name == "openvino" and e.installed for e in xrt.list_engines())


needs_openvino = pytest.mark.skipif(not has_openvino(), reason="the openvino engine is not installed")


@pytest.fixture(scope="module")
def convnet() -> Any:
    return tiny_convnet()


@pytest.fixture(scope="module")
def transformer() -> Any:
    return tiny_transformer()


# -- one engine under two policies ---------------------------------------------------------------
def test_same_engine_twice_agrees_and_keeps_both_receipts(transformer: Any) -> None:
    result = xrt.compare(transformer, ["onnxruntime", "onnxrt"])
    assert result.passed and result.failures == []
    assert [r.label for r in result.runs] == ["onnxruntime", "onnxrt"]
    assert {r.engine for r in result.runs} == {"onnxruntime"}
    assert all(r.report.honored and r.report.nodes for r in result.runs)
    [c] = result.comparisons
    assert (c.output, c.reference, c.engine, c.mismatched, c.size) == ("y", "onnxruntime", "onnxrt", 0, 64)
    assert c.max_abs == 0.0 and c.problem is None
    assert result.inputs[0].describe() == "x: float32[1, 1, 64]" and result.random_inputs


def test_optimize_level_0_against_3_agrees_and_the_receipts_show_the_difference(transformer: Any) -> None:
    result = xrt.compare(transformer, ["onnxruntime", "onnxrt"],
                         policies={"onnxruntime": {"execution": {"optimize_level": 3}},
                                   "onnxrt": {"execution": {"optimize_level": 0}}})
    assert result.passed, result.table()
    levels = [r.report.requested["graph_optimization_level"] for r in result.runs]
    assert levels == ["ORT_ENABLE_ALL", "ORT_DISABLE_ALL"]
    assert result.runs[0].policy_hash != result.runs[1].policy_hash


def test_int8_on_one_side_fails_and_says_which_output_and_by_how_much(convnet: Any) -> None:
    result = xrt.compare(convnet, ["onnxruntime", "onnxrt"], policies={"onnxrt": INT8})
    assert not result.passed
    [failure] = result.failures
    assert failure.output == "logits" and failure.engine == "onnxrt" and failure.mismatched > 0
    assert failure.max_abs > 1e-4 and failure.worst_index is not None
    summary = failure.summary()
    assert "output 'logits': onnxrt vs onnxruntime" in summary and "max abs diff" in summary
    assert result.runs[1].precision == "int8"
    assert any(n.precision == "int8" for n in result.runs[1].report.nodes)  # the receipt shows why


def test_tolerance_decides(convnet: Any) -> None:
    loose = xrt.compare(convnet, ["onnxruntime", "onnxrt"], policies={"onnxrt": INT8}, rtol=0.5, atol=0.01)
    assert loose.passed
    strict = xrt.compare(convnet, ["onnxruntime", "onnxrt"], policies={"onnxrt": INT8}, rtol=0.0, atol=1e-9)
    assert strict.failures[0].mismatched == strict.failures[0].size == 10


def test_shared_policy_applies_to_every_engine_and_per_engine_policies_merge_over_it(convnet: Any) -> None:
    result = xrt.compare(convnet, "onnxruntime,onnxrt", exec_policy={"fallback": "error", "num_threads": 1},
                         policies={"onnxrt": INT8})
    first, second = (r.report for r in result.runs)
    assert [r.precision for r in result.runs] == ["fp32", "int8"]
    assert first.policy_hash != second.policy_hash
    assert first.requested["precision"] == "fp32" and second.requested["model_variant"] == "int8"


# -- inputs ----------------------------------------------------------------------------------------
def test_given_feeds_reach_every_engine(convnet: Any) -> None:
    x = np.random.default_rng(3).standard_normal((2, 3, 32, 32)).astype(np.float32)
    expected = xrt.InferenceSession(convnet).run({"x": x})["logits"]
    for feeds in ({"x": x}, [x], x):
        result = xrt.compare(convnet, ["onnxruntime", "onnxrt"], feeds=feeds)
        assert result.passed and not result.random_inputs
        assert np.array_equal(result.outputs["onnxrt"]["logits"], expected)
        assert result.inputs[0].describe() == "x: float32[2, 3, 32, 32]"


def test_random_feeds_follow_the_seed_and_the_policy_fixed_shapes(transformer: Any) -> None:
    a = xrt.compare(transformer, ["onnxruntime", "onnxrt"], seed=1)
    b = xrt.compare(transformer, ["onnxruntime", "onnxrt"], seed=1)
    c = xrt.compare(transformer, ["onnxruntime", "onnxrt"], seed=2)
    assert np.array_equal(a.outputs["onnxruntime"]["y"], b.outputs["onnxruntime"]["y"])
    assert not np.array_equal(a.outputs["onnxruntime"]["y"], c.outputs["onnxruntime"]["y"])
    fixed = xrt.compare(transformer, ["onnxruntime", "onnxrt"], exec_policy={"fixed_shapes": {"x": [2, 3, 64]}})
    assert fixed.outputs["onnxrt"]["y"].shape == (2, 3, 64)


def test_bad_feeds_are_refused_by_the_session(convnet: Any) -> None:
    with pytest.raises(InputError, match="missing input 'x'"):
        xrt.compare(convnet, ["onnxruntime", "onnxrt"], feeds={})


# -- results ---------------------------------------------------------------------------------------
def test_json_and_tables(convnet: Any) -> None:
    result = xrt.compare(convnet, ["onnxruntime@cpu", "onnxrt"], policies={"onnxrt": INT8})
    data = json.loads(result.to_json())
    assert data["passed"] is False and data["reference"] == "onnxruntime@cpu" and data["seed"] == 0
    assert [r["label"] for r in data["runs"]] == ["onnxruntime@cpu", "onnxrt"]
    assert data["runs"][0]["report"]["engine"] == "onnxruntime" and data["runs"][0]["device"] == "cpu"
    assert data["comparisons"][0]["output"] == "logits" and isinstance(data["comparisons"][0]["worst_index"], list)
    assert data["failures"] == [result.failures[0].summary()]
    text = result.table()
    assert "onnxruntime@cpu (reference)" in text and "FAIL" in text and "1 of 1 output comparison(s) differ" in text
    assert str(result) == text
    import io

    from rich.console import Console

    console = Console(file=io.StringIO(), width=200)
    console.print(result)
    rich_text = console.file.getvalue()
    assert "logits" in rich_text and "1 of 1 output comparison(s) differ" in rich_text


# -- engines that disagree on shapes and types ---------------------------------------------------
class _Flattening(OnnxRuntimeEngine):
    name = "test-flattening"
    aliases = ()

    def run_impl(self, feeds: dict[str, Any], output_names: Any, outputs: Any) -> list[Any]:
        return [np.asarray(v).reshape(-1) for v in super().run_impl(feeds, output_names, outputs)]


class _Widening(OnnxRuntimeEngine):
    name = "test-widening"
    aliases = ()

    def run_impl(self, feeds: dict[str, Any], output_names: Any, outputs: Any) -> list[Any]:
        return [np.asarray(v).astype(np.float64) for v in super().run_impl(feeds, output_names, outputs)]


class _Nan(OnnxRuntimeEngine):
    name = "test-nan"
    aliases = ()

    def run_impl(self, feeds: dict[str, Any], output_names: Any, outputs: Any) -> list[Any]:
        values = [np.array(v, copy=True) for v in super().run_impl(feeds, output_names, outputs)]
        values[0].flat[0] = np.nan
        return values


@pytest.fixture
def odd_engines() -> Iterator[None]:
    with registered_engine(_Flattening), registered_engine(_Widening), registered_engine(_Nan):
        yield  # the fakes are removed again after the test


@pytest.mark.usefixtures("odd_engines")
@pytest.mark.parametrize(("engine", "words"), [("test-flattening", "shape [10] vs [1, 10]"),
                                                ("test-widening", "dtype float64 vs float32")])
def test_different_shapes_or_dtypes_are_failures_with_the_reason(convnet: Any, engine: str, words: str) -> None:
    result = xrt.compare(convnet, ["onnxruntime", engine])
    [failure] = result.failures
    assert failure.problem and words in failure.problem and words in result.table()
    assert failure.max_abs is None and json.loads(result.to_json())["passed"] is False


@pytest.mark.usefixtures("odd_engines")
def test_nan_never_agrees(convnet: Any) -> None:
    [failure] = xrt.compare(convnet, ["onnxruntime", "test-nan"]).failures
    assert failure.mismatched == 1 and failure.worst_index == (0, 0) and np.isnan(failure.worst[0])
    assert json.loads(json.dumps(failure.to_dict()))["worst"][0] == "nan"


# -- arguments -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("kwargs", "error", "words"), [
    ({"engines": ["onnxruntime"]}, PolicyError, "at least two engines"),
    ({"engines": ["onnxruntime", "onnxruntime"]}, PolicyError, "given twice"),
    ({"engines": ["onnxruntime", "onnxruntime@"]}, PolicyError, "malformed engine"),
    ({"engines": ["onnxruntime", "onnxrtime"]}, EngineUnavailableError, "did you mean"),
    ({"engines": ["onnxruntime", "onnxrt"], "rtol": -1}, PolicyError, "rtol must be a finite number"),
    ({"engines": ["onnxruntime", "onnxrt"], "atol": float("nan")}, PolicyError, "atol must be a finite number"),
    ({"engines": ["onnxruntime", "onnxrt"], "policies": {"onnxrtt": INT8}}, PolicyError, "did you mean 'onnxrt'"),
    ({"engines": ["onnxruntime", "onnxrt"], "engine_options": {"onnxrt": {"bogus": 1}}}, PolicyError,
     "unknown engine option 'bogus'"),
    ({"engines": ["onnxruntime", "onnxrt"], "engine_options": {"providers": []}}, PolicyError,
     "not among the engines compared"),
])
def test_bad_arguments_say_what_to_fix(convnet: Any, kwargs: dict[str, Any], error: type, words: str) -> None:
    with pytest.raises(error, match=words):
        xrt.compare(convnet, **kwargs)


def test_an_engine_that_is_not_installed_is_refused_before_anything_runs(convnet: Any,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    class Missing(_Widening):
        name = "test-missing"
        module = "xpuruntime_no_such_library"
        package = "xpuruntime-no-such-library"
        extra = "missing"

    created: list[str] = []
    monkeypatch.setattr(OnnxRuntimeEngine, "load_impl", lambda self: created.append(self.name))
    with registered_engine(Missing):
        with pytest.raises(EngineUnavailableError, match="pip install 'xpuruntime\\[missing\\]'"):
            xrt.compare(convnet, ["onnxruntime", "test-missing"])
    assert created == []


def test_engine_options_reach_only_their_engine(convnet: Any) -> None:
    opts = {"session_config": {"session.intra_op.allow_spinning": "0"}}
    result = xrt.compare(convnet, ["onnxruntime", "onnxrt"], engine_options={"onnxrt": opts})
    first, second = (r.report.requested["session_config"] for r in result.runs)
    assert "session.intra_op.allow_spinning" not in first and second["session.intra_op.allow_spinning"] == "0"


def test_warnings_of_a_receipt_reach_the_caller(convnet: Any) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = xrt.compare(convnet, ["onnxruntime", "onnxrt"],
                             policies={"onnxrt": {"execution": {"precision": "bf16"}}})
    assert result.passed  # bf16 is refused by ONNX Runtime, so both run fp32
    assert not result.runs[1].report.honored
    assert any(issubclass(w.category, xrt.inference.PolicyViolationWarning) for w in caught)


# -- ONNX Runtime against OpenVINO ---------------------------------------------------------------
@needs_openvino
@pytest.mark.parametrize("model", ["convnet", "transformer"])
def test_onnxruntime_and_openvino_agree(model: str, request: pytest.FixtureRequest) -> None:
    result = xrt.compare(request.getfixturevalue(model), ["onnxruntime@cpu", "openvino@cpu"],
                         exec_policy={"fallback": "error"})
    assert result.passed, result.table()
    assert [r.engine for r in result.runs] == ["onnxruntime", "openvino"]
    assert all(r.report.honored for r in result.runs)
    assert result.runs[1].report.providers_used  # OpenVINO's own evidence of where it ran


@needs_openvino
def test_onnxruntime_and_openvino_agree_on_a_batch_with_fixed_shapes(transformer: Any) -> None:
    result = xrt.compare(transformer, ["onnxruntime", "openvino"], exec_policy={"fixed_shapes": {"x": [2, 7, 64]}})
    assert result.passed, result.table()
    assert result.outputs["openvino"]["y"].shape == (2, 7, 64)


@needs_openvino
def test_int8_on_the_onnxruntime_side_differs_from_openvino(convnet: Any) -> None:
    result = xrt.compare(convnet, ["openvino", "onnxruntime"], policies={"onnxruntime": INT8})
    assert not result.passed
    assert result.failures[0].output == "logits" and result.failures[0].engine == "onnxruntime"


# -- CLI -------------------------------------------------------------------------------------------
@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "convnet.onnx"
    onnx.save(tiny_convnet(), path)
    return path


def test_cli_exit_0_when_outputs_agree(model_file: Path) -> None:
    result = CliRunner().invoke(app, ["compare", str(model_file), "--engines", "onnxruntime,onnxrt", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["passed"] and len(data["runs"]) == 2


def test_cli_exit_1_names_the_output_and_the_difference(model_file: Path, tmp_path: Path) -> None:
    policy = tmp_path / "int8.yaml"
    policy.write_text("execution: {precision: int8}\n")
    result = CliRunner().invoke(app, ["compare", str(model_file), "-e", "onnxruntime,onnxrt",
                                      "--engine-policy", f"onnxrt={policy}"])
    assert result.exit_code == 1
    assert "differs: output 'logits': onnxrt vs onnxruntime" in result.output and "max abs diff" in result.output
    assert "FAIL" in result.stdout and "Traceback" not in result.output


def test_cli_inputs_tolerances_and_device(model_file: Path, tmp_path: Path) -> None:
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    args = ["compare", str(model_file), "-e", "onnxruntime@cpu,onnxrt", "--device", "cpu", "--input",
            f"x={tmp_path / 'x.npy'}", "--rtol", "0.5", "--atol", "0.01", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["inputs"] == [{"name": "x", "shape": [3, 3, 32, 32], "dtype": "float32"}]
    assert data["random_inputs"] is False and data["rtol"] == 0.5 and data["atol"] == 0.01


@pytest.mark.parametrize(("args", "code", "words"), [
    (["--engines", "onnxruntime"], 1, "at least two engines"),
    (["--engines", "onnxruntime,onnxrt", "--engine-policy", "onnxrt"], 1, "ENGINE=FILE"),
    (["--engines", "onnxruntime,nosuch"], 1, "unknown engine 'nosuch'"),
    (["--engines", "onnxruntime,onnxrt", "--rtol", "-1"], 2, "rtol"),
    ([], 2, "--engines"),
])
def test_cli_bad_arguments(model_file: Path, args: list[str], code: int, words: str) -> None:
    result = CliRunner().invoke(app, ["compare", str(model_file), *args])
    assert result.exit_code == code, result.output
    assert words in result.output and "Traceback" not in result.output


@needs_openvino
def test_cli_onnxruntime_against_openvino(tmp_path: Path) -> None:
    path = tmp_path / "t.onnx"
    onnx.save(tiny_transformer(), path)
    result = CliRunner().invoke(app, ["compare", str(path), "--engines", "onnxruntime,openvino", "--dim", "seq=8"])
    assert result.exit_code == 0, result.output
    assert "all 1 output comparison(s) agree" in result.stdout


def test_matmul_model_with_a_symbolic_batch(tmp_path: Path) -> None:
    result = xrt.compare(matmul_relu(k=8, n=4), ["onnxruntime", "onnxrt"])
    assert result.passed and result.outputs["onnxrt"]["y"].shape == (1, 4)
