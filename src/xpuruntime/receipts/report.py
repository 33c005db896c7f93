"""ExecutionReport: the receipt of what was requested and what actually ran.

Every field that says what *ran* is read from the engine's own evidence (ONNX Runtime's
graph assignment and profiling JSON, OpenVINO's runtime model, the torch profiler); the
``evidence`` list names the sources used.

Each requested item (``report.evidence_of``) and each node (``NodeRecord.evidence``) says how it is known, one of
:data:`EVIDENCE`: ``observed`` (read back from the engine), ``configured`` (xpuruntime set the knob; the engine
gives nothing to read back) or ``unverified`` (nothing shows it yet, e.g. per-node precision before a profiled
run). ``honored`` means no violation *and* nothing unverified.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from xpuruntime.errors import PolicyViolationError, PolicyViolationWarning

__all__ = [
    "EVIDENCE",
    "ExecutionReport",
    "NodeRecord",
    "Violation",
    "PolicyViolationWarning",
    "enforce_fallback",
    "group_violations",
]


#: how a receipt knows a claim: read from the engine, set by us with nothing to read back, or not shown yet
EVIDENCE: tuple[str, ...] = ("observed", "configured", "unverified")


@dataclass
class NodeRecord:
    """One node (or layer, or op) of the executed graph."""

    name: str
    op_type: str
    provider: str | None = None  # what actually holds/ran it
    requested: str | None = None  # provider/device that was asked for
    kernel: str | None = None  # kernel/primitive that ran, when the engine says
    requested_kernel: str | None = None  # vocabulary name asked for by the KernelPolicy
    precision: str | None = None  # runtime precision, when the engine says
    time_us: float | None = None  # measured time of one run, when profiled
    calls: int = 0
    #: how this record's placement, kernel and precision are known (one of EVIDENCE); a field left None claims
    #: nothing. ``unverified`` with a requested kernel: the kernel that runs is not known until explain()
    evidence: str = "observed"

    @property
    def honored(self) -> bool:
        return self.requested is None or self.provider == self.requested

    @property
    def unverified(self) -> bool:
        """True when this node carries a request (a kernel) that nothing has shown yet."""
        return self.evidence == "unverified" and self.requested_kernel is not None and self.kernel is None


@dataclass(frozen=True)
class Violation:
    """One way the engine did not do what the policy asked."""

    kind: str  # provider_fallback | precision | kernel | option | engine_unavailable | ...
    subject: str  # node, option or engine the finding is about
    requested: str
    actual: str
    reason: str

    def __str__(self) -> str:
        return f"[{self.kind}] {self.subject}: requested {self.requested}, got {self.actual} ({self.reason})"


@dataclass
class ExecutionReport:
    """What was requested, what actually ran, and every difference between the two.

    >>> report = session.report               # doctest: +SKIP
    >>> report.honored, report.providers_used  # doctest: +SKIP
    (True, ['CPUExecutionProvider'])
    >>> print(report.table())                 # doctest: +SKIP
    """

    engine: str
    device: str
    policy_hash: str
    fingerprint_hash: str
    requested: dict[str, Any] = field(default_factory=dict)  # providers / options as passed to the engine
    nodes: list[NodeRecord] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)
    profiled: bool = False
    notes: list[str] = field(default_factory=list)
    engine_version: str | None = None
    # the engine's own profile events (explain): {"name", "ts", "dur" (us, engine clock), "cat", "track", "node",
    # "args"}; and xpuruntime's own spans: {"name", "start_us" (us since the epoch), "dur_us", "args"}
    events: list[dict[str, Any]] = field(default_factory=list)
    spans: list[dict[str, Any]] = field(default_factory=list)
    #: requested key (``precision``, ``providers``, ...) -> one of EVIDENCE; a key not listed claims nothing
    evidence_of: dict[str, str] = field(default_factory=dict)
    #: per output, from validate() or an accuracy contract: {"output", "max_abs", "max_rel", "finite",
    #: "reference_finite", "rtol", "atol", "reference", "within"}
    accuracy: list[dict[str, Any]] = field(default_factory=list)

    @property
    def unverified(self) -> list[str]:
        """Requested items and nodes that nothing has shown yet (``precision``, ``kernel <node>``)."""
        items = [key for key, level in self.evidence_of.items() if level == "unverified"]
        return items + [f"kernel {n.name}" for n in self.nodes if n.unverified]

    @property
    def honored(self) -> bool:
        """True when no violation was found and nothing requested is unverified."""
        return not self.violations and not self.unverified

    @property
    def providers_used(self) -> list[str]:
        """Providers (or devices) that hold at least one node, most nodes first."""
        counts = Counter(n.provider for n in self.nodes if n.provider)
        return [p for p, _ in counts.most_common()]

    @property
    def total_time_us(self) -> float | None:
        times = [n.time_us for n in self.nodes if n.time_us is not None]
        return sum(times) if times else None

    def add(self, violation: Violation) -> None:
        if violation not in self.violations:
            self.violations.append(violation)

    def with_accuracy(self, validated: ExecutionReport) -> ExecutionReport:
        """A copy of this receipt with the accuracy checks of ``validated`` (a ``validate()`` receipt) folded in.

        >>> shown = session.report.with_accuracy(session.validate())  # doctest: +SKIP
        """
        out = copy.deepcopy(self)
        out.accuracy = [dict(a) for a in validated.accuracy]
        for violation in validated.violations:
            if violation.kind == "accuracy":
                out.add(violation)
        if "accuracy" in validated.evidence_of:
            out.evidence_of["accuracy"] = validated.evidence_of["accuracy"]
        return out

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["honored"] = self.honored
        data["unverified"] = self.unverified
        data["providers_used"] = self.providers_used
        return data

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, default=str)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExecutionReport:
        """The report back from :meth:`to_dict` (derived keys such as ``honored`` are ignored).

        >>> ExecutionReport.from_dict(report.to_dict()) == report  # doctest: +SKIP
        True
        """
        known = {f.name for f in fields(cls)}
        kept = {k: v for k, v in data.items() if k in known}
        node_keys = {f.name for f in fields(NodeRecord)}
        kept["nodes"] = [NodeRecord(**{k: v for k, v in n.items() if k in node_keys}) for n in kept.get("nodes", [])]
        kept["violations"] = [Violation(**v) for v in kept.get("violations", [])]
        return cls(**kept)

    def to_trace(self) -> dict[str, Any]:
        """Chrome/Perfetto trace JSON (a dict): the engine's profile events and xpuruntime's spans.

        >>> json.dump(session.explain(feeds).to_trace(), open("run.trace.json", "w"))  # doctest: +SKIP

        Open it in https://ui.perfetto.dev or chrome://tracing; see :mod:`xpuruntime.receipts.trace`.
        """
        from xpuruntime.receipts.trace import report_trace

        return report_trace(self)

    @staticmethod
    def traces(reports: Sequence[ExecutionReport], labels: Sequence[str] | None = None) -> dict[str, Any]:
        """Several receipts in one trace, one process each (what ``runtime.profiler.profile()`` writes)."""
        from xpuruntime.receipts.trace import reports_trace

        return reports_trace(reports, labels)

    def to_html(self) -> str:
        """One self-contained HTML page (no network fetches): summary, violations, nodes, timeline.

        >>> open("receipt.html", "w").write(session.explain(feeds).to_html())  # doctest: +SKIP
        """
        from xpuruntime.receipts.html import report_html

        return report_html([self])

    def summary(self) -> str:
        said = [f"{len(self.violations)} violation(s)"] if self.violations else []
        said += [f"unverified: {', '.join(self.unverified[:4])}"] if self.unverified else []
        verdict = "honoured" if self.honored else ", ".join(said)
        used = ", ".join(f"{p} x{c}" for p, c in Counter(n.provider for n in self.nodes).most_common())
        return (f"{self.engine} on {self.device}: {len(self.nodes)} nodes [{used}] - policy {self.policy_hash[:12]} "
                f"{verdict}")

    def table(self, max_rows: int = 60) -> str:
        """A plain-text table (no colours) of nodes and violations."""
        from xpuruntime.receipts._render import report_text

        return report_text(self, max_rows=max_rows)

    def __rich__(self) -> Any:
        from xpuruntime.receipts._render import report_rich

        return report_rich(self)

    def __str__(self) -> str:
        return self.table()


def group_violations(violations: list[Violation], limit: int = 8) -> list[str]:
    """One line per (kind, requested, actual, reason), naming up to ``limit`` subjects."""
    groups: dict[tuple[str, str, str, str], list[str]] = {}
    for v in violations:
        groups.setdefault((v.kind, v.requested, v.actual, v.reason), []).append(v.subject)
    lines = []
    for (kind, requested, actual, reason), subjects in groups.items():
        names = ", ".join(subjects[:limit]) + (f" and {len(subjects) - limit} more" if len(subjects) > limit else "")
        count = f"{len(subjects)} x " if len(subjects) > 1 else ""
        lines.append(f"[{kind}] {count}{names}: requested {requested}, got {actual} ({reason})")
    return lines


def enforce_fallback(report: ExecutionReport, fallback: str, *, stacklevel: int = 3) -> None:
    """Apply the fallback rule to a report's violations: raise, warn, or stay silent."""
    if not report.violations or fallback == "allow":
        return
    lines = "\n".join(f"  - {line}" for line in group_violations(report.violations))
    message = f"the {report.engine} engine did not honour the policy on {report.device}:\n{lines}"
    if fallback == "error":
        error = PolicyViolationError(
            message, violations=report.violations,
            hint="install or fix what the reasons name, or set fallback='warn' or 'allow' to accept the fallback")
        error.report = report  # type: ignore[attr-defined]  # the receipt, for `xpuruntime ... --json` on failure
        raise error
    warnings.warn(message, PolicyViolationWarning, stacklevel=stacklevel)
