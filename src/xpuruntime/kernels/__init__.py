"""xpuruntime.kernels: a kernel registry, a policy-driven dispatcher, and custom kernels (Triton).

The policy names kernels (``KernelPolicy(layernorm="triton", matmul=["triton", "cublas"])``); the registry
knows which implementations exist and when each applies; the dispatcher walks the policy's list for each call
and logs what it chose and what it skipped, and why::

    >>> import xpuruntime.kernels as xk
    >>> xk.get_registry().kernels("matmul")
    ['default', 'cublas', 'cublaslt', 'triton', 'nvmath']
    >>> ctx = xk.DispatchContext("matmul", device="cpu", dtype="fp32", dims={"m": 64, "n": 64, "k": 64})
    >>> xk.get_dispatcher().select("matmul", ctx, {"kernels": {"matmul": ["triton", "default"]}}).kernel
    'default'

The ops users call, ``layer_norm`` and ``matmul``, live in :mod:`xpuruntime.kernels.torch_ops`, and
``attention`` in :mod:`xpuruntime.kernels.sdpa`; they are loaded on first access (they import torch); importing
this package imports neither torch nor triton nor nvmath. The active policy (``use_policy``,
``set_active_policy``) is shared with ``xpuruntime.pytorch``.

Tuning (:mod:`~xpuruntime.kernels.tuner`) measures the kernels on real shapes and writes per-shape rules;
a :class:`~xpuruntime.policies.lock.Lock` keeps the tuned policy with the fingerprint it was measured on and the
measurements, and reports drift field by field on another machine.
"""

from __future__ import annotations

import importlib
from typing import Any

# registration order is the order candidates are listed and tried (triton before nvmath)
# isort: off
from xpuruntime.kernels import triton_layernorm as _triton_layernorm  # noqa: F401  (registers "triton")
from xpuruntime.kernels import triton_matmul as _triton_matmul  # noqa: F401  (registers "triton")
from xpuruntime.kernels import nvmath_matmul as _nvmath_matmul  # noqa: F401  (registers "nvmath")
from xpuruntime.kernels import sdpa as _sdpa  # noqa: F401  (registers the attention kernels)
# isort: on
from xpuruntime.kernels.active import active_policy, set_active_policy, use_policy
from xpuruntime.kernels.dispatcher import (
    Dispatcher,
    DispatchRecord,
    Selection,
    clear_dispatch_logs,
    disable_dispatch_logging,
    dispatch_logging,
    dispatch_logging_enabled,
    enable_dispatch_logging,
    get_dispatch_logs,
    get_dispatcher,
    select,
)
from xpuruntime.kernels.registry import DispatchContext, KernelImpl, KernelRegistry, get_registry

_LAZY = {"layer_norm": "xpuruntime.kernels.torch_ops", "matmul": "xpuruntime.kernels.torch_ops",
         "attention": "xpuruntime.kernels.sdpa", "Tuner": "xpuruntime.kernels.tuner",
         "TuningRecord": "xpuruntime.policies.records", "Lock": "xpuruntime.policies.lock",
         "recording": "xpuruntime.kernels.tuner", "verify_same_policy": "xpuruntime.policies.lock"}

__all__ = [
    "DispatchContext",
    "DispatchRecord",
    "Lock",
    "Tuner",
    "TuningRecord",
    "attention",
    "Dispatcher",
    "KernelImpl",
    "KernelRegistry",
    "Selection",
    "active_policy",
    "clear_dispatch_logs",
    "disable_dispatch_logging",
    "dispatch_logging",
    "dispatch_logging_enabled",
    "enable_dispatch_logging",
    "get_dispatch_logs",
    "get_dispatcher",
    "get_registry",
    "layer_norm",
    "matmul",
    "recording",
    "select",
    "set_active_policy",
    "use_policy",
    "verify_same_policy",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'xpuruntime.kernels' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
