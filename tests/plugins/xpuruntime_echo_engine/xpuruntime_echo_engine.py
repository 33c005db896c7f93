"""A third-party xpuruntime engine, as a plugin would write it: ``echo``, backed by ONNX's reference evaluator.

It imports only xpuruntime's public engine API and ``onnx``; xpuruntime finds it through the
``xpuruntime.engines`` entry point declared in this folder's ``pyproject.toml``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from xpuruntime.inference.engine import Engine
from xpuruntime.inference.feeds import TensorInfo
from xpuruntime.inference.plan import Plan
from xpuruntime.receipts import ExecutionReport, NodeRecord, Violation

__all__ = ["EchoEngine"]


def _infos(values: Any) -> list[TensorInfo]:
    from onnx.helper import tensor_dtype_to_np_dtype

    out = []
    for v in values:
        t = v.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim)
        out.append(TensorInfo(v.name, dims, str(tensor_dtype_to_np_dtype(t.elem_type))))
    return out


class EchoEngine(Engine):
    """Runs the model with ``onnx.reference.ReferenceEvaluator`` (fp32 only, CPU only)."""

    name = "echo"
    aliases = ("onnx-reference",)
    package = "onnx"
    module = "onnx"
    devices = ("cpu",)

    @classmethod
    def version(cls) -> str | None:
        return "0.1"

    def translate(self, policy: Any, device: Any, options: Any) -> Plan:
        violations = []
        if policy.execution.precision != "fp32":
            violations.append(Violation("precision", "model", policy.execution.precision, "fp32",
                                        "the echo engine computes in the model's own types"))
        return Plan(None, requested={"evaluator": "onnx.reference.ReferenceEvaluator"}, targets=("echo",),
                    violations=violations)

    def load_impl(self) -> None:
        from onnx.reference import ReferenceEvaluator

        self.evaluator = ReferenceEvaluator(self.model.proto)

    def inputs_impl(self) -> list[TensorInfo]:
        inits = {i.name for i in self.model.proto.graph.initializer}
        return _infos(i for i in self.model.proto.graph.input if i.name not in inits)

    def outputs_impl(self) -> list[TensorInfo]:
        return _infos(self.model.proto.graph.output)

    def run_impl(self, feeds: dict[str, Any], output_names: Sequence[str], outputs: dict[str, Any] | None) -> list[Any]:
        return list(self.evaluator.run(list(output_names), feeds))

    def report_impl(self, report: ExecutionReport) -> None:
        report.evidence.append("onnx.reference.ReferenceEvaluator (runs every node itself)")
        for node in self.model.proto.graph.node:
            report.nodes.append(NodeRecord(node.name, node.op_type, provider="echo", requested="echo",
                                           precision="fp32"))
