"""Evidence levels in receipts: observed / configured / unverified, and what ``honored`` means with them."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest

from xpuruntime.errors import PolicyViolationError
from xpuruntime.inference import registered_engine
from xpuruntime.inference.engine import Engine
from xpuruntime.inference.feeds import TensorInfo
from xpuruntime.inference.plan import Plan
from xpuruntime.inference.samples import matmul_relu
from xpuruntime.inference.session import InferenceSession
from xpuruntime.policies import AccuracyContract, ExecutionPolicy
from xpuruntime.receipts import EVIDENCE, ExecutionReport, NodeRecord, Violation


def _report(**fields: Any) -> ExecutionReport:
    return ExecutionReport(engine="e", device="cpu", policy_hash="0" * 64, fingerprint_hash="1" * 64, **fields)


def test_the_vocabulary_is_three_levels() -> None:
    assert EVIDENCE == ("observed", "configured", "unverified")
    assert NodeRecord("n", "MatMul").evidence == "observed"


def test_an_unverified_request_is_not_honoured_and_is_named() -> None:
    report = _report(evidence_of={"precision": "unverified", "providers": "observed"})
    assert not report.violations
    assert report.unverified == ["precision"]
    assert report.honored is False
    assert "unverified: precision" in report.summary()
    text = report.table()
    assert "claims     precision unverified, providers observed" in text
    assert "unverified precision" in text and "policy honoured" not in text


def test_configured_and_observed_requests_are_honoured() -> None:
    assert _report(evidence_of={"precision": "configured", "providers": "observed"}).honored


def test_a_node_with_a_kernel_request_nothing_has_shown_is_unverified() -> None:
    node = NodeRecord("mm", "matmul", requested_kernel="cublaslt", evidence="unverified")
    assert node.unverified
    assert _report(nodes=[node]).unverified == ["kernel mm"]
    assert not NodeRecord("mm", "matmul", evidence="unverified").unverified  # nothing requested of it


def test_evidence_round_trips_through_json_and_old_receipts_still_load() -> None:
    report = _report(evidence_of={"precision": "unverified"}, accuracy=[{"output": "y", "max_abs": 0.5}],
                     nodes=[NodeRecord("a", "MatMul", evidence="unverified")])
    data = json.loads(report.to_json())
    assert data["unverified"] == ["precision"] and data["honored"] is False
    assert data["nodes"][0]["evidence"] == "unverified"
    assert ExecutionReport.from_dict(data) == report
    old = {k: v for k, v in data.items() if k not in ("evidence_of", "accuracy", "unverified")}
    old["nodes"] = [{k: v for k, v in n.items() if k != "evidence"} for n in data["nodes"]]
    loaded = ExecutionReport.from_dict(old)
    assert loaded.honored and loaded.nodes[0].evidence == "observed"


def test_with_accuracy_folds_a_validate_receipt_into_a_copy() -> None:
    base = _report()
    checked = _report(accuracy=[{"output": "y", "max_abs": 1.0, "max_rel": 0.5, "reference": "fp32",
                                 "finite": True}], evidence_of={"accuracy": "observed"})
    checked.add(Violation("accuracy", "y", "rtol=0 atol=0 vs fp32", "max abs 1", "1 of 1 values beyond"))
    shown = base.with_accuracy(checked)
    assert base.honored and not base.accuracy  # the original is unchanged
    assert [v.kind for v in shown.violations] == ["accuracy"] and shown.accuracy[0]["max_abs"] == 1.0
    assert "accuracy   y: max abs 1, max rel 0.5 vs fp32" in shown.table()


def test_the_accuracy_contract_is_validated_and_keeps_old_hashes() -> None:
    assert ExecutionPolicy(accuracy=None).hash == ExecutionPolicy().hash
    ex = ExecutionPolicy(accuracy={"rtol": 1e-2, "atol": 1e-3, "reference": " OpenVINO "})
    assert ex.accuracy == AccuracyContract(rtol=1e-2, atol=1e-3, reference="openvino")
    assert ExecutionPolicy.from_dict(ex.to_dict()).hash == ex.hash != ExecutionPolicy().hash
    from xpuruntime.errors import PolicyError

    with pytest.raises(PolicyError, match="accuracy.rtol"):
        ExecutionPolicy(accuracy={"rtol": -1, "atol": 0})
    with pytest.raises(PolicyError, match="accuracy"):
        ExecutionPolicy(accuracy={"rtol": 0.1})


class _NoProfilerEngine(Engine):
    """Accepts any precision and has no profiler: plumbing for the verify-before-return rule."""

    name = "noprofiler"
    module = package = "numpy"

    def translate(self, policy: Any, device: Any, options: Mapping[str, Any]) -> Plan:
        return Plan({}, requested={"precision": policy.execution.precision}, targets=("numpy",))

    def load_impl(self) -> None:
        from onnx.numpy_helper import to_array

        self.weight = to_array(self.model.proto.graph.initializer[0])

    def inputs_impl(self) -> list[TensorInfo]:
        return [TensorInfo("x", ("m", self.weight.shape[0]), "float32")]

    def outputs_impl(self) -> list[TensorInfo]:
        return [TensorInfo("y", ("m", self.weight.shape[1]), "float32")]

    def run_impl(self, feeds: dict[str, Any], output_names: Sequence[str], outputs: Any) -> list[Any]:
        return [np.maximum(feeds["x"] @ self.weight, 0)]

    def report_impl(self, report: ExecutionReport) -> None:
        report.nodes += [NodeRecord(n.name, n.op_type, provider="numpy", requested="numpy")
                         for n in self.model.proto.graph.node]


def test_without_evidence_a_precision_request_is_unverified_and_error_refuses_it() -> None:
    model = matmul_relu(k=8, n=4)
    with registered_engine(_NoProfilerEngine):
        fp32 = InferenceSession(model, engine="noprofiler", exec_policy={"fallback": "error"})
        assert fp32.report.honored and fp32.report.evidence_of["precision"] == "configured"
        warn = InferenceSession(model, engine="noprofiler", exec_policy={"precision": "fp16", "fallback": "allow"})
        assert warn.report.unverified == ["precision"] and not warn.report.honored
        with pytest.raises(PolicyViolationError, match=r"\[unverified\] precision: requested fp16, got no evidence"):
            InferenceSession(model, engine="noprofiler", exec_policy={"precision": "fp16", "fallback": "error"})
