"""``xpuruntime kernels``, ``tune`` and ``lock`` end to end on the CPU: files written, loaded back, driving the
dispatcher; lock verify exit codes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

pytestmark = pytest.mark.torch

import xpuruntime.kernels as xk  # noqa: E402
from xpuruntime import Policy  # noqa: E402
from xpuruntime.cli import app  # noqa: E402
from xpuruntime.policies.lock import Lock  # noqa: E402
from xpuruntime.runtime.fingerprint import fingerprint  # noqa: E402

WORKLOAD = '''
import torch
import torch.nn.functional as F

def step():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.LayerNorm(64))
    x = model(torch.randn(2, 16, 32))
    q = x.view(2, 16, 4, 16).transpose(1, 2)
    F.scaled_dot_product_attention(q, q, q, is_causal=True).sum().backward()
'''


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_kernels_lists_ops_kernels_and_why_one_is_unavailable(runner: CliRunner):
    result = runner.invoke(app, ["kernels", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    matmul = {k["name"]: k for k in data["matmul"]}
    assert list(matmul) == ["default", "cublas", "cublaslt", "triton", "nvmath"]
    assert matmul["nvmath"]["tunable"] and matmul["nvmath"]["params"]
    assert matmul["default"]["available"] and matmul["default"]["default"]
    if torch.cuda.is_available() is False:
        assert matmul["cublaslt"]["reason"] == "no CUDA device here"
    assert {k["name"] for k in data["attention"]} == {"default", "flash", "efficient", "cudnn", "math"}
    table = runner.invoke(app, ["kernels"])
    assert table.exit_code == 0 and "nvmath" in table.stdout


def test_tune_an_entry_point_writes_a_policy_and_a_lock_that_drive_the_dispatcher(runner, tmp_path, monkeypatch):
    (tmp_path / "workload.py").write_text(WORKLOAD)
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["tune", "--entry", "workload:step", "--kernels", "attention=flash,math",
                                 "--repeats", "3", "--warmup", "1", "-o", "tuned.yaml", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["lock"] == "tuned.lock.json" and Path("tuned.yaml").is_file()
    ops = sorted((r["op"], tuple(r["dims"].values())) for r in summary["records"])
    assert ops == [("attention", (2, 4, 16, 16, 16)), ("layernorm", (32, 64)), ("matmul", (1, 32, 64, 32))]
    lock = Lock.load("tuned.lock.json")
    policy = Policy.load("tuned.yaml")
    assert lock.status == "verified" and lock.tuned_policy == policy and summary["lock_hash"] == lock.hash
    attention = next(r for r in lock.records if r.op == "attention")
    assert {c.kernel for c in attention.candidates} == {"default", "flash", "math"}
    assert all(c.status == "ok" and len(c.times_ms) == 3 for c in attention.candidates)
    checked = summary["end_to_end"]  # the whole step, base against tuned: timing decides what is written
    kept = checked["written"] in ("tuned", "partial") and "attention" in checked.get("kept", [])
    if attention.kernel != "default" and kept:  # the winner is pinned by a rule; the dispatcher follows it
        q = torch.randn(2, 4, 16, 16)
        with xk.use_policy(policy), xk.dispatch_logging() as logged:
            xk.attention(q, q, q, is_causal=True)
        assert logged[0].kernel == attention.kernel and "rules[0]" in logged[0].reason
    elif attention.kernel != "default":  # the step was not faster with the rule (a loaded machine): none written
        assert "attention" not in policy.kernels and checked["why"]


def test_tune_shapes_with_first_supported_and_a_base_policy(runner, tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("kernels:\n  attention: [efficient, math, default]\nexecution:\n  fallback: error\n")
    out = tmp_path / "out.yaml"
    result = runner.invoke(app, ["tune", "--shapes", "attention:fp32:1x2x32x32x16,layernorm:fp32:8x32",
                                 "--strategy", "first_supported", "--policy", str(base), "-o", str(out),
                                 "--lock", str(tmp_path / "out.lock.json")])
    assert result.exit_code == 0, result.output
    assert "tuned 2 shape(s)" in result.stdout
    policy = Policy.load(out)
    rule = policy.kernels.preference("attention").rules[0]
    assert rule.use == ("math", "default") and policy.execution.fallback == "error"  # efficient: CUDA only
    assert policy.kernels.preference("attention").prefer == ("efficient", "math", "default")  # base kept


def test_tune_an_onnx_model_records_onnxruntime_results(runner, tmp_path):
    onnx = pytest.importorskip("onnx")
    import numpy as np
    from onnx import TensorProto, helper

    w = helper.make_tensor("w", TensorProto.FLOAT, [16, 8], np.ones(128, np.float32))
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])], [w])
    model = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), model)
    missing = runner.invoke(app, ["tune", str(model), "-o", str(tmp_path / "m.yaml")])
    assert missing.exit_code == 1 and "--dim batch=N" in missing.stderr
    result = runner.invoke(app, ["tune", str(model), "--dim", "batch=4", "-o", str(tmp_path / "m.yaml"), "--json"])
    assert result.exit_code == 0, result.output
    lock = Lock.load(tmp_path / "m.lock.json")
    assert lock.locked_engine_tuning == {"onnxruntime": []}
    assert lock.records[0].dims == {"batch": 1, "m": 4, "n": 8, "k": 16}
    assert lock.tuned_policy.kernels.get("matmul") == "auto"  # TunableOp on when the lock is replayed


def test_tune_without_shapes_is_a_usage_error(runner):
    result = runner.invoke(app, ["tune"])
    assert result.exit_code == 2 and "MODEL, --entry or --shapes" in result.output


def test_lock_verify_and_hash_exit_codes(runner, tmp_path):
    out = tmp_path / "t.yaml"
    assert runner.invoke(app, ["tune", "-s", "layernorm:fp32:8x32", "-o", str(out)]).exit_code == 0
    lock_path = tmp_path / "t.lock.json"
    ok = runner.invoke(app, ["lock", "verify", str(lock_path)])
    assert ok.exit_code == 0 and "no drift" in ok.stdout
    lock = Lock.load(lock_path, check=False)
    assert runner.invoke(app, ["lock", "hash", str(lock_path)]).stdout.strip() == lock.hash
    assert runner.invoke(app, ["lock", "hash", "--policy", str(lock_path)]).stdout.strip() == \
        runner.invoke(app, ["policy", "hash", str(out)]).stdout.strip()

    doctored = dataclasses.replace(fingerprint(), driver="535.104.05", python="3.9.0")
    moved = Lock(lock.tuned_policy, fingerprint=doctored, records=lock.records, base_policy=lock.base_policy)
    moved.save(tmp_path / "moved.lock.json")
    drift = runner.invoke(app, ["lock", "verify", str(tmp_path / "moved.lock.json"), "--json"])
    assert drift.exit_code == 1
    report = json.loads(drift.stdout)
    assert [c["path"] for c in report["changes"]] == ["driver"] and report["changes"][0]["locked"] == "535.104.05"
    assert "python" in [c["path"] for c in report["notes"]] and report["fallback"] == "warn"
    table = runner.invoke(app, ["lock", "verify", str(tmp_path / "moved.lock.json"), "--fallback", "error"])
    assert table.exit_code == 1 and "driver" in table.stdout and "refuses" in table.stdout

    data = json.loads(lock_path.read_text())
    data["records"][0]["kernel"] = "triton"
    (tmp_path / "edited.lock.json").write_text(json.dumps(data))
    edited = runner.invoke(app, ["lock", "verify", str(tmp_path / "edited.lock.json")])
    assert edited.exit_code == 1 and "does not match its hash" in edited.stderr
    assert runner.invoke(app, ["lock", "verify"]).exit_code == 2
