"""Host I/O of the torch engine's captured CUDA graphs through pinned buffers: fewer waits per call.

A hand-written CUDA-graph loop fed numpy arrays makes one synchronous copy per tensor: ``static.copy_(
torch.from_numpy(x))`` per input and ``t.cpu()`` per output each wait for the device (a copy from pageable memory
goes through the driver's staging). Every wait costs a round trip, several per call, and the device idles
meanwhile: on a BERT-shaped call (three int64 inputs, two fp16 outputs) the I/O of the hand loop took 101-125 us
on an H100 host against 49-74 us staged (``benchmarks/probe_transfers.py``).

What the engine does instead, for a captured graph's tensors of at most :data:`STAGED_BYTES` each:

- the small static inputs are views of one device buffer (:func:`packed_clones`, at capture), filled from one pinned
  host buffer (a host memcpy per feed) by one asynchronous copy (:class:`GraphFeeder`);
- small outputs are copied into pinned buffers asynchronously, the last copy synchronous (one wait for all), then
  copied into new numpy arrays (:class:`Reader`): results never alias a buffer the next call writes, and no
  page-locked memory is handed out (memory held by callers would grow with every result they keep).

Larger tensors take the hand loop's path (a host memcpy of megabytes costs what the wait saves). Every call ends
with a synchronous copy, so the previous call's asynchronous input copy is done before the pinned buffer is written
again; calls are serialised by the engine's run lock. The module path (eager, ``torch.compile``) is left as a hand
loop runs it: staging its feeds and results measured no faster there (``benchmarks/gpu_staged.sh``).
``XPURUNTIME_STAGED_IO=0`` (:func:`staged_io`) turns staging off for sessions made afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["STAGED_BYTES", "GraphFeeder", "Reader", "numpy_dtype", "packed_clones", "reader", "staged_io"]

#: tensors up to this size travel through the engine's pinned buffers (larger ones as a hand loop copies them)
STAGED_BYTES = 1 << 20
_ALIGN = 256  # byte offset of each packed tensor: any dtype's view of the buffer is aligned


_NUMPY: dict[Any, Any] = {}


def staged_io() -> bool:
    """Whether captured graphs made from now on stage their small feeds and results (on unless
    ``XPURUNTIME_STAGED_IO`` is ``0``, ``false``, ``off`` or ``no``: each tensor is then copied as a hand loop copies
    it, where page-locked memory is scarce or to compare)."""
    return os.environ.get("XPURUNTIME_STAGED_IO", "1").strip().lower() not in ("0", "false", "off", "no")


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
    ``fill(feeds, torch.from_numpy)`` takes a dict of numpy arrays of the captured shapes (dtypes are converted as
    ``copy_`` converts them)."""

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

    __slots__ = ("early", "last", "hosts")

    def __init__(self, torch: Any, tensors: Sequence[Any]) -> None:
        pairs = [(torch.empty(tuple(t.shape), dtype=t.dtype, pin_memory=True), t) for t in tensors]
        self.early, self.last = pairs[:-1], pairs[-1]
        self.hosts = [pin.numpy() for pin, _ in pairs]

    def __call__(self) -> list[np.ndarray]:
        for pin, t in self.early:
            pin.copy_(t, non_blocking=True)
        pin, t = self.last
        pin.copy_(t)  # synchronous: waits for the stream, so for every copy before it
        return [host.copy() for host in self.hosts]


def reader(torch: Any, tensors: Sequence[Any]) -> Reader | None:
    """A :class:`Reader` of ``tensors`` when every one is a small CUDA tensor numpy can hold, else None (read them
    as a hand loop does: ``t.cpu()``)."""
    if not tensors or not staged_io() or not all(_stageable(torch, t) and not t.requires_grad for t in tensors):
        return None
    return Reader(torch, tensors)
