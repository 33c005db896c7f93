"""Device memory: free and total, the pool statistics and limits the backend keeps, pinned host buffers.

No allocator of xpuruntime's own: numbers come from PyTorch's caching allocator when torch is already imported
with CUDA (what torch code allocates lives there), else from ``cuda.core`` (``cuMemGetInfo`` and the device's
stream-ordered pool attributes), else from NVML (totals only). The CPU reports host memory::

    >>> from xpuruntime.runtime.memory import memory_info, pinned_empty
    >>> info = memory_info("cuda:0")                       # doctest: +SKIP
    >>> info.free, info.total, info.pool["reserved_bytes"]  # doctest: +SKIP
    (84213383168, 85029158912, 0)
    >>> with pinned_empty((1024, 1024), "float32") as buf:  # page-locked: fast, asynchronous copies
    ...     buf.array[:] = 1.0                               # doctest: +SKIP

A pinned buffer needs a CUDA device and cuda.core or torch; without them it is refused with a
:class:`~xpuruntime.errors.DeviceError` naming what is missing (pinning memory is a CUDA driver call).
"""

from __future__ import annotations

import ctypes
import importlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xpuruntime.errors import DeviceError, InputError, OutOfMemoryError, UnsupportedOperationError
from xpuruntime.runtime.devices import Device, DeviceLike, _cuda_core_module, get_current_device, get_device
from xpuruntime.runtime.stream import _core_device, _cuda_device, _torch_ready, stream_backend

__all__ = ["MemoryInfo", "memory_info", "set_memory_fraction", "reset_peak_stats", "PinnedBuffer", "pinned_empty"]


@dataclass(frozen=True)
class MemoryInfo:
    """Memory of one device in bytes; ``pool``: the backend's allocator statistics (empty when it keeps none).

    >>> memory_info("cpu").source
    'os'
    """

    device: str
    total: int | None
    free: int | None
    source: str  # torch | cuda.core | nvml | os
    pool: dict[str, int] = field(default_factory=dict)
    limit: int | None = None  # the per-process cap the backend enforces, when one is set

    @property
    def used(self) -> int | None:
        """``total - free``: every process's use of the device, not only this one's."""
        return None if self.total is None or self.free is None else self.total - self.free

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "total": self.total, "free": self.free, "used": self.used,
                "source": self.source, "pool": dict(self.pool), "limit": self.limit}


def memory_info(device: DeviceLike = None) -> MemoryInfo:
    """Free, total and pool statistics of ``device`` (default: the current device).

    >>> memory_info("cpu").total > 0
    True
    """
    target = get_current_device() if device is None else get_device(device)
    if target.is_cpu:
        return MemoryInfo("cpu", target.total_memory, _host_available(), "os")
    if not target.is_cuda:
        return MemoryInfo(target.spec, target.total_memory, None, target.source)
    if _torch_ready():
        return _torch_info(target)
    if _cuda_core_module() is not None:
        return _core_info(target)
    return _nvml_info(target)


def _host_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _torch_info(target: Device) -> MemoryInfo:
    torch = importlib.import_module("torch")
    free, total = torch.cuda.mem_get_info(target.id)
    stats = torch.cuda.memory_stats(target.id)
    pool = {"allocated_bytes": stats.get("allocated_bytes.all.current", 0),
            "allocated_peak_bytes": stats.get("allocated_bytes.all.peak", 0),
            "reserved_bytes": stats.get("reserved_bytes.all.current", 0),
            "reserved_peak_bytes": stats.get("reserved_bytes.all.peak", 0),
            "alloc_retries": stats.get("num_alloc_retries", 0), "ooms": stats.get("num_ooms", 0)}
    fraction = getattr(torch.cuda, "get_per_process_memory_fraction", None)
    limit = int(fraction(target.id) * total) if callable(fraction) and fraction(target.id) < 1.0 else None
    return MemoryInfo(target.spec, int(total), int(free), "torch", pool, limit)


def _core_info(target: Device) -> MemoryInfo:
    from cuda.bindings import driver

    _, dev = _core_device(target.id)
    err, free, total = driver.cuMemGetInfo()
    if int(err) != 0:
        raise DeviceError(f"cuMemGetInfo failed on {target.spec}", received=str(err))
    attrs = getattr(dev.memory_resource, "attributes", None)
    names = ("used_mem_current", "used_mem_high", "reserved_mem_current", "reserved_mem_high", "release_threshold")
    pool = {n: int(getattr(attrs, n)) for n in names if attrs is not None and hasattr(attrs, n)}
    return MemoryInfo(target.spec, int(total), int(free), "cuda.core", pool)


