"""The demo: one embedded model, two contrasting policies, two receipts.

``xpuruntime demo`` runs :func:`run_demo`. The model is a small pre-norm transformer block
built on the fly (:func:`xpuruntime.inference.samples.tiny_transformer`). Policy A asks for
strict fp32 on the CPU; policy B asks for the GPU in fp16 with flash attention and
``fallback="warn"``. On a machine without CUDA the second receipt shows exactly what a bare
engine hides: every node fell back to the CPU, and why.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xpuruntime.policies import Policy
from xpuruntime.policies.vocabulary import DEFAULT_ENGINE
from xpuruntime.receipts import ExecutionReport

__all__ = ["DemoCase", "DemoResult", "demo_cases", "run_demo"]


@dataclass
class DemoCase:
    """A named policy and the device it asks for."""

    name: str
    device: str
    policy: Policy
    story: str
    engine: str | None = None  # None: the engine the demo was asked to run


@dataclass
class DemoResult:
    case: DemoCase
    report: ExecutionReport
    output: np.ndarray
    warnings: list[str] = field(default_factory=list)


def demo_cases(other_engines: tuple[str, ...] = ()) -> list[DemoCase]:
    """The two contrasting policies of the demo, then policy A again on each of ``other_engines``."""
    strict = Policy(execution={"precision": "fp32", "fallback": "error", "optimize_level": 3})
    gpu = Policy(kernels={"attention": "flash", "matmul": "cublaslt"},
                 execution={"precision": "fp16", "fallback": "warn"})
    return [
        DemoCase("A: strict fp32 on the CPU", "cpu", strict,
                 "fp32, fallback=error: the session exists only if every node runs where asked"),
        DemoCase("B: fp16 + flash attention on CUDA", "cuda", gpu,
                 "fp16, flash attention, cuBLASLt, fallback=warn: whatever is not honoured is listed"),
    ] + [DemoCase(f"C: policy A on {name}", "cpu", strict, f"the same policy file, another engine: {name}", name)
         for name in other_engines]


def demo_model() -> Any:
    """The embedded default model: a pre-norm transformer block (d_model 64, 4 heads)."""
    from xpuruntime.inference.samples import tiny_transformer

    return tiny_transformer(d_model=64, heads=4, ffn=256)


def run_demo(engine: str = DEFAULT_ENGINE, seed: int = 0) -> list[DemoResult]:
    """Run the demo model under each policy and return the receipts (explain runs, with times)."""
    from xpuruntime.inference.session import InferenceSession

    model = demo_model()
    x = np.random.default_rng(seed).standard_normal((2, 16, 64)).astype(np.float32)
    results = []
    for case in demo_cases(_other_installed_engines(engine)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sess = InferenceSession(model, device=case.device, engine=case.engine or engine, policy=case.policy)
            report = sess.explain({"x": x})
            output = sess.run({"x": x})["y"]
        results.append(DemoResult(case, report, output, [str(w.message) for w in caught]))
    return results


def _other_installed_engines(engine: str) -> tuple[str, ...]:
    """OpenVINO, when it is installed and not the demo's own engine."""
    from xpuruntime.inference.engine import get_engine_class, list_engines

    own = get_engine_class(engine).name
    return tuple(e.name for e in list_engines() if e.installed and e.name == "openvino" and e.name != own)
