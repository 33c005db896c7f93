"""Runtime: devices, streams and events, memory, profiling (NVTX, spans) and the environment fingerprint.

Streams, events and pinned memory come from ``cuda.core`` or PyTorch (:mod:`~xpuruntime.runtime.stream`,
:mod:`~xpuruntime.runtime.memory`); NVTX ranges and ``profile()`` are in :mod:`~xpuruntime.runtime.profiler`.

Nothing here imports torch, OpenVINO or TensorRT at import time. The ``fingerprint()``
function is not re-exported here, so that ``xpuruntime.runtime.fingerprint`` stays the module;
use ``xpuruntime.fingerprint()`` or ``from xpuruntime.runtime.fingerprint import fingerprint``::

    >>> from xpuruntime.runtime import get_device
    >>> from xpuruntime.runtime.fingerprint import fingerprint
    >>> get_device("cpu"), fingerprint().short_hash
    (<Device cpu: AMD EPYC (503.2 GB)>, '3f1c0a9b7e21')
"""

from __future__ import annotations

from xpuruntime.runtime.devices import (
    Device,
    DeviceKind,
    DeviceLike,
    DeviceSpec,
    cuda_discovery_notes,
    discovery_notes,
    get_all_devices,
    get_current_device,
    get_device,
    get_device_count,
    parse_device,
    set_current_device,
    synchronize,
    use_device,
    visible_cuda_indices,
)
from xpuruntime.runtime.fingerprint import TRACKED_LIBRARIES, FieldChange, Fingerprint
from xpuruntime.runtime.memory import MemoryInfo, PinnedBuffer, memory_info, pinned_empty
from xpuruntime.runtime.profiler import nvtx_available, nvtx_range, profile
from xpuruntime.runtime.stream import Event, Stream

__all__ = [
    "Device",
    "Event",
    "MemoryInfo",
    "PinnedBuffer",
    "Stream",
    "memory_info",
    "nvtx_available",
    "nvtx_range",
    "pinned_empty",
    "profile",
    "DeviceKind",
    "DeviceLike",
    "DeviceSpec",
    "FieldChange",
    "Fingerprint",
    "TRACKED_LIBRARIES",
    "cuda_discovery_notes",
    "discovery_notes",
    "get_all_devices",
    "get_current_device",
    "get_device",
    "get_device_count",
    "parse_device",
    "set_current_device",
    "synchronize",
    "use_device",
    "visible_cuda_indices",
]
