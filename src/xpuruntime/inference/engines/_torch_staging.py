"""Host I/O of the torch engine's CUDA runs through pinned buffers: fewer synchronisations per call.

A hand-written loop over a CUDA model fed numpy arrays makes one synchronous copy per tensor: ``static.copy_(
torch.from_numpy(x))`` per input and ``t.cpu()`` per output each wait for the device (a copy from pageable memory
goes through the driver's staging). Every wait costs a round trip (about 10 us on an H100 host), several of them
per call, and the device idles meanwhile: on a BERT-shaped call (three int64 inputs, two fp16 outputs) the I/O of
the hand loop took 101-125 us against 49-74 us staged (``benchmarks/probe_transfers.py``).

What the engine does instead, for tensors of at most :data:`STAGED_BYTES` each:

- inputs are copied (a host memcpy) into pinned buffers the engine keeps, and sent with asynchronous copies; a
  captured graph's small static inputs are views of one device buffer, filled by one copy from one pinned buffer;
- outputs are copied into pinned buffers with asynchronous copies, the last one synchronous (one wait for all),
  then copied into new numpy arrays: results never alias a buffer the next call writes, and no pinned memory is
  handed out (page-locked memory held by callers would grow with every result they keep).

``XPURUNTIME_STAGED_IO=0`` (:func:`xpuruntime.inference.feeds.staged_io`) turns all of this off for sessions
made afterwards. Larger tensors take the hand loop's path (a host memcpy of megabytes costs what the wait saves). Every call ends
with that one synchronous copy, which also means the previous call's asynchronous input copies are done before a
pinned buffer is written again; calls are serialised by the engine's run lock.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from xpuruntime.inference.feeds import staged_io

__all__ = ["STAGED_BYTES", "GraphFeeder", "ModuleFeeder", "ModuleReader", "Reader", "numpy_dtype", "packed_clones",
           "reader"]

#: tensors up to this size travel through the engine's pinned buffers (larger ones as a hand loop copies them)
STAGED_BYTES = 1 << 20
_ALIGN = 256  # byte offset of each packed tensor: any dtype's view of the buffer is aligned
_CACHED = 64  # pinned buffers kept per runner (feeds of changing shapes: the oldest are dropped)


_NUMPY: dict[Any, Any] = {}


def numpy_dtype(torch: Any, dtype: Any) -> Any:
    """numpy's dtype of a torch dtype, or None (bfloat16 and the other types numpy has not)."""
    if dtype not in _NUMPY:
        try:
            _NUMPY[dtype] = torch.empty(0, dtype=dtype).numpy().dtype
        except (TypeError, RuntimeError):
            _NUMPY[dtype] = None
    return _NUMPY[dtype]


def _stageable(torch: Any, t: Any) -> bool:
    """A CUDA tensor of at most STAGED_BYTES that numpy can hold."""
    return bool(t.is_cuda) and t.numel() * t.element_size() <= STAGED_BYTES and numpy_dtype(torch, t.dtype) is not None


