"""Rendering of receipts: plain text for logs and __str__, rich tables for the terminal."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from xpuruntime.errors import safe_text

if TYPE_CHECKING:
    from xpuruntime.receipts import ExecutionReport

_COLUMNS = ("node", "op", "requested", "ran on", "kernel", "precision", "evidence", "time us")


def _short(provider: str | None) -> str:
    return (provider or "?").removesuffix("ExecutionProvider")


def _g(value: Any) -> str:
    return "-" if value is None else f"{value:.3g}"


def _rows(report: ExecutionReport, max_rows: int) -> list[tuple[str, ...]]:
    rows = []
    for n in report.nodes[:max_rows]:
        requested = " / ".join(x for x in (_short(n.requested) if n.requested else None, n.requested_kernel) if x) or "-"
        time = f"{n.time_us:.1f}" if n.time_us is not None else "-"
        mark = "" if n.honored else " !"
        row = (n.name, n.op_type, requested, _short(n.provider) + mark, n.kernel or "-", n.precision or "-", n.evidence,
               time)
        rows.append(tuple(safe_text(c) for c in row))  # names come from the model: no terminal escapes
    return rows


def _header(report: ExecutionReport) -> list[str]:
    counts = Counter(n.provider for n in report.nodes)
    lines = [
        f"engine     {report.engine} {report.engine_version or ''}".rstrip(),
        f"device     {report.device}",
        f"policy     {report.policy_hash[:12]}   fingerprint {report.fingerprint_hash[:12]}",
        f"providers  requested {report.requested.get('providers', '-')}; ran "
        + (", ".join(f"{p} ({c} nodes)" for p, c in counts.most_common()) or "-"),
        f"evidence   {', '.join(report.evidence) or '-'}{' (profiled run)' if report.profiled else ''}",
    ]
    if report.evidence_of:
        lines.append("claims     " + ", ".join(f"{k} {v}" for k, v in report.evidence_of.items()))
    for a in report.accuracy:
        lines.append(f"accuracy   {a['output']}: max abs {_g(a.get('max_abs'))}, max rel {_g(a.get('max_rel'))} vs "
                     f"{a.get('reference')}" + ("" if a.get("finite", True) else " (NOT finite)"))
    if report.total_time_us is not None:
        lines.append(f"time       {report.total_time_us:.1f} us summed over nodes")
    return lines


def _footer(report: ExecutionReport, limit: int | None = 8) -> list[str]:
    if report.honored:
        lines = ["verdict    policy honoured"]
    elif report.violations:
        lines = [f"verdict    {len(report.violations)} violation(s):", *_grouped(report, limit)]
    else:
        lines = ["verdict    not shown honoured: nothing has verified it yet"]
    if report.unverified:
        shown = ", ".join(report.unverified[:8]) + (f" and {len(report.unverified) - 8} more"
                                                     if len(report.unverified) > 8 else "")
        lines.append(f"unverified {shown} (run explain(), or build under fallback='error' to verify)")
    return lines + [f"note: {n}" for n in report.notes]


def _grouped(report: ExecutionReport, limit: int | None) -> list[str]:
    """Violations grouped by kind, requested, actual and reason, with a count; the nodes listed under each
    (``limit`` of them, all with None)."""
    groups: dict[tuple[str, str, str, str], list[str]] = {}
    for v in report.violations:
        groups.setdefault((v.kind, v.requested, v.actual, v.reason), []).append(v.subject)
    lines = []
    for (kind, requested, actual, reason), subjects in groups.items():
        lines.append(f"  - [{kind}] {len(subjects)} x requested {requested}, got {actual} ({reason})")
        shown = subjects if limit is None else subjects[:limit]
        lines += [f"      {s}" for s in shown]
        if len(shown) < len(subjects):
            lines.append(f"      ... and {len(subjects) - len(shown)} more (--all shows every one)")
    return lines


def report_text(report: ExecutionReport, max_rows: int = 60, limit: int | None = 8) -> str:
    rows = [_COLUMNS, *_rows(report, max_rows)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS))]
    body = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    if len(report.nodes) > max_rows:
        body.append(f"... {len(report.nodes) - max_rows} more nodes")
    return "\n".join(safe_text(line) for line in [*_header(report), "", *body, "", *_footer(report, limit)])


def report_rich(report: ExecutionReport, max_rows: int = 60, limit: int | None = 8) -> Any:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(*_COLUMNS, title=Text(safe_text(f"{report.engine} on {report.device}")), title_justify="left")
    for row in _rows(report, max_rows):
        style = None if not row[3].endswith(" !") else "bold red"
        table.add_row(*(Text(c) for c in row), style=style)  # Text: a name like "[bold]" is not markup
    if len(report.nodes) > max_rows:
        table.caption = f"... {len(report.nodes) - max_rows} more nodes (--all shows every one)"
    verdict = Text("\n".join(map(safe_text, _footer(report, limit))), style="green" if report.honored else "bold red")
    return Group(Text("\n".join(map(safe_text, _header(report)))), table, verdict)
