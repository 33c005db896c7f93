"""Receipts as Chrome/Perfetto traces: the engine's own profile events and xpuruntime's spans on one timeline.

The format is the Chrome Trace Event Format (JSON object form: ``traceEvents`` plus ``otherData``), which
https://ui.perfetto.dev and ``chrome://tracing`` open. One process per receipt holds two kinds of tracks:

- ``xpuruntime``: xpuruntime's own spans (``load``, ``translate``, ``verify``, ``run``, ``profile``), timed by
  xpuruntime around the engine calls;
- one track per provider or device (``CPUExecutionProvider``, ``CPU``, ``cuda``, ...): the engine's profile
  events of the profiled run (ONNX Runtime's profiling JSON, OpenVINO's PERF_COUNT, torch profiler ops and
  kernels). Each node event's ``args`` hold the node's provider, precision, kernel, what was requested and the
  evidence it was read from. Where the engine gives durations without start times (OpenVINO's PERF_COUNT) or a
  receipt holds only per-node times, events are laid end to end and ``args.synthesised_ts`` says so.

Violations are instant events on the ``violations`` track. The receipt's header is in ``otherData``.

>>> trace = report.to_trace()                 # doctest: +SKIP
>>> write_trace("run.trace.json", [report])   # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from xpuruntime.receipts import ExecutionReport, NodeRecord

__all__ = ["report_trace", "reports_trace", "trace_json", "write_trace"]

_SPANS_TID, _VIOLATIONS_TID = 1, 2


def report_trace(report: ExecutionReport) -> dict[str, Any]:
    """One receipt as a Chrome trace dict (``{"traceEvents": [...], "otherData": {...}}``).

    >>> report_trace(report)["traceEvents"][0]["ph"]  # doctest: +SKIP
    'M'
    """
    return reports_trace([report])


def reports_trace(reports: Sequence[ExecutionReport], labels: Sequence[str] | None = None) -> dict[str, Any]:
    """Several receipts (``compare``'s engines) in one trace: one process each, on a shared clock.

    >>> reports_trace([a, b], labels=["onnxruntime", "openvino"])  # doctest: +SKIP
    """
    labels = list(labels) if labels is not None else [f"{r.engine} on {r.device}" for r in reports]
    origin = _origin(reports)
    events: list[dict[str, Any]] = []
    for pid, (report, label) in enumerate(zip(reports, labels), start=1):
        events += _process(report, label, pid, origin)
    return {"traceEvents": events, "displayTimeUnit": "ms",
            "otherData": {"generator": "xpuruntime", "receipts": [_header(r) for r in reports]}}


def trace_json(reports: Sequence[ExecutionReport], labels: Sequence[str] | None = None) -> str:
    """The trace as JSON text, ready to write to a ``.json`` file."""
    return json.dumps(reports_trace(reports, labels), default=str)


# -- one receipt --------------------------------------------------------------------------------------------
def _origin(reports: Iterable[ExecutionReport]) -> float:
    starts = [float(s["start_us"]) for r in reports for s in r.spans if "start_us" in s]
    return min(starts) if starts else 0.0


def _process(report: ExecutionReport, label: str, pid: int, origin: float) -> list[dict[str, Any]]:
    events = [_meta(pid, 0, "process_name", label), _meta(pid, _SPANS_TID, "thread_name", "xpuruntime")]
    events += [_span(s, pid, origin) for s in report.spans]
    engine = _engine_events(report)
    extent = max((float(e.get("ts", 0)) + float(e.get("dur", 0)) for e in engine), default=0.0)
    start = _engine_start(report, origin, extent)
    tracks: dict[str, int] = {}
    nodes, evidence = {n.name: n for n in report.nodes}, "; ".join(report.evidence)
    for ev in engine:
        tid = tracks.setdefault(str(ev.get("track") or report.engine), _VIOLATIONS_TID + 1 + len(tracks))
        events.append(_complete(ev, pid, tid, start, nodes.get(str(ev.get("node"))), evidence))
    events += [_meta(pid, tid, "thread_name", name) for name, tid in tracks.items()]
    if report.violations:
        events.append(_meta(pid, _VIOLATIONS_TID, "thread_name", "violations"))
        events += [_violation(v, pid, start) for v in report.violations]
    return events


def _meta(pid: int, tid: int, what: str, name: str) -> dict[str, Any]:
    return {"name": what, "ph": "M", "pid": pid, "tid": tid, "args": {"name": name}}


def _span(span: dict[str, Any], pid: int, origin: float) -> dict[str, Any]:
    return {"name": str(span.get("name")), "cat": "xpuruntime", "ph": "X", "pid": pid, "tid": _SPANS_TID,
            "ts": round(float(span.get("start_us", 0)) - origin, 3), "dur": round(float(span.get("dur_us", 0)), 3),
            "args": dict(span.get("args") or {})}


def _engine_start(report: ExecutionReport, origin: float, extent: float) -> float:
    """Engine clocks differ from xpuruntime's: the measured run is the last thing in the profiled span, so the
    engine's events end where that span ends (or start where it starts, when they are longer)."""
    profiled = [s for s in report.spans if s.get("name") in ("profile", "explain")]
    if not profiled:
        return 0.0
    begin = float(profiled[-1]["start_us"]) - origin
    return max(begin, begin + float(profiled[-1].get("dur_us", 0)) - extent)


def _engine_events(report: ExecutionReport) -> list[dict[str, Any]]:
    if report.events:
        first = min(float(e.get("ts", 0)) for e in report.events)
        return [{**e, "ts": float(e.get("ts", 0)) - first} for e in report.events]
    return _synthesised(report.nodes)


def _synthesised(nodes: Sequence[NodeRecord]) -> list[dict[str, Any]]:
    """Per-node times without start times: laid end to end, in the receipt's order."""
    out, clock = [], 0.0
    for node in nodes:
        if node.time_us is None:
            continue
        out.append({"name": node.name, "ts": clock, "dur": node.time_us, "cat": "node", "track": node.provider,
                    "node": node.name, "args": {"synthesised_ts": True}})
        clock += node.time_us
    return out


def _complete(ev: dict[str, Any], pid: int, tid: int, start: float, node: NodeRecord | None,
              evidence: str) -> dict[str, Any]:
    args = dict(ev.get("args") or {})
    if node is not None:
        args.update(_node_args(node), evidence=evidence)
    return {"name": str(ev.get("name")), "cat": str(ev.get("cat") or "engine"), "ph": "X", "pid": pid, "tid": tid,
            "ts": round(start + float(ev.get("ts", 0)), 3), "dur": round(max(float(ev.get("dur", 0)), 0.0), 3),
            "args": args}


def _node_args(node: NodeRecord) -> dict[str, Any]:
    return {"node": node.name, "op_type": node.op_type, "provider": node.provider, "precision": node.precision,
            "kernel": node.kernel, "requested": node.requested, "requested_kernel": node.requested_kernel,
            "honored": node.honored}


def _violation(v: Any, pid: int, start: float) -> dict[str, Any]:
    return {"name": f"{v.kind}: {v.subject}", "cat": "violation", "ph": "i", "s": "p", "pid": pid,
            "tid": _VIOLATIONS_TID, "ts": round(start, 3),
            "args": {"requested": v.requested, "actual": v.actual, "reason": v.reason}}


def _header(report: ExecutionReport) -> dict[str, Any]:
    return {"engine": report.engine, "engine_version": report.engine_version, "device": report.device,
            "policy_hash": report.policy_hash, "fingerprint_hash": report.fingerprint_hash,
            "honored": report.honored, "profiled": report.profiled, "evidence": list(report.evidence),
            "notes": list(report.notes), "violations": len(report.violations), "nodes": len(report.nodes)}


def write_trace(path: str | Path, reports: Sequence[ExecutionReport], labels: Sequence[str] | None = None) -> None:
    """Write the trace of ``reports`` to ``path`` atomically (the folder must exist)."""
    from xpuruntime._io import atomic_write_text

    atomic_write_text(Path(path), trace_json(reports, labels))
