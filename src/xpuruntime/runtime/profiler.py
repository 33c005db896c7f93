"""Profiling: NVTX ranges, xpuruntime's own spans, and ``profile()`` over the engines' own profilers.

- NVTX: sessions (``xpuruntime <engine>@<device> run``, ``... load``, ``... explain``) and the PyTorch
  extension's policy blocks (``xpuruntime policy attention=flash matmul=cublaslt``) push NVTX ranges, so Nsight
  Systems shows them over the kernels. Only when the ``nvtx`` package is installed (``pip install
  'xpuruntime[profile]'``); whether it is, is decided once when this module is imported, and without it a range
  costs one function call. Ranges are no-ops unless a profiler (``nsys``) is attached.
- Spans: :class:`SpanLog` times named steps (load, translate, verify, run) for receipts and traces.
- :func:`profile`: inside the block every session run is recorded as a span, and when the block ends each
  session that ran gets one profiled run (the engine's own profiler: ONNX Runtime's profiling JSON, OpenVINO's
  PERF_COUNT, torch.profiler) with the feeds of its last run; the receipts are in ``prof.reports``::

    >>> from xpuruntime.runtime.profiler import profile
    >>> with profile() as prof:                              # doctest: +SKIP
    ...     sess.run(feeds)
    >>> prof.reports[0].profiled, prof.save_trace("run.trace.json")   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from xpuruntime.errors import XpuRuntimeError

__all__ = ["nvtx_available", "nvtx_attached", "nvtx_range", "SpanLog", "Profile", "profile", "active_profile"]

try:  # decided once: without nvtx a range is a shared no-op context
    import nvtx as _nvtx
except ImportError:  # pragma: no cover - depends on the environment
    _nvtx = None
except Exception:  # noqa: BLE001 - a broken nvtx build must not break xpuruntime
    _nvtx = None

_DOMAIN = "xpuruntime"
_NULL = contextlib.nullcontext()


def nvtx_available() -> bool:
    """True when the ``nvtx`` package is installed, so ranges reach Nsight Systems.

    >>> nvtx_available()
    False
    """
    return _nvtx is not None


# decided once, as _nvtx is: the profiling tools inject themselves when they launch the process
_ATTACHED = _nvtx is not None and bool(os.environ.get("NVTX_INJECTION64_PATH")
                                        or os.environ.get("NVTX_INJECTION32_PATH"))


def nvtx_attached() -> bool:
    """True when NVTX ranges reach a tool: ``nvtx`` installed and a tool injected into this process (Nsight Systems
    and Nsight Compute set ``NVTX_INJECTION64_PATH`` when they launch it; without one every NVTX call is a no-op).
    The per-run hot paths open their ranges only then; :func:`nvtx_range` itself works whenever nvtx is installed.

    >>> nvtx_attached()
    False
    """
    return _ATTACHED


def nvtx_range(name: str, color: str | None = None) -> Any:
    """A context manager pushing the NVTX range ``name`` (domain ``xpuruntime``); a no-op without ``nvtx``.

    >>> with nvtx_range("xpuruntime preprocess"):
    ...     pass
    """
    if _nvtx is None:
        return _NULL
    return _nvtx.annotate(message=name, domain=_DOMAIN, color=color)


class _Span:
    """One span of a :class:`SpanLog` as a ``with`` block: :meth:`SpanLog.begin` and :meth:`SpanLog.end`."""

    __slots__ = ("log", "name", "replay", "args", "mark")

    def __init__(self, log: SpanLog, name: str, replay: Callable[[], Any] | None, args: dict[str, Any]) -> None:
        self.log, self.name, self.replay, self.args = log, name, replay, args

    def __enter__(self) -> None:
        self.mark = self.log.begin(self.name)

    def __exit__(self, *exc: object) -> None:
        self.log.end(self.mark, self.replay, self.args)


class SpanLog:
    """xpuruntime's own spans of one object (a session): name, start (us since the epoch), duration, args.

    ``label`` names the NVTX ranges (``"<label> <span>"``). Keeps about the last ``limit`` spans.

    >>> log = SpanLog("xpuruntime onnxruntime@cpu")
    >>> with log.span("load"):
    ...     pass
    >>> [s["name"] for s in log.items()]
    ['load']
    """

    def __init__(self, label: str, limit: int = 256) -> None:
        self.label, self.limit = label, limit
        self._items: list[dict[str, Any]] = []

    def attach(self, target: list[dict[str, Any]]) -> None:
        """Keep the spans in ``target`` from now on (a receipt's ``spans``), moving those kept so far there."""
        target.extend(self._items)
        self._items = target

    def span(self, name: str, replay: Callable[[], Any] | None = None, **args: Any) -> _Span:
        """Time the block as span ``name`` (and an NVTX range); ``replay`` gives :func:`profile` a profiled run."""
        return _Span(self, name, replay, args)

    def begin(self, name: str) -> tuple[str, int, Any]:
        """Start span ``name`` without a ``with`` block (a session's every run); close it with :meth:`end`."""
        rng = None
        if _ATTACHED:  # a range only where a tool records it (a run's every span)
            rng = nvtx_range(f"{self.label} {name}")
            rng.__enter__()
        return name, time.time_ns(), rng

    def end(self, mark: tuple[str, int, Any], replay: Callable[[], Any] | None = None,
            args: dict[str, Any] | None = None) -> None:
        """Close a span started by :meth:`begin` and keep it (``replay`` gives :func:`profile` a profiled run)."""
        name, start, rng = mark
        end = time.time_ns()
        if rng is not None:
            rng.__exit__(None, None, None)
        item = {"name": name, "start_us": start / 1e3, "dur_us": (end - start) / 1e3, "args": args or {}}
        self._items.append(item)
        if len(self._items) > 2 * self.limit:
            del self._items[: len(self._items) - self.limit]
        current = _ACTIVE.get()
        if current is not None:
            current._record(self, item, replay)

    def items(self, *names: str) -> list[dict[str, Any]]:
        """The spans kept, oldest first (only those called ``names`` when given)."""
        return [dict(s) for s in self._items if not names or s["name"] in names]

    def last(self) -> dict[str, Any] | None:
        """The latest span, or None."""
        return dict(self._items[-1]) if self._items else None


@dataclass
class Profile:
    """What :func:`profile` collected: spans of every run, and one engine-profiled receipt per session."""

    spans: list[dict[str, Any]] = field(default_factory=list)
    reports: list[Any] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    _replays: dict[int, tuple[SpanLog, Callable[[], Any]]] = field(default_factory=dict, repr=False)

    def _record(self, log: SpanLog, item: dict[str, Any], replay: Callable[[], Any] | None) -> None:
        self.spans.append({**item, "args": {**item["args"], "source": log.label}})
        if replay is not None:
            self._replays[id(log)] = (log, replay)  # the last run of each session is the one profiled

    def add(self, report: Any, label: str | None = None) -> None:
        """Add a receipt made elsewhere (e.g. ``xpuruntime.pytorch.profile()``'s) to this profile's trace."""
        self.reports.append(report)
        self.labels.append(label or f"{report.engine} on {report.device}")

    def _finish(self) -> None:
        for log, replay in self._replays.values():
            try:
                self.add(replay(), log.label)
            except XpuRuntimeError as exc:  # an engine without a profiler on this device says so
                self.notes.append(f"{log.label}: not profiled: {exc}")
        self._replays.clear()

    def to_trace(self) -> dict[str, Any]:
        """All receipts of the block in one Chrome/Perfetto trace (one process per session)."""
        if self.reports:  # the receipts render themselves (this layer sits below xpuruntime.receipts)
            trace = type(self.reports[0]).traces(self.reports, self.labels)
        else:
            trace = {"traceEvents": [], "displayTimeUnit": "ms", "otherData": {"generator": "xpuruntime", "receipts": []}}
        trace["otherData"]["notes"] = list(self.notes)
        return trace

    def save_trace(self, path: str) -> str:
        """Write :meth:`to_trace` as JSON to ``path`` (atomically); returns the path."""
        import json
        from pathlib import Path

        from xpuruntime._io import atomic_write_text

        atomic_write_text(Path(path), json.dumps(self.to_trace(), default=str))
        return str(path)


_ACTIVE: contextvars.ContextVar[Profile | None] = contextvars.ContextVar("xpuruntime_profile", default=None)


def active_profile() -> Profile | None:
    """The innermost :func:`profile` block's collector in this thread or task, or None."""
    return _ACTIVE.get()


@contextlib.contextmanager
def profile(engine_profiles: bool = True) -> Iterator[Profile]:
    """Collect the spans of every session run in the block; at its end, profile each session once.

    >>> with profile() as prof:                       # doctest: +SKIP
    ...     out = sess.run({"x": x})
    >>> [r.profiled for r in prof.reports]            # doctest: +SKIP
    [True]

    The profiled run repeats the session's last run with its feeds through the engine's own profiler (a
    warm-up and a measured run), so it happens after the block, never inside a timed loop.
    ``engine_profiles=False`` keeps only the spans. An engine that cannot profile on its device leaves a
    note in ``prof.notes`` instead of a receipt.
    """
    prof = Profile()
    token = _ACTIVE.set(prof)
    try:
        with nvtx_range("xpuruntime profile"):
            yield prof
    finally:
        _ACTIVE.reset(token)
    if engine_profiles:
        prof._finish()
