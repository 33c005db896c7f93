"""Inference: sessions over engines, and the receipts of what ran."""

from __future__ import annotations

from xpuruntime.inference.engine import (
    Engine,
    EngineInfo,
    engine_names,
    list_engines,
    register_engine,
    registered_engine,
)
from xpuruntime.inference.feeds import TensorInfo
from xpuruntime.inference.plan import Plan
from xpuruntime.inference.prepared import PreparedRun
from xpuruntime.inference.session import InferenceSession
from xpuruntime.receipts import ExecutionReport, NodeRecord, PolicyViolationWarning, Violation

__all__ = [
    "Plan",
    "engine_names",
    "registered_engine",
    "Engine",
    "EngineInfo",
    "ExecutionReport",
    "InferenceSession",
    "NodeRecord",
    "PolicyViolationWarning",
    "PreparedRun",
    "TensorInfo",
    "Violation",
    "list_engines",
    "register_engine",
    "registered_engine",
]
