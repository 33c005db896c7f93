"""Receipts: what was requested of an engine, what actually ran, and every difference between the two.

Shared by :mod:`xpuruntime.inference` (sessions), :mod:`xpuruntime.pytorch` (the training extension) and
:mod:`xpuruntime.kernels` (the dispatcher): one receipt type, one fallback rule.

>>> from xpuruntime.receipts import ExecutionReport, Violation
>>> r = ExecutionReport(engine="onnxruntime", device="cpu", policy_hash="0" * 64, fingerprint_hash="0" * 64)
>>> r.add(Violation("precision", "MatMul_0", "fp16", "fp32", "no fp16 kernel"))
>>> r.honored
False
"""

from __future__ import annotations

from xpuruntime.receipts.report import (
    EVIDENCE,
    ExecutionReport,
    NodeRecord,
    PolicyViolationWarning,
    Violation,
    enforce_fallback,
    group_violations,
)

__all__ = ["EVIDENCE", "ExecutionReport", "NodeRecord", "PolicyViolationWarning", "Violation", "enforce_fallback",
           "group_violations"]
