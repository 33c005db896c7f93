"""CUDA streams and events, on ``cuda.core`` or on PyTorch: xpuruntime keeps no stream manager of its own.

The backend is ``torch`` when torch is already imported with CUDA (its streams are what ``torch.cuda.stream``
and torch's kernels use), else ``cuda.core`` when it is installed, else ``torch`` when it is installed; or
name one with ``backend=``. Both expose the ``__cuda_stream__`` protocol, so a Stream passes to cupy,
cuda.core and numba as is. Without a CUDA device (or without either library) construction raises
:class:`~xpuruntime.errors.DeviceError` naming what is missing::

    >>> from xpuruntime.runtime.stream import Stream, Event
    >>> s = Stream("cuda:0")                                        # doctest: +SKIP
    >>> start, end = Event(), Event()                               # doctest: +SKIP
    >>> start.record(s); work_on(s); end.record(s); end.synchronize()   # doctest: +SKIP
    >>> start.elapsed_time(end)                                     # doctest: +SKIP
    0.412
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Any

from xpuruntime.errors import DeviceError, UnsupportedOperationError, did_you_mean
from xpuruntime.runtime.devices import Device, DeviceLike, _cuda_core_module, get_device, parse_device

__all__ = ["Stream", "Event", "BACKENDS", "stream_backend"]

BACKENDS = ("auto", "cuda.core", "torch")


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _torch_ready() -> bool:
    torch = sys.modules.get("torch")
    try:
        return torch is not None and bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001
        return False


def stream_backend(backend: str = "auto") -> str:
    """The library streams and events are made with: ``"torch"`` or ``"cuda.core"`` (see the module notes).

    >>> stream_backend("torch")   # doctest: +SKIP
    'torch'
    """
    if backend not in BACKENDS:
        raise DeviceError(f"unknown stream backend {backend!r}", expected=", ".join(BACKENDS), received=repr(backend),
                          hint=did_you_mean(str(backend), BACKENDS))
    if backend == "auto":
        if _torch_ready():
            return "torch"
        if _cuda_core_module() is not None:
            return "cuda.core"
        if _installed("torch"):
            return "torch"
        raise DeviceError("CUDA streams need cuda.core or PyTorch, and neither is installed",
                          expected="cuda-core (or torch with CUDA) installed", received="neither",
                          hint="pip install cuda-core  (or: pip install 'xpuruntime[gpu]')")
    if backend == "torch" and not _installed("torch"):
        raise DeviceError("stream backend 'torch' asked for, but torch is not installed", expected="torch installed",
                          received="no torch", hint="pip install torch, or backend='cuda.core'")
    if backend == "cuda.core" and _cuda_core_module() is None:
        raise DeviceError("stream backend 'cuda.core' asked for, but cuda.core is not installed",
                          expected="cuda-core installed", received="no cuda.core", hint="pip install cuda-core")
    return backend


def _cuda_device(device: DeviceLike) -> Device:
    spec = parse_device("cuda" if device is None else device)
    if spec.kind not in ("cuda", "auto"):
        raise DeviceError(f"streams and events are CUDA objects; {spec} is not a CUDA device",
                          expected="'cuda', 'cuda:N' or an int N", received=repr(str(spec)),
                          hint="OpenVINO and CPU work is ordered by its session; no stream is needed")
    target = get_device("cuda" if spec.kind == "auto" else spec)
    if not target.is_cuda:
        raise DeviceError("no CUDA device for a stream", expected="a present CUDA device", received=str(target))
    return target


def _core_device(index: int) -> Any:
    core = _cuda_core_module()
    dev = core.Device(index)
    dev.set_current()
    return core, dev


_CUDA_ERROR_NOT_READY = 600  # CUresult: work still queued


def _stream_done(result: Any, where: str) -> bool:
    """``cuStreamQuery``'s answer (``(CUresult,)`` from cuda.bindings): done, not yet, or a DeviceError.

    A new event recorded on the stream and asked at once (the former way) can still be pending right after a
    ``synchronize()``: the record itself is work the device has not reached yet.
    """
    err = result[0] if isinstance(result, tuple) else result
    code = int(err)
    if code in (0, _CUDA_ERROR_NOT_READY):
        return code == 0
    raise DeviceError(f"cuStreamQuery failed on {where}", expected="CUDA_SUCCESS or CUDA_ERROR_NOT_READY",
                      received=str(err))


def _torch() -> Any:
    return importlib.import_module("torch")


class Event:
    """A CUDA event: record it on a stream, wait for it, time between two of them.

    >>> start, end = Event("cuda:0"), Event("cuda:0")    # doctest: +SKIP
    >>> start.record(); ...; end.record(); end.synchronize()   # doctest: +SKIP
    >>> start.elapsed_time(end)   # milliseconds       # doctest: +SKIP
    """

    def __init__(self, device: DeviceLike = None, *, timing: bool = True, blocking: bool = False,
                 backend: str = "auto") -> None:
        self.device = _cuda_device(device)
        self.backend = stream_backend(backend)
        self.timing = timing
        if self.backend == "torch":
            self.native = _torch().cuda.Event(enable_timing=timing, blocking=blocking)
        else:
            core, dev = _core_device(self.device.id)
            self.native = dev.create_event(core.EventOptions(timing_enabled=timing, blocking_sync=blocking))

    def record(self, stream: Stream | None = None) -> Event:
        """Record on ``stream`` (default: the device's current/default stream); returns self."""
        if self.backend == "torch":
            torch = _torch()
            self.native.record(stream.native if stream is not None else torch.cuda.current_stream(self.device.id))
        else:
            target = stream.native if stream is not None else _core_device(self.device.id)[1].default_stream
            target.record(self.native)
        return self

    def wait(self, stream: Stream | None = None) -> None:
        """Make ``stream`` (default: the current/default stream) wait for this event, without blocking the host."""
        (stream or Stream._default(self.device, self.backend)).wait(self)

    def synchronize(self) -> None:
        """Block the host until the work recorded before this event is done."""
        self.native.synchronize() if self.backend == "torch" else self.native.sync()

    def query(self) -> bool:
        """True when the work recorded before this event is done."""
        return bool(self.native.query() if self.backend == "torch" else self.native.is_done)

    def elapsed_time(self, end: Event) -> float:
        """Milliseconds from this event to ``end`` (both recorded with ``timing=True`` and completed)."""
        if not (self.timing and end.timing):
            raise UnsupportedOperationError("elapsed_time needs events created with timing=True",
                                            expected="Event(timing=True) at both ends",
                                            received=f"timing={self.timing} / {end.timing}")
        if self.backend == "torch":
            return float(self.native.elapsed_time(end.native))
        return float(end.native - self.native)

    def __repr__(self) -> str:
        return f"Event({self.device.spec}, backend={self.backend!r}, timing={self.timing})"


class Stream:
    """A CUDA stream on ``device`` (default: the current CUDA device).

    >>> s = Stream(0, priority=-1)            # doctest: +SKIP
    >>> s.wait(other_stream); s.synchronize()  # doctest: +SKIP

    ``priority``: lower runs first (``None``: the default); ``nonblocking``: does not synchronise with the legacy
    default stream (torch streams always are). ``native`` is the ``torch.cuda.Stream`` or ``cuda.core`` Stream.
    """

    def __init__(self, device: DeviceLike = None, *, priority: int | None = None, nonblocking: bool = True,
                 backend: str = "auto", _native: Any = None) -> None:
        self.device = _cuda_device(device)
        self.backend = stream_backend(backend)
        self.native = _native if _native is not None else self._create(priority, nonblocking)

    def _create(self, priority: int | None, nonblocking: bool) -> Any:
        if self.backend == "torch":
            if not nonblocking:
                raise UnsupportedOperationError("torch streams are always non-blocking", expected="nonblocking=True",
                                                received="nonblocking=False", hint="use backend='cuda.core'")
            return _torch().cuda.Stream(device=self.device.id, priority=priority or 0)
        core, dev = _core_device(self.device.id)
        return dev.create_stream(options=core.StreamOptions(nonblocking=nonblocking, priority=priority))

    @classmethod
    def _default(cls, device: Device, backend: str) -> Stream:
        if backend == "torch":
            return cls(device, backend=backend, _native=_torch().cuda.current_stream(device.id))
        return cls(device, backend=backend, _native=_core_device(device.id)[1].default_stream)

    @property
    def handle(self) -> int:
        """The ``cudaStream_t`` address."""
        return int(self.native.cuda_stream if self.backend == "torch" else self.native.handle)

    def __cuda_stream__(self) -> tuple[int, int]:
        return (0, self.handle)

    def record(self, event: Event | None = None) -> Event:
        """Record ``event`` (a new timing event when None) on this stream; returns it."""
        return (event or Event(self.device, backend=self.backend)).record(self)

    def wait(self, other: Event | Stream) -> None:
        """Make this stream wait for an event, or for the work queued so far on another stream."""
        native = other.native
        if self.backend == "torch":
            self.native.wait_event(native) if isinstance(other, Event) else self.native.wait_stream(native)
        else:
            self.native.wait(native)

    def synchronize(self) -> None:
        """Block the host until this stream's work is done."""
        self.native.synchronize() if self.backend == "torch" else self.native.sync()

    def query(self) -> bool:
        """True when this stream's work is done (cuda.core, whose Stream has no query: ``cuStreamQuery``)."""
        if self.backend == "torch":
            return bool(self.native.query())
        from cuda.bindings import driver  # a cuda.core dependency

        _core_device(self.device.id)
        return _stream_done(driver.cuStreamQuery(self.native.handle), self.device.spec)

    def __repr__(self) -> str:
        return f"Stream({self.device.spec}, backend={self.backend!r}, handle={self.handle:#x})"
