"""Inference: sessions over engines, and the receipts of what ran."""

from __future__ import annotations

from xpuruntime.inference.engine import Engine, EngineInfo, list_engines, register_engine, registered_engine
from xpuruntime.inference.feeds import TensorInfo
from xpuruntime.inference.report import ExecutionReport, NodeRecord, PolicyViolationWarning, Violation
from xpuruntime.inference.session import InferenceSession

__all__ = [
    "Engine",
    "EngineInfo",
    "ExecutionReport",
    "InferenceSession",
    "NodeRecord",
    "PolicyViolationWarning",
    "TensorInfo",
    "Violation",
    "list_engines",
    "register_engine",
    "registered_engine",
]
