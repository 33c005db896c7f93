"""Lock files: round trip and hashes, drift on a doctored fingerprint (field by field), the fallback rule, loading a
lock as a policy or into a session (with ONNX Runtime's tuning results), and one policy across ranks."""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

import xpuruntime as xrt
from xpuruntime import LockDriftError, Policy, PolicyError, PolicyViolationError
from xpuruntime.policies.lock import Lock, as_lock, gather_policy_hashes, verify_same_policy
from xpuruntime.policies.records import Candidate, TuningRecord
from xpuruntime.receipts import PolicyViolationWarning
from xpuruntime.runtime.fingerprint import fingerprint

BASE = Policy(kernels={"attention": "default"}, execution={"fallback": "warn"})


def _record() -> TuningRecord:
    dims = {"batch": 1, "m": 64, "n": 32, "k": 48}
    return TuningRecord("matmul", "fp32", "cpu", dims, {"dtype": "fp32", **dims}, "default", None,
                        (Candidate("default", "ok", 0.01, (0.01, 0.012)),
                         Candidate("cublas", "skipped", reason="runs on cuda tensors only")),
                        fingerprint=fingerprint().hash)


def _tuned(fallback: str = "warn") -> Policy:
    return Policy(kernels={"matmul": {"prefer": "default", "rules": [
        {"when": {"dtype": "bf16", "m": 8192}, "use": ["nvmath", "default"],
         "params": {"nvmath": {"algorithm": {"id": 66, "tile": 18}, "layout": ["row", "col"]}}}]}},
        execution={"fallback": fallback})


def _lock(fallback: str = "warn", fp=None, engine_tuning=None) -> Lock:
    return Lock.create(_tuned(fallback), [_record()], base_policy=BASE.replace(
        execution=BASE.execution.with_fallback(fallback)), engine_tuning=engine_tuning, fingerprint=fp)


def _doctored():
    fp = fingerprint()
    device = {**fp.devices[0], "name": "NVIDIA A100-SXM4-80GB"}
    return dataclasses.replace(fp, driver="535.104.05", cuda="12.2", devices=(device, *fp.devices[1:]),
                               libraries={**fp.libraries, "torch": "2.4.0", "numpy": "1.0.0"}, python="3.9.0")


# ---------------------------------------------------------------------------------------------- files and hashes
def test_a_lock_round_trips_with_its_hashes(tmp_path: Path):
    lock = _lock(engine_tuning={"onnxruntime": [{"ep": "CUDAExecutionProvider", "results": {}, "validators": {}}]})
    path = lock.save(tmp_path / "t.lock.json")
    assert [p.name for p in tmp_path.iterdir()] == ["t.lock.json"]  # atomic: no temporary left behind
    back = Lock.load(path)
    assert back.hash == lock.hash and back.hashes() == lock.hashes()
    assert back.tuned_policy == lock.tuned_policy and back.records == lock.records
    assert back.locked_engine_tuning == lock.locked_engine_tuning and back.status == "verified"
    data = json.loads(path.read_text())
    assert data["hashes"]["policy"] == _tuned().hash and data["format"] == "xpuruntime-lock"
    assert Lock.from_dict(lock.to_dict()).hash == lock.hash


@pytest.mark.parametrize("edit, field", [
    (lambda d: d["records"][0].update(kernel="cublas"), "hashes.records"),
    (lambda d: d["policy"]["kernels"]["matmul"]["rules"][0]["params"]["nvmath"]["algorithm"].update(id=1),
     "hashes.policy"),
    (lambda d: d["engine_tuning"].update(onnxruntime=[{"ep": "x"}]), "hashes.engine_tuning"),
    (lambda d: d.update(lock_version=99), "lock_version"),
    (lambda d: d["fingerprint"].update(driver="1.0"), "fingerprint"),
])
def test_an_edited_lock_is_refused_naming_the_part(tmp_path: Path, edit, field):
    data = _lock().to_dict()
    edit(data)
    path = tmp_path / "edited.lock.json"
    path.write_text(json.dumps(data))
    with pytest.raises(PolicyError) as err:
        Lock.load(path)
    assert err.value.field == field and err.value.file == str(path)


def test_missing_and_malformed_lock_files(tmp_path: Path):
    with pytest.raises(PolicyError, match="lock file not found"):
        Lock.load(tmp_path / "nope.lock.json")
    (tmp_path / "bad.lock.json").write_text("{not json")
    with pytest.raises(PolicyError, match="cannot read the lock"):
        Lock.load(tmp_path / "bad.lock.json")
    (tmp_path / "policy.json").write_text(json.dumps(_tuned().to_dict()))
    with pytest.raises(PolicyError, match="not an xpuruntime lock"):
        Lock.load(tmp_path / "policy.json")


# ---------------------------------------------------------------------------------------------- drift
def test_drift_is_reported_field_by_field_and_unrelated_changes_are_notes():
    lock = _lock(fp=_doctored())
    drift = lock.drift()
    paths = {c.path: (c.old, c.new) for c in drift.changes}
    here = fingerprint()
    assert paths["driver"] == ("535.104.05", here.driver)
    assert paths["cuda"] == ("12.2", here.cuda)
    assert paths["libraries.torch"] == ("2.4.0", here.libraries.get("torch"))
    spec = here.devices[0]["spec"]
    assert paths[f"devices.{spec}.name"] == ("NVIDIA A100-SXM4-80GB", here.devices[0]["name"])
    assert {c.path for c in drift.notes} >= {"python", "libraries.numpy"} and bool(drift)
    assert not _lock().drift() and _lock().drift().describe() == "none"


