"""Runtime: devices, the environment fingerprint, and (later) streams, memory and profiling.

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

__all__ = [
    "Device",
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