def _nvml_info(target: Device) -> MemoryInfo:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            handle = pynvml.nvmlDeviceGetHandleByUUID(target.uuid)
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            return MemoryInfo(target.spec, int(mem.total), int(mem.free), "nvml")
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - NVML missing or failing: what discovery knew
        return MemoryInfo(target.spec, target.total_memory, None, target.source)


def set_memory_fraction(fraction: float, device: DeviceLike = None) -> None:
    """Cap this process's PyTorch allocations on ``device`` at ``fraction`` of its memory (torch's limit).

    >>> set_memory_fraction(0.5, "cuda:0")   # doctest: +SKIP

    Only PyTorch's caching allocator has a per-process cap; without torch this raises and says so.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 < fraction <= 1.0:
        raise InputError("invalid memory fraction", expected="a number in (0, 1]", received=repr(fraction))
    target = _cuda_device(device)
    if not _torch_ready():
        raise UnsupportedOperationError("a per-process memory cap is PyTorch's allocator feature",
                                        expected="torch imported, with CUDA", received="no torch CUDA",
                                        hint="import torch first; cuda.core pools have no cap (release_threshold only)")
    importlib.import_module("torch").cuda.set_per_process_memory_fraction(float(fraction), target.id)


def reset_peak_stats(device: DeviceLike = None) -> None:
    """Reset the pool's high-water marks (torch's peak statistics) on ``device``."""
    target = _cuda_device(device)
    if _torch_ready():
        importlib.import_module("torch").cuda.reset_peak_memory_stats(target.id)


# -- pinned host buffers ------------------------------------------------------------------------------------
class PinnedBuffer:
    """Page-locked host memory with a numpy view (``array``); ``close()`` frees it (the view is dead after).

    >>> with pinned_empty(1024, "uint8") as buf:   # doctest: +SKIP
    ...     buf.array.fill(7)
    """

    def __init__(self, array: np.ndarray, owner: Any, backend: str) -> None:
        self.array, self._owner, self.backend = array, owner, backend
        self.nbytes = int(array.nbytes)

    @property
    def closed(self) -> bool:
        return self._owner is None

    def close(self) -> None:
        """Free the memory (cuda.core frees at once; torch's caching host allocator keeps it for reuse)."""
        owner, self._owner = self._owner, None
        if owner is not None and hasattr(owner, "close"):
            owner.close()
        self.array = np.empty(0, self.array.dtype)

    def __enter__(self) -> PinnedBuffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PinnedBuffer({self.nbytes} bytes, backend={self.backend!r}{', closed' if self.closed else ''})"


def _nbytes(shape: int | tuple[int, ...], dtype: Any) -> tuple[tuple[int, ...], np.dtype, int]:
    dims = (shape,) if isinstance(shape, int) else tuple(shape)
    try:
        kind = np.dtype(dtype)
    except TypeError:
        raise InputError("unknown dtype for a pinned buffer", expected="a numpy dtype, e.g. 'float32'",
                         received=repr(dtype)) from None
    if not dims or any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in dims):
        raise InputError("invalid pinned buffer shape", expected="non-negative integers", received=repr(shape))
    nbytes = int(np.prod(dims, dtype=object)) * kind.itemsize
    host = get_device("cpu").total_memory
    if host is not None and nbytes > host:
        raise OutOfMemoryError(f"a pinned buffer of {nbytes} bytes exceeds host memory", expected=f"<= {host} bytes",
                               received=f"{nbytes} bytes")
    return dims, kind, nbytes


def pinned_empty(shape: int | tuple[int, ...], dtype: Any = "float32", device: DeviceLike = None,
                 backend: str = "auto") -> PinnedBuffer:
    """An uninitialised page-locked host array (for fast, asynchronous host<->device copies).

    >>> buf = pinned_empty((4, 256), "float16")   # doctest: +SKIP
    >>> buf.array.shape, buf.backend              # doctest: +SKIP
    ((4, 256), 'torch')
    """
    dims, kind, nbytes = _nbytes(shape, dtype)
    target = _cuda_device(device)
    chosen = stream_backend(backend)
    if chosen == "torch":
        torch = importlib.import_module("torch")
        raw = torch.empty(max(nbytes, 1), dtype=torch.uint8, pin_memory=True)
        view = raw.numpy()[:nbytes].view(kind).reshape(dims)
        return PinnedBuffer(view, raw, "torch")
    _, dev = _core_device(target.id)
    buf = _cuda_core_module().LegacyPinnedMemoryResource().allocate(max(nbytes, 1), stream=dev.default_stream)
    raw = (ctypes.c_byte * max(nbytes, 1)).from_address(int(buf.handle))
    view = np.frombuffer(raw, dtype=np.uint8, count=nbytes).view(kind).reshape(dims)
    return PinnedBuffer(view, buf, "cuda.core")
