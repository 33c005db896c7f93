"""Rendering of receipts: plain text for logs and __str__, rich tables for the terminal."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

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
        rows.append((n.name, n.op_type, requested, _short(n.provider) + mark, n.kernel or "-", n.precision or "-",
                     n.evidence, time))
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


def _footer(report: ExecutionReport) -> list[str]:
    if report.honored:
        lines = ["verdict    policy honoured"]
    elif report.violations:
        from xpuruntime.receipts import group_violations

        lines = [f"verdict    {len(report.violations)} violation(s):"]
        lines += [f"  - {line}" for line in group_violations(report.violations)]
    else:
        lines = ["verdict    not shown honoured: nothing has verified it yet"]
    if report.unverified:
        shown = ", ".join(report.unverified[:8]) + (f" and {len(report.unverified) - 8} more"
                                                     if len(report.unverified) > 8 else "")
        lines.append(f"unverified {shown} (run explain(), or build under fallback='error' to verify)")
    return lines + [f"note: {n}" for n in report.notes]


def report_text(report: ExecutionReport, max_rows: int = 60) -> str:
    rows = [_COLUMNS, *_rows(report, max_rows)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS))]
    body = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    if len(report.nodes) > max_rows:
        body.append(f"... {len(report.nodes) - max_rows} more nodes")
    return "\n".join([*_header(report), "", *body, "", *_footer(report)])


def report_rich(report: ExecutionReport, max_rows: int = 60) -> Any:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(*_COLUMNS, title=f"{report.engine} on {report.device}", title_justify="left")
    for row in _rows(report, max_rows):
        style = None if not row[3].endswith(" !") else "bold red"
        table.add_row(*row, style=style)
    if len(report.nodes) > max_rows:
        table.caption = f"... {len(report.nodes) - max_rows} more nodes"
    verdict = Text("\n".join(_footer(report)), style="green" if report.honored else "bold red")
    return Group(Text("\n".join(_header(report))), table, verdict)
