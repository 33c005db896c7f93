"""Inference: sessions over engines, and the receipts of what ran."""

from __future__ import annotations

from xpuruntime.inference.engine import Engine, EngineInfo, list_engines, register_engine
from xpuruntime.inference.feeds import TensorInfo
from xpuruntime.inference.session import InferenceSession
from xpuruntime.receipts import ExecutionReport, NodeRecord, PolicyViolationWarning, Violation

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
]