def packed_clones(torch: Any, inputs: Sequence[Any]) -> tuple[tuple[Any, ...], tuple[Any, list[int]] | None]:
    """Clones of a graph's example inputs to capture it on: the small CUDA ones (one device) as contiguous views of
    one device buffer at aligned offsets. Returns (the clones, (that buffer, the packed indices)) or (clones, None)
    when nothing is packed."""
    small = [i for i, t in enumerate(inputs) if _stageable(torch, t)] if staged_io() else []
    if not small or len({inputs[i].device for i in small}) != 1:
        return tuple(t.clone() for t in inputs), None
    offsets, total = [], 0
    for i in small:
        offsets.append(total)
        nbytes = inputs[i].numel() * inputs[i].element_size()
        total += -(-max(nbytes, 1) // _ALIGN) * _ALIGN
    buffer = torch.empty(total, dtype=torch.uint8, device=inputs[small[0]].device)
    clones = [None if i in small else t.clone() for i, t in enumerate(inputs)]
    for i, offset in zip(small, offsets):
        t = inputs[i]
        view = buffer[offset:offset + t.numel() * t.element_size()].view(t.dtype).view(t.shape)
        view.copy_(t)
        clones[i] = view
    return tuple(clones), (buffer, small)


class GraphFeeder:
    """The numpy feeds of a captured graph into its static inputs: the packed ones (views of one device buffer, see
    :func:`packed_clones`) through one pinned buffer and one asynchronous copy, the others copied as a hand loop does.
    Call ``feeder(feeds)`` with a dict of numpy arrays of the captured shapes (dtypes are converted as ``copy_``
    converts them)."""

    __slots__ = ("packed", "loose", "_host", "_device")

    def __init__(self, torch: Any, names: Sequence[str], statics: Sequence[Any],
                 packed: tuple[Any, list[int]] | None) -> None:
        indices = set(packed[1]) if packed is not None else set()
        self.loose = [(names[i], s) for i, s in enumerate(statics) if i not in indices]
        self.packed: list[tuple[str, np.ndarray]] = []
        if packed is not None:
            buffer, _ = packed
            self._device = buffer
            self._host = torch.empty(buffer.numel(), dtype=torch.uint8, pin_memory=True)
            host = self._host.numpy()
            base = buffer.data_ptr()
            for i in packed[1]:
                s = statics[i]
                start = s.data_ptr() - base
                view = host[start:start + s.numel() * s.element_size()].view(numpy_dtype(torch, s.dtype))
                self.packed.append((names[i], view.reshape(tuple(s.shape))))

    def fill(self, feeds: dict[str, Any], from_numpy: Callable[[Any], Any]) -> None:
        """Every static input from ``feeds`` (no synchronisation for the packed ones: the call's read-back waits)."""
        copyto = np.copyto
        for name, view in self.packed:
            copyto(view, feeds[name], casting="unsafe")
        if self.packed:
            self._device.copy_(self._host, non_blocking=True)
        for name, static in self.loose:
            static.copy_(from_numpy(feeds[name]))


class Reader:
    """CUDA tensors (of fixed shapes: a captured graph's outputs) read back to new numpy arrays with one wait: each
    copied asynchronously into a pinned buffer, the last copy synchronous, then each buffer copied out. ``reader()``
    returns the list. Use :func:`reader` to get one only where it pays (small, numpy-typed CUDA tensors)."""

    __slots__ = ("pairs", "last")

    def __init__(self, torch: Any, tensors: Sequence[Any]) -> None:
        pins = [torch.empty(tuple(t.shape), dtype=t.dtype, pin_memory=True) for t in tensors]
        self.pairs = [(p, t, p.numpy()) for p, t in zip(pins, tensors)]
        self.last = self.pairs[-1]

    def __call__(self) -> list[np.ndarray]:
        last = self.last
        for pin, t, _ in self.pairs:
            if pin is not last[0]:
                pin.copy_(t, non_blocking=True)
        last[0].copy_(last[1])  # synchronous: waits for the stream, so for every copy before it
        return [host.copy() for _, _, host in self.pairs]


def reader(torch: Any, tensors: Sequence[Any]) -> Reader | None:
    """A :class:`Reader` of ``tensors`` when every one is a small CUDA tensor numpy can hold, else None (read them
    as a hand loop does: ``t.cpu()``)."""
    if not tensors or not staged_io() or not all(_stageable(torch, t) and not t.requires_grad for t in tensors):
        return None
    return Reader(torch, tensors)


class ModuleFeeder:
    """Numpy feeds of a module (eager or compiled) sent to a CUDA device: each small array copied into a pinned
    buffer kept per (position, shape, dtype) and sent asynchronously; larger ones as a hand loop sends them. The
    tensors are made in the caller's mode (inference mode: inference tensors, as ``torch.from_numpy(x).to(dev)``)."""

    __slots__ = ("torch", "target", "pins")

    def __init__(self, torch: Any, target: Any) -> None:
        self.torch, self.target = torch, target
        self.pins: dict[tuple[int, tuple[int, ...], str], tuple[Any, np.ndarray]] = {}

    def __call__(self, arrays: Sequence[np.ndarray]) -> list[Any]:
        out, pins, target = [], self.pins, self.target
        for i, a in enumerate(arrays):
            if a.nbytes > STAGED_BYTES or a.dtype.hasobject:
                out.append(self.torch.from_numpy(np.ascontiguousarray(a)).to(target))
                continue
            key = (i, a.shape, a.dtype.str)
            found = pins.get(key)
            if found is None:
                found = self._pin(key, a)
            np.copyto(found[1], a)
            out.append(found[0].to(target, non_blocking=True))
        return out

    def _pin(self, key: tuple[int, tuple[int, ...], str], a: np.ndarray) -> tuple[Any, np.ndarray]:
        if len(self.pins) >= _CACHED:
            self.pins.pop(next(iter(self.pins)))
        with self.torch.inference_mode(False):
            pin = self.torch.empty(a.shape, dtype=self.torch.from_numpy(np.empty(0, a.dtype)).dtype, pin_memory=True)
        found = self.pins[key] = (pin, pin.numpy())
        return found


class ModuleReader:
    """A module's results read back to new numpy arrays with one wait: the small CUDA ones through pinned buffers kept
    per (position, shape, dtype), copied asynchronously, the last of them synchronously (:class:`Reader` for results
    that are new tensors on every call); the others as a hand loop reads them (``t.cpu()``). Pass tensors numpy can
    hold (bfloat16 converted on the device first)."""

    __slots__ = ("torch", "pins")

    def __init__(self, torch: Any) -> None:
        self.torch = torch
        self.pins: dict[tuple[int, tuple[int, ...], Any], tuple[Any, np.ndarray]] = {}

    def __call__(self, tensors: Sequence[Any]) -> list[np.ndarray]:
        torch, pins = self.torch, self.pins
        staged = []
        for i, t in enumerate(tensors):
            if _stageable(torch, t):
                key = (i, tuple(t.shape), t.dtype)
                found = pins.get(key)
                if found is None:
                    found = self._pin(key, t)
                staged.append((i, found, t))
        last = len(staged) - 1
        for n, (_, (pin, _), t) in enumerate(staged):
            pin.copy_(t, non_blocking=n < last)  # the last copy waits for the stream: for every copy before it
        out: list[Any] = list(tensors)
        for i, (_, host), _ in staged:
            out[i] = host.copy()
        if not staged and not any(t.is_cuda for t in tensors):  # no wait below: the feeds' copies must be done
            torch.cuda.current_stream().synchronize()            # before their pinned buffers are written again
        return [t if type(t) is np.ndarray else t.cpu().numpy() for t in out]

    def _pin(self, key: tuple[int, tuple[int, ...], Any], t: Any) -> tuple[Any, np.ndarray]:
        if len(self.pins) >= _CACHED:
            self.pins.pop(next(iter(self.pins)))
        with self.torch.inference_mode(False):
            pin = self.torch.empty(tuple(t.shape), dtype=t.dtype, pin_memory=True)
        found = self.pins[key] = (pin, pin.numpy())
        return found
