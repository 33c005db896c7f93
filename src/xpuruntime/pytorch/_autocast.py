"""Mixed precision: ``torch.autocast`` that also records the precision for receipts."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from xpuruntime.errors import PolicyError
from xpuruntime.pytorch import _state

__all__ = ["autocast", "torch_dtype"]

_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def torch_dtype(precision: str) -> torch.dtype:
    return _DTYPES[precision]


def _precision(dtype: Any, fp16: bool, bf16: bool) -> str:
    if fp16 and bf16:
        raise PolicyError("autocast: fp16=True and bf16=True both given", expected="one of them",
                          received="both", hint="pass dtype=torch.bfloat16 or dtype=torch.float16")
    if dtype is None:
        state = _state.active()
        policy_precision = state.precision if state else None
        return "fp16" if fp16 else "bf16" if bf16 else policy_precision if policy_precision in _DTYPES else "bf16"
    for name, value in _DTYPES.items():
        if dtype is value or (isinstance(dtype, str) and dtype.lower() in (name, str(value).split(".")[-1])):
            return name
    raise PolicyError("autocast takes a 16-bit floating dtype", field="dtype",
                      expected="torch.bfloat16 or torch.float16 (or 'bf16', 'fp16')", received=repr(dtype))


@contextlib.contextmanager
def autocast(dtype: Any = None, enabled: bool = True, *, fp16: bool = False, bf16: bool = False,
             device_type: str | None = None, cache_enabled: bool | None = None) -> Iterator[None]:
    """``torch.autocast`` whose precision shows up in the receipts of :func:`profile`.

    >>> with xrt_torch.autocast(dtype=torch.bfloat16):   # doctest: +SKIP
    ...     loss = model(x).sum()
    >>> with xrt_torch.autocast(fp16=True):              # doctest: +SKIP
    ...     y = model(x)

    Without a dtype: the active policy's fp16/bf16 precision, else bf16. ``device_type`` defaults to
    ``"cuda"`` when a GPU is present, else ``"cpu"``. The weight-cast cache is off unless
    ``cache_enabled=True``: torch's CUDA graph notes require it off, and a block that spans optimizer steps
    or a :func:`capture_graph` would otherwise keep using stale low-precision copies of updated weights.
    """
    precision = _precision(dtype, fp16, bf16)
    device = device_type or ("cuda" if torch.cuda.is_available() else "cpu")
    cache_enabled = bool(cache_enabled)
    with torch.autocast(device, dtype=_DTYPES[precision], enabled=enabled, cache_enabled=cache_enabled):
        token = _state.push_autocast(precision if enabled else None)
        try:
            yield
        finally:
            _state._ACTIVE.reset(token)
