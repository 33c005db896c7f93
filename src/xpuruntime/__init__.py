"""xpuruntime: an execution control plane for GPUs and NPUs.

Policies say which engine, kernel and precision a model should run with; sessions apply
them on ONNX Runtime, OpenVINO or PyTorch; receipts prove what actually ran.

>>> import xpuruntime as xrt
>>> xrt.KernelPolicy(matmul="cublasLt", attention="flash_v2")
KernelPolicy(matmul=cublaslt, attention=flash)

``import xpuruntime`` loads no engine and no torch: those are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from xpuruntime._version import __version__
from xpuruntime.errors import (
    CudaError,
    DeviceError,
    EngineUnavailableError,
    ExecutionTimeoutError,
    InputError,
    LockDriftError,
    ModelLoadError,
    OutOfMemoryError,
    PolicyError,
    PolicyViolationError,
    UnsupportedOperationError,
    XpuRuntimeError,
)
from xpuruntime.policies import ExecutionPolicy, KernelPolicy, Policy

# name -> module that defines it; loaded on first attribute access (PEP 562)
_LAZY = {
    "Device": "xpuruntime.runtime.devices",
    "get_device": "xpuruntime.runtime.devices",
    "get_device_count": "xpuruntime.runtime.devices",
    "get_all_devices": "xpuruntime.runtime.devices",
    "get_current_device": "xpuruntime.runtime.devices",
    "set_current_device": "xpuruntime.runtime.devices",
    "synchronize": "xpuruntime.runtime.devices",
    "Stream": "xpuruntime.runtime.stream",
    "Event": "xpuruntime.runtime.stream",
    "memory_info": "xpuruntime.runtime.memory",
    "fingerprint": "xpuruntime.runtime.fingerprint",
    "Fingerprint": "xpuruntime.runtime.fingerprint",
    "InferenceSession": "xpuruntime.inference.session",
    "PreparedRun": "xpuruntime.inference.prepared",
    "ExecutionReport": "xpuruntime.receipts",
    "list_engines": "xpuruntime.inference.engine",
    "compare": "xpuruntime.inference.compare",
    "ComparisonResult": "xpuruntime.inference.compare",
    "bench": "xpuruntime.inference.bench",
    "BenchResult": "xpuruntime.inference.bench",
}
_SUBMODULES = ("pytorch", "policies", "runtime", "inference", "kernels", "cli")

__all__ = [
    "__version__",
    "KernelPolicy",
    "ExecutionPolicy",
    "Policy",
    *_LAZY,
    "XpuRuntimeError",
    "CudaError",
    "OutOfMemoryError",
    "UnsupportedOperationError",
    "PolicyError",
    "PolicyViolationError",
    "LockDriftError",
    "ModelLoadError",
    "InputError",
    "DeviceError",
    "EngineUnavailableError",
    "ExecutionTimeoutError",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"xpuruntime.{name}")
    raise AttributeError(f"module 'xpuruntime' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | set(_SUBMODULES))
