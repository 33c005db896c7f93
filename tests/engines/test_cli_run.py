"""`xpuruntime run / explain / demo / engines` as a user types them, on the real ONNX Runtime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from xpuruntime.cli import app
from xpuruntime.inference.samples import matmul_relu, tiny_transformer


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"
    onnx.save(matmul_relu(m="m", k=8, n=4), path)
    return path


def test_run_with_input_file_prints_receipt_and_outputs(runner, model, tmp_path):
    x = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    result = runner.invoke(app, ["run", str(model), "--input", f"x={tmp_path / 'x.npy'}"])
    assert result.exit_code == 0, result.output
    assert "policy honoured" in result.output and "y: float32[3, 4]" in result.output


def test_run_json_and_output_folder(runner, model, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(model), "--random-inputs", "--dim", "m=1", "--json", "--output",
                                 str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["report"]["honored"] and data["outputs"][0]["shape"] == [1, 4]
    assert np.load(out / "y.npy").shape == (1, 4)
    assert json.loads((out / "report.json").read_text())["engine"] == "onnxruntime"
    again = runner.invoke(app, ["run", str(model), "--random-inputs", "--dim", "m=1", "--output", str(out)])
    assert again.exit_code == 1 and "--overwrite" in again.output  # nothing the user has is overwritten
    assert runner.invoke(app, ["run", str(model), "--random-inputs", "--dim", "m=1", "--output", str(out),
                                  "--overwrite"]).exit_code == 0


def test_explain_has_per_node_times(runner, model):
    result = runner.invoke(app, ["explain", str(model), "--dim", "m=1", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)["report"]
    assert report["profiled"] and all(n["time_us"] is not None for n in report["nodes"])


@pytest.mark.no_cuda("onnxruntime")
def test_run_with_policy_file_and_strict_violation_exits_1(runner, model, tmp_path):
    policy = tmp_path / "strict.yaml"
    policy.write_text("execution: {fallback: error}\n")
    result = runner.invoke(app, ["run", str(model), "--policy", str(policy), "--device", "cuda", "--random-inputs", "--dim", "m=1"])
    assert result.exit_code == 1
    assert "did not honour the policy" in result.output and "Traceback" not in result.output


@pytest.mark.no_cuda("onnxruntime")
def test_warn_fallback_prints_warning_and_succeeds(runner, model, tmp_path):
    result = runner.invoke(app, ["run", str(model), "--device", "cuda", "--random-inputs", "--dim", "m=1"])
    assert result.exit_code == 0
    assert "warning:" in result.output and "provider_fallback" in result.output


@pytest.mark.parametrize("args,words", [
    (["run", "missing.onnx", "--random-inputs"], "model file not found"),
    (["run", "{model}"], "--random-inputs"),
    (["run", "{model}", "--input", "x"], "NAME=FILE.npy"),
    (["run", "{model}", "--input", "x=/nonexistent.npy"], "cannot read input"),
    (["run", "{model}", "--random-inputs", "--engine", "onnxruntme"], "did you mean"),
    (["run", "{model}", "--random-inputs", "--device", "cdua"], "cuda"),
])
def test_bad_input_exits_1_with_message(runner, model, args, words):
    result = runner.invoke(app, [a.replace("{model}", str(model)) for a in args])
    assert result.exit_code == 1, result.output
    assert words in result.output and "Traceback" not in result.output


def test_demo_prints_two_contrasting_receipts_and_policy_a_on_openvino(runner):
    result = runner.invoke(app, ["demo", "--json"])
    assert result.exit_code == 0, result.output
    cases = json.loads(result.stdout)
    assert [c["engine"] for c in cases[:2]] == ["onnxruntime", "onnxruntime"]
    assert cases[0]["report"]["honored"]
    assert cases[0]["report"]["nodes"] and cases[1]["report"]["nodes"]
    if __import__("importlib").util.find_spec("openvino"):
        assert cases[2]["engine"] == "openvino" and cases[2]["report"]["honored"]
        assert cases[2]["policy"] == cases[0]["policy"]


def test_demo_table(runner):
    result = runner.invoke(app, ["demo"])
    assert result.exit_code == 0, result.output
    assert "A: strict fp32 on the CPU" in result.output and "policy honoured" in result.output


def test_engines_lists_onnxruntime(runner):
    result = runner.invoke(app, ["engines", "--json"])
    assert result.exit_code == 0
    names = {e["name"]: e for e in json.loads(result.stdout)}
    assert names["onnxruntime"]["installed"] and names["onnxruntime"]["version"]
    assert "onnxrt+trt" in names


def test_tiny_transformer_random_inputs_use_fixed_shapes(runner, tmp_path):
    path = tmp_path / "t.onnx"
    onnx.save(tiny_transformer(), path)
    policy = tmp_path / "p.yaml"
    policy.write_text("execution: {fixed_shapes: {x: [2, 5, 64]}}\n")
    result = runner.invoke(app, ["run", str(path), "--policy", str(policy), "--random-inputs", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["outputs"][0]["shape"] == [2, 5, 64]
