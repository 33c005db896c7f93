"""Issue 11 items 6 and 7: the CLI sizes random inputs only as told (``--dim``, ``--shape``, ``--int-range``),
prints what it used, answers ``--json`` on failure with a JSON document, and groups violations by kind and reason.

On the corpus BERT with dynamic batch and sequence (``xpuruntime.corpus``), on the real ONNX Runtime.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from typer.testing import CliRunner

from xpuruntime.cli import app
from xpuruntime.errors import InputError
from xpuruntime.inference.feeds import TensorInfo, embedding_sizes, int_ranges, resolve_shapes
from xpuruntime.inference.samples import matmul_relu
from xpuruntime.receipts import ExecutionReport, NodeRecord, Violation
from xpuruntime.receipts._render import report_text

runner = CliRunner()


@pytest.fixture(scope="module")
def bert(request: pytest.FixtureRequest) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from xpuruntime import corpus

    return corpus.build_onnx("bert", dynamic=True, cache_dir=request.config.cache.mkdir("xpuruntime-corpus"))


def test_a_dim_without_a_size_is_an_error_naming_it_and_the_flag(bert: Path) -> None:
    """Before issue 11 BERT ran at sequence length 1 without a word."""
    result = runner.invoke(app, ["run", str(bert), "--random-inputs"])
    assert result.exit_code == 1 and "'seq'" in result.output and "--dim seq=N" in result.output
    assert "Traceback" not in result.output


def test_run_prints_the_shapes_and_ranges_it_used(bert: Path) -> None:
    result = runner.invoke(app, ["run", str(bert), "--random-inputs", "--dim", "seq=12"])
    assert result.exit_code == 0, result.output
    assert "input_ids: int64[1, 12] random [0, 1000)" in result.stdout  # the embedding's 1000 rows
    assert "attention_mask: int64[1, 12] random [0, 2)" in result.stdout
    assert "default: dim 'batch' = 1" in result.stdout  # the one documented default, said out loud
    assert "last_hidden_state: float32[1, 12, 64]" in result.stdout


def test_run_json_holds_the_feeds(bert: Path) -> None:
    result = runner.invoke(app, ["run", str(bert), "--random-inputs", "--shape", "input_ids=3x7", "--shape",
                                 "attention_mask=3x7", "--int-range", "0:50", "--int-range", "attention_mask=1:2",
                                 "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    inputs = {i["name"]: i for i in data["feeds"]["inputs"]}
    assert inputs["input_ids"] == {"name": "input_ids", "shape": [3, 7], "dtype": "int64", "source": "random",
                                   "range": [0, 50]}
    assert inputs["attention_mask"]["range"] == [1, 2] and data["feeds"]["defaults"] == []
    assert data["outputs"][0]["shape"] == [3, 7, 64]


@pytest.mark.parametrize(("args", "words"), [
    (["--dim", "sq=8"], "did you mean"),
    (["--dim", "seq=0"], "NAME=SIZE"),
    (["--dim", "seq=8", "--shape", "ids=1x8"], "not a model input"),
    (["--dim", "seq=8", "--int-range", "5:1"], "empty"),
    (["--dim", "seq=8", "--int-range", "five"], "LO:HI"),
])
def test_bad_shape_flags_are_input_errors(bert: Path, args: list[str], words: str) -> None:
    result = runner.invoke(app, ["explain", str(bert), *args])
    assert result.exit_code == 1 and words in result.output and "Traceback" not in result.output


def test_json_failure_is_a_json_document(bert: Path) -> None:
    result = runner.invoke(app, ["run", str(bert), "--random-inputs", "--json"])
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["error"] == "InputError" and "'seq'" in data["message"] and "--dim seq=N" in data["hint"]
    assert {"expected", "received", "receipt"} <= set(data) and data["receipt"] is None


def test_json_failure_carries_the_receipt(bert: Path, tmp_path: Path) -> None:
    policy = tmp_path / "bf16.yaml"
    policy.write_text("execution:\n  precision: bf16\n  fallback: error\n")
    result = runner.invoke(app, ["run", str(bert), "--policy", str(policy), "--random-inputs", "--dim", "seq=4",
                                 "--json"])
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["error"] == "PolicyViolationError" and data["violations"][0]["kind"] == "precision"
    assert data["receipt"]["engine"] == "onnxruntime" and data["receipt"]["violations"]


def test_compare_and_bench_take_the_same_flags(bert: Path) -> None:
    compared = runner.invoke(app, ["compare", str(bert), "--engines", "onnxruntime,onnxrt", "--dim", "seq=6",
                                   "--dim", "batch=2", "--json"])
    assert compared.exit_code == 0, compared.output
    data = json.loads(compared.stdout)
    assert data["random_inputs"] and [i["shape"] for i in data["feeds"]["inputs"]] == [[2, 6], [2, 6]]
    timed = runner.invoke(app, ["bench", str(bert), "--dim", "seq=6", "--repeat", "1", "--warmup", "0", "--json"])
    assert timed.exit_code == 0, timed.output
    assert json.loads(timed.stdout)["feeds"]["inputs"][0]["shape"] == [1, 6]
    assert runner.invoke(app, ["compare", str(bert), "--engines", "onnxruntime,onnxrt"]).exit_code == 1


def test_all_shows_every_node(bert: Path) -> None:
    cut = runner.invoke(app, ["explain", str(bert), "--dim", "seq=4"])
    assert cut.exit_code == 0 and "--all shows every one" in cut.stdout
    full = runner.invoke(app, ["explain", str(bert), "--dim", "seq=4", "--all"])
    assert full.exit_code == 0 and "--all shows every one" not in full.stdout


def test_violations_are_grouped_by_kind_and_reason_with_their_nodes() -> None:
    report = ExecutionReport(engine="e", device="cpu", policy_hash="0" * 12, fingerprint_hash="0" * 12)
    for i in range(10):
        report.nodes.append(NodeRecord(f"mm{i}", "MatMul", "cpu", precision="fp32"))
        report.add(Violation("precision", f"mm{i}", "fp16", "fp32", "ran in float32"))
    report.add(Violation("provider_fallback", "gather", "CUDA", "CPU", "no kernel"))
    text = report_text(report)
    assert "[precision] 10 x requested fp16, got fp32 (ran in float32)" in text
    assert "      mm7" in text and "      mm8" not in text and "... and 2 more (--all shows every one)" in text
    assert "[provider_fallback] 1 x requested CUDA, got CPU (no kernel)" in text
    assert "      mm9" in report_text(report, limit=None)


def test_symbolic_dims_resolve_only_as_told() -> None:
    infos = [TensorInfo("ids", ("batch", "seq"), "int64"), TensorInfo("x", (None, 4), "float32")]
    shapes, defaults = resolve_shapes(infos, dims={"seq": 5}, shapes={"x": (2, 4)})
    assert shapes == {"ids": (1, 5), "x": (2, 4)}
    assert defaults == ["dim 'batch' = 1 (default for a batch dim; pass --dim batch=N)"]
    with pytest.raises(InputError, match=r"x\[0\]"):
        resolve_shapes(infos, dims={"seq": 5})


def test_integer_ranges_follow_the_documented_defaults(tmp_path: Path) -> None:
    infos = [TensorInfo("input_ids", (1, 4), "int64"), TensorInfo("attention_mask", (1, 4), "int64"),
             TensorInfo("steps", (1,), "int32"), TensorInfo("x", (1,), "float32")]
    assert int_ranges(infos, vocab={"input_ids": 30522}) == {"input_ids": (0, 30522), "attention_mask": (0, 2),
                                                             "steps": (0, 100)}
    assert int_ranges(infos, everywhere=(0, 9), given={"steps": (3, 4)})["steps"] == (3, 4)
    assert embedding_sizes(matmul_relu(m=1, k=8, n=4)) == {}


def test_embedding_sizes_of_the_corpus_bert(bert: Path) -> None:
    assert embedding_sizes(onnx.load(bert)) == {"input_ids": 1000}
