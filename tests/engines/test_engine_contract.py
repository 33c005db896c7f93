"""The engine contract: what the base class guarantees for every engine, and how a new engine is added.

``ExampleEngine`` below is the whole of an engine: ``translate()`` and five hooks. Everything a user relies on
(option and feed checks, error wrapping, the receipt header, the fallback rule, closing) comes from the base
class, and the real engines are held to the same contract: their plan is never edited after ``translate()``.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest

import xpuruntime as xrt
from xpuruntime.inference import registered_engine
from xpuruntime.inference.engine import Engine
from xpuruntime.inference.feeds import TensorInfo
from xpuruntime.inference.plan import Plan
from xpuruntime.inference.samples import matmul_relu
from xpuruntime.receipts import ExecutionReport, NodeRecord, Violation


class ExampleEngine(Engine):
    """Runs MatMul+Relu models with numpy: the smallest complete engine."""

    name = "example"
    aliases = ("numpy-example",)
    module = "numpy"
    package = "numpy"
    devices = ("cpu",)
    option_keys = ("fail_runs",)

    def translate(self, policy: Any, device: Any, options: Mapping[str, Any]) -> Plan:
        violations = []
        if policy.execution.precision not in ("fp32", "tf32"):
            violations.append(Violation("precision", "model", policy.execution.precision, "fp32",
                                        "numpy computes in float32 here"))
        return Plan({"dtype": "float32"}, requested={"dtype": "float32"}, targets=("numpy",), violations=violations)

    def load_impl(self) -> None:
        from onnx.numpy_helper import to_array

        self.weight = to_array(self.model.proto.graph.initializer[0])

    def inputs_impl(self) -> list[TensorInfo]:
        return [TensorInfo("x", ("m", self.weight.shape[0]), "float32")]

    def outputs_impl(self) -> list[TensorInfo]:
        return [TensorInfo("y", ("m", self.weight.shape[1]), "float32")]

    def run_impl(self, feeds: dict[str, Any], output_names: Sequence[str], outputs: Any) -> list[Any]:
        if self.options.get("fail_runs"):
            raise RuntimeError("numpy exploded")
        return [np.maximum(feeds["x"] @ self.weight, 0)]

    def report_impl(self, report: ExecutionReport) -> None:
        report.evidence.append("numpy runs every node itself")
        report.nodes += [NodeRecord(n.name, n.op_type, provider="numpy", requested="numpy", precision="fp32")
                         for n in self.model.proto.graph.node]


@pytest.fixture(scope="module")
def model() -> Any:
    return matmul_relu(k=8, n=4)


def test_a_new_engine_is_one_class_and_gets_the_whole_contract(model: Any) -> None:
    x = np.ones((2, 8), np.float32)
    with registered_engine(ExampleEngine):
        assert "example" in xrt.inference.engine_names()
        with xrt.InferenceSession(model, engine="numpy-example") as sess:
            out = sess.run({"x": x})
            report = sess.report
            assert report.honored and report.engine == "example" and report.requested == {"dtype": "float32"}
            assert sess.providers == ["numpy"] and sess.providers_used == ["numpy"]
            with pytest.raises(xrt.InputError, match="unknown output"):
                sess.run({"x": x}, ["z"])
            with pytest.raises(xrt.InputError):
                sess.run({"x": np.ones((2, 3), np.float32)})
            with pytest.raises(xrt.UnsupportedOperationError, match="cannot profile"):
                sess.explain({"x": x})
        with pytest.raises(xrt.XpuRuntimeError, match="closed"):
            sess.run({"x": x})
    assert np.allclose(out["y"], np.maximum(x @ sess.engine.weight, 0))
    assert "example" not in xrt.inference.engine_names()


def test_the_base_class_checks_options_wraps_errors_and_applies_the_fallback_rule(model: Any) -> None:
    x = np.ones((1, 8), np.float32)
    with registered_engine(ExampleEngine):
        with pytest.raises(xrt.PolicyError, match="unknown engine option 'fail_run'") as err:
            xrt.InferenceSession(model, engine="example", engine_options={"fail_run": True})
        assert err.value.hint and "fail_runs" in err.value.hint
        failing = xrt.InferenceSession(model, engine="example", engine_options={"fail_runs": True})
        with pytest.raises(xrt.XpuRuntimeError, match="example failed during the run: numpy exploded"):
            failing.run({"x": x})
        with pytest.raises(xrt.PolicyViolationError, match=r"\[precision\] model"):
            xrt.InferenceSession(model, engine="example", exec_policy={"precision": "fp16", "fallback": "error"})
        with pytest.warns(xrt.receipts.PolicyViolationWarning):
            warned = xrt.InferenceSession(model, engine="example", exec_policy={"precision": "fp16"})
        assert [v.kind for v in warned.report.violations] == ["precision"]
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            allowed = xrt.InferenceSession(model, engine="example",
                                           exec_policy={"precision": "fp16", "fallback": "allow"})
        assert not allowed.report.honored


def _engines() -> list[str]:
    return [e.name for e in xrt.list_engines() if e.installed and e.name in ("onnxruntime", "openvino", "torch")]


@pytest.mark.parametrize("engine", _engines())
def test_an_engine_never_edits_its_plan_after_translate(model: Any, engine: str) -> None:
    if engine == "torch":
        torch = pytest.importorskip("torch")
        model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU())
        options = {"example_inputs": (torch.ones(2, 8),)}
        feeds = [np.ones((2, 8), np.float32)]
    else:
        options, feeds = {}, {"x": np.ones((2, 8), np.float32)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fp16 on a CPU: violations are expected; the plan is what is checked
        sess = xrt.InferenceSession(model, engine=engine, exec_policy={"precision": "fp16"}, engine_options=options)
        before = copy.deepcopy(sess.engine.plan)
        sess.run(feeds)
        sess.run_many([feeds, feeds])
        sess.explain(feeds)
    assert sess.engine.plan == before
    with pytest.raises(AttributeError):
        sess.engine.plan.notes.append("x")  # type: ignore[attr-defined]