def test_fallback_error_refuses_a_drifted_lock_with_the_fields():
    with pytest.raises(LockDriftError) as err:
        _lock("allow", fp=_doctored()).check(fallback="error")  # the caller's rule, not the lock's own
    assert isinstance(err.value, PolicyViolationError)
    assert "driver" in {c.path for c in err.value.changes} and "535.104.05" in str(err.value)


def test_fallback_warn_uses_the_untuned_policy_and_drops_engine_results():
    lock = _lock("warn", fp=_doctored(), engine_tuning={"onnxruntime": [{"ep": "CUDAExecutionProvider"}]})
    with pytest.warns(PolicyViolationWarning, match="using the untuned policy"):
        lock.check()
    assert lock.status == "drift-untuned" and lock.policy == lock.base_policy and lock.engine_tuning == {}


def test_fallback_allow_uses_the_tuned_policy_and_keeps_the_drift():
    lock = _lock("warn", fp=_doctored())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lock.check(fallback="allow")
    assert lock.status == "drift-allowed" and lock.policy == lock.tuned_policy and lock.drift_found


def test_policy_load_of_a_lock_applies_the_check(tmp_path: Path):
    assert Policy.load(_lock().save(tmp_path / "ok.lock.json")) == _tuned()
    drifted = _lock("allow", fp=_doctored()).save(tmp_path / "drifted.lock.json")
    with pytest.raises(LockDriftError):
        Policy.load(drifted, fallback="error")
    with pytest.warns(PolicyViolationWarning):  # no rule from the caller: warn (the lock's own "allow" is ignored)
        assert Policy.load(drifted) == BASE.replace(execution=BASE.execution.with_fallback("allow"))
    assert as_lock(tmp_path / "ok.lock.json").status == "verified" and as_lock(BASE) is None


# ---------------------------------------------------------------------------------------------- ONNX Runtime
@pytest.fixture
def model(tmp_path: Path) -> Path:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    w = helper.make_tensor("w", TensorProto.FLOAT, [8, 4], np.ones(32, np.float32))
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])], [w])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), path)
    return path


def test_onnxruntime_tuning_results_are_captured_stored_and_replayed(model: Path, tmp_path: Path):
    from xpuruntime.inference.engines.onnxruntime import OnnxRuntimeEngine

    results = OnnxRuntimeEngine.capture_tuning(model, device="cpu", dims={"n": 4})
    assert results == []  # the CPU provider has no TunableOp: the plumbing, not the content, is tested here
    path = _lock(engine_tuning={"onnxruntime": results}).save(tmp_path / "t.lock.json")
    sess = xrt.InferenceSession(model, policy=path)
    assert sess.policy == _tuned() and sess.engine.tuning == {"onnxruntime": []}
    assert sess.engine.tuning_results() == [] and sess.report.requested["tuning_results_replayed"] == 0
    out = sess.run({"x": np.ones((2, 8), np.float32)})["y"]
    assert out.shape == (2, 4) and float(out[0, 0]) == 8.0


def test_stored_results_onnxruntime_refuses_become_a_note(model: Path, tmp_path: Path):
    foreign = [{"ep": "CUDAExecutionProvider", "results": {}, "validators": {"ORT_VERSION": "0.0.1"}}]
    path = _lock(engine_tuning={"onnxruntime": foreign}).save(tmp_path / "t.lock.json")
    sess = xrt.InferenceSession(model, policy=path)
    assert sess.engine.tuning["onnxruntime"] == foreign
    assert any("stored TunableOp results not applied" in n for n in sess.report.notes)
    assert sess.report.requested["tuning_results_replayed"] == 0
    direct = xrt.InferenceSession(model, engine_options={"tuning_results": foreign})
    assert any("not applied" in n for n in direct.report.notes)
    with pytest.raises(PolicyError, match="tuning_results"):
        xrt.InferenceSession(model, engine_options={"tuning_results": "cache.csv"})


# ---------------------------------------------------------------------------------------------- ranks
def test_verify_same_policy_across_ranks():
    policy = _tuned()
    assert verify_same_policy([policy.hash] * 4) == policy.hash
    assert verify_same_policy([policy, Policy.loads(policy.dumps())]) == policy.hash  # objects with .hash
    other = Policy(kernels={"matmul": "cublas"})
    with pytest.raises(PolicyViolationError) as err:
        verify_same_policy([policy.hash, policy.hash, other.hash, policy.hash])
    assert f"{other.hash[:12]}: ranks 2" in str(err.value) and f"{policy.hash[:12]}: ranks 0, 1, 3" in str(err.value)
    with pytest.raises(PolicyViolationError, match="cannot compare"):
        verify_same_policy([])
    assert gather_policy_hashes(policy) == [policy.hash]  # torch.distributed not initialised: this rank only
