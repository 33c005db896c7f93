"""CLI: ``report`` (a receipt JSON as an HTML page or a trace) and the ``--trace`` / ``--html`` outputs.

    $ xpuruntime explain model.onnx --trace run.trace.json --html receipt.html
    $ xpuruntime run model.onnx --random-inputs --json > out.json
    $ xpuruntime report out.json -o receipt.html --trace run.trace.json

``report`` reads any receipt JSON the CLI writes: a receipt (``report.json`` of ``run --output``), the
``--json`` output of ``run``/``explain`` (``{"report": ...}``), of ``compare`` (``{"runs": [...]}``) or of
``demo`` (a list). Commands that make receipts take :data:`TraceOpt` and :data:`HtmlOpt` and call
:func:`write_outputs` (``bench`` included, when it exists).
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from xpuruntime.errors import InputError, XpuRuntimeError

__all__ = ["register", "write_outputs", "load_receipts", "TraceOpt", "HtmlOpt", "MAX_RECEIPT_BYTES"]

MAX_RECEIPT_BYTES = 512 * 1024**2

TraceOpt = Annotated[Optional[Path], typer.Option(
    "--trace", help="Write a Chrome/Perfetto trace (JSON) of the receipt: open it in ui.perfetto.dev.",
    show_default=False)]
HtmlOpt = Annotated[Optional[Path], typer.Option(
    "--html", help="Write the receipt as one self-contained HTML page.", show_default=False)]


def write_outputs(reports: Any, trace: Path | None = None, html: Path | None = None,
                  labels: Sequence[str] | None = None) -> list[Path]:
    """Write the trace and/or HTML page of one receipt or several (``compare``); returns the files written.

    >>> write_outputs(session.explain(feeds), trace=Path("run.trace.json"), html=Path("receipt.html"))  # doctest: +SKIP

    Each target must be a new file or a regular file (never a link, folder or device) in an existing folder;
    an existing file keeps its permissions. Messages go to stderr, so ``--json`` output stays clean.
    """
    from xpuruntime.receipts.html import report_html
    from xpuruntime.receipts.trace import trace_json

    reports = list(reports) if isinstance(reports, (list, tuple)) else [reports]
    written = []
    for path, render in ((trace, lambda: trace_json(reports, labels)), (html, lambda: report_html(reports, labels))):
        if path is not None:
            _write(Path(path), render())
            written.append(Path(path))
            typer.echo(f"wrote {path}", err=True)
    return written


def _write(path: Path, text: str) -> None:
    from xpuruntime._io import atomic_write_text

    mode = 0o644
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise XpuRuntimeError(f"will not write over {path}: it is not a regular file", expected="a new file or a "
                              "regular file", received=_kind(st.st_mode), hint="choose another file name")
    if st is not None:
        mode = stat.S_IMODE(st.st_mode)
    if not path.parent.is_dir():
        raise XpuRuntimeError("the folder to write to does not exist", expected="an existing folder",
                              received=str(path.parent), hint=f"create it first: mkdir -p {path.parent}")
    try:
        atomic_write_text(path, text, mode=mode)
    except OSError as exc:
        raise XpuRuntimeError(f"cannot write {path}", expected="a writable file path",
                              received=exc.strerror or str(exc)) from None


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO")):
        if test(mode):
            return name
    return "a special file"


def load_receipts(path: Path) -> tuple[list[Any], list[str]]:
    """Receipts and their labels from a receipt JSON file (see the module notes for the shapes read).

    >>> reports, labels = load_receipts(Path("report.json"))   # doctest: +SKIP
    """
    from xpuruntime._io import read_bounded

    try:
        data = json.loads(read_bounded(path, MAX_RECEIPT_BYTES))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read receipt {path}", expected=f"a JSON file written by xpuruntime (at most "
                         f"{MAX_RECEIPT_BYTES // 1024**2} MiB)", received=str(exc)) from None
    pairs = _receipt_dicts(data)
    if not pairs:
        raise InputError(f"{path} holds no receipt", expected="a receipt (keys engine, device, nodes, ...), or the "
                         "--json output of run, explain, compare or demo", received=_shape(data))
    return [_report(d, path) for _, d in pairs], [label for label, _ in pairs]


def _receipt_dicts(data: Any) -> list[tuple[str, dict[str, Any]]]:
    if isinstance(data, list):
        return [p for item in data for p in _receipt_dicts(item)]
    if not isinstance(data, dict):
        return []
    if "engine" in data and "nodes" in data:
        return [(f"{data.get('engine')} on {data.get('device')}", data)]
    if isinstance(data.get("runs"), list):
        return [(str(run.get("label", i)), run["report"]) for i, run in enumerate(data["runs"])
                if isinstance(run, dict) and isinstance(run.get("report"), dict)]
    if isinstance(data.get("report"), dict):
        label = data.get("case") or data.get("label")
        return [(label or f"{data['report'].get('engine')} on {data['report'].get('device')}", data["report"])]
    return []


def _report(data: dict[str, Any], path: Path) -> Any:
    from xpuruntime.receipts import ExecutionReport

    try:
        return ExecutionReport.from_dict(data)
    except (TypeError, KeyError, ValueError) as exc:
        raise InputError(f"{path}: a malformed receipt", expected="a receipt as xpuruntime writes it",
                         received=str(exc)) from None


def _shape(data: Any) -> str:
    return f"an object with keys {sorted(data)[:8]}" if isinstance(data, dict) else type(data).__name__


def register(app: typer.Typer) -> None:
    """Add ``report`` to the root app."""

    @app.command("report")
    def report_cmd(
        receipt: Annotated[Path, typer.Argument(help="A receipt JSON (report.json, or run/explain/compare --json).",
                                                metavar="RECEIPT.json", show_default=False)],
        output: Annotated[Optional[Path], typer.Option("--output", "-o", help="The HTML page to write.",
                                                       show_default=False)] = None,
        trace: TraceOpt = None,
    ) -> None:
        """Turn a receipt JSON into a self-contained HTML page (-o) and/or a Perfetto trace (--trace)."""
        if output is None and trace is None:
            raise typer.BadParameter("give -o FILE.html and/or --trace FILE.json", param_hint="-o")
        reports, labels = load_receipts(receipt)
        write_outputs(reports, trace=trace, html=output, labels=labels)
