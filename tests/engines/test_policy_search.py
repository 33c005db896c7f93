"""``xpuruntime tune MODEL --search`` and ``xpuruntime.inference.search`` on the CPU, with the real engines: every
candidate is reported with a reason, the accuracy contract drops candidates, the policy and lock written load
back, and the lock's search section is hashed."""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from xpuruntime import Policy
from xpuruntime.cli import app
from xpuruntime.errors import PolicyError
from xpuruntime.inference import samples
from xpuruntime.inference.search import accuracy_contract, candidates, check_accuracy, search
from xpuruntime.policies.lock import Lock


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("search") / "tiny.onnx"
    onnx.save(samples.tiny_transformer(), str(path))
    return path


def test_search_reports_every_candidate_and_picks_one_that_meets_the_contract(model_file: Path):
    result = search(model_file, engines=["onnxruntime"], precisions=["fp32", "fp16", "bf16", "int8"],
                    dims={"batch": 2, "seq": 8}, warmup=1, repeat=3)
    labels = [c.label for c in result.candidates]
    assert labels == [c.label for c in candidates(["onnxruntime"], "cpu", precisions=["fp32", "fp16", "bf16", "int8"])]
    assert len(labels) == 8 and "onnxruntime:fp32+fusions=auto" in labels
    assert all(c.status in ("chosen", "measured", "dropped") and c.reason for c in result.candidates)
    bf16 = next(c for c in result.candidates if c.label == "onnxruntime:bf16")
    assert bf16.status == "dropped" and bf16.reason.startswith("violation:") and "bf16" in bf16.reason
    assert result.chosen is not None and result.chosen.accuracy["ok"] and result.chosen.timing["p50_ms"] > 0
    written = result.policy
    assert written.execution.precision == result.chosen.settings["precision"]
    assert written.execution.fallback == "warn"  # the base policy's rule, not the search's "allow"


def test_a_candidate_outside_the_accuracy_contract_is_dropped(model_file: Path):
    result = search(model_file, engines=["onnxruntime"], precisions=["fp32", "fp16"], dims={"batch": 2, "seq": 8},
                    accuracy=(0.0, 1e-7), warmup=0, repeat=2)
    by_label = {c.label: c for c in result.candidates}
    fp16 = by_label["onnxruntime:fp16"]
    assert fp16.status == "dropped" and fp16.reason.startswith("accuracy:")
    assert fp16.accuracy["max_abs_err"] > 1e-7 and fp16.accuracy["ok"] is False
    assert by_label["onnxruntime:fp32"].status in ("chosen", "measured")  # the reference's own settings
    assert result.chosen is not None and result.chosen.settings["precision"] == "fp32"
    assert result.to_data()["accuracy"] == {"rtol": 0.0, "atol": 1e-7, "reference": "onnxruntime:fp32",
                                            "source": "given"}


def test_cli_search_writes_the_fastest_policy_and_a_lock_with_every_candidate(model_file: Path, tmp_path: Path):
    out, lock_file = tmp_path / "fast.yaml", tmp_path / "fast.lock.json"
    result = CliRunner().invoke(app, ["tune", str(model_file), "--search", "--dim", "batch=2", "--dim", "seq=8",
                                      "--precision", "fp32", "--precision", "fp16", "--repeats", "3", "--warmup",
                                      "1", "-o", str(out), "--lock", str(lock_file), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    policy, lock = Policy.load(out), Lock.load(lock_file)
    assert lock.status == "verified" and lock.tuned_policy == policy and summary["lock_hash"] == lock.hash
    section = lock.search
    assert section["chosen"] == summary["chosen"] and section["engine"] in ("onnxruntime", "openvino")
    assert {c["label"] for c in section["candidates"]} >= {"onnxruntime:fp32", "onnxruntime:fp16+fusions=auto"}
    assert all(c["reason"] for c in section["candidates"])
    chosen = next(c for c in section["candidates"] if c["status"] == "chosen")
    assert policy.execution.precision == chosen["settings"]["precision"]
    data = json.loads(lock_file.read_text())
    data["search"]["chosen"] = "something else"  # the section is inside the hashed content
    lock_file.write_text(json.dumps(data))
    with pytest.raises(PolicyError, match="search"):
        Lock.load(lock_file)


def test_cli_search_writes_the_base_policy_when_nothing_meets_the_contract(model_file: Path, tmp_path: Path):
    out = tmp_path / "none.yaml"
    result = CliRunner().invoke(app, ["tune", str(model_file), "--search", "--engine", "onnxruntime", "--precision",
                                      "fp16", "--atol", "0", "--rtol", "0", "--dim", "batch=1", "--dim", "seq=4",
                                      "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "no candidate met the accuracy contract" in result.stdout
    assert Policy.load(out) == Policy()
    lock = Lock.load(tmp_path / "none.lock.json")
    assert lock.search["chosen"] is None
    assert all(c["status"] == "dropped" and c["reason"] for c in lock.search["candidates"])


def test_search_needs_a_model(tmp_path: Path):
    result = CliRunner().invoke(app, ["tune", "--search", "-o", str(tmp_path / "x.yaml")])
    assert result.exit_code == 2 and "--search needs a MODEL" in result.output


def test_accuracy_contract_reads_the_policys_execution_accuracy_then_defaults():
    assert accuracy_contract(Policy()) == (1e-2, 1e-3)
    with_accuracy = types.SimpleNamespace(execution=types.SimpleNamespace(accuracy={"rtol": 0.1, "atol": None}))
    assert accuracy_contract(with_accuracy) == (0.1, 1e-3)
    assert accuracy_contract(with_accuracy, (0.5, 0.25)) == (0.5, 0.25)


def test_check_accuracy_fails_non_finite_outputs_and_shape_changes():
    ref = {"y": np.array([1.0, 2.0], dtype=np.float32)}
    why, _ = check_accuracy({"y": np.array([1.0, np.nan], dtype=np.float32)}, ref, 1.0, 1.0)
    assert why is not None and "non-finite" in why
    why, _ = check_accuracy({"y": np.ones(3, dtype=np.float32)}, ref, 1.0, 1.0)
    assert why is not None and "shape" in why
    why, figures = check_accuracy({"y": np.array([1.0, 2.01], dtype=np.float32)}, ref, 1e-2, 0.0)
    assert why is None and figures["max_abs_err"] == pytest.approx(0.01, rel=1e-3)
