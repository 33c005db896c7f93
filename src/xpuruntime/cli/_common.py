"""What every command module shares: the error-handling command group, output helpers, the ``--json`` flag."""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from xpuruntime.errors import InputError, XpuRuntimeError, safe_text

__all__ = ["SETTINGS", "WIDE", "Group", "JsonFlag", "add_row", "cell", "check_output", "error_document",
           "print_error", "print_json", "print_warnings", "stdout_console", "table", "write_text_output"]

#: context settings of every command group (``-h`` as well as ``--help``)
SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"]}
#: below this many columns, wide tables switch to a compact layout
WIDE = 72

JsonFlag = Annotated[bool, typer.Option("--json", help="Print plain JSON on stdout instead of a table.")]


class Group(TyperGroup):
    """A command group that turns any XpuRuntimeError into ``error: ...`` on stderr and exit 1 (with ``--json`` on
    the command line, stdout also gets the error as a JSON document, :func:`error_document`), and prints every
    warning raised while the command ran (a rebuilt cache entry, an unusable ``cache_dir``, a skipped plugin) as
    ``warning: ...`` on stderr, once each.

    Example: ``typer.Typer(cls=Group, context_settings=SETTINGS)`` for a sub-app (``xpuruntime lock``).
    """

    def invoke(self, ctx: Any) -> Any:
        if getattr(ctx, "_xrt_warnings", False) or ctx.parent is not None:  # the root group records for all
            return self._invoke(ctx)
        ctx._xrt_warnings = True
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                return self._invoke(ctx)
            finally:
                print_warnings(caught)

    def _invoke(self, ctx: Any) -> Any:
        raw = [*getattr(ctx, "_protected_args", []), *ctx.args]  # click clears them before the subcommand runs
        try:
            return super().invoke(ctx)
        except XpuRuntimeError as exc:
            if "--json" in raw and not ctx.meta.get("xpuruntime.json_error"):
                ctx.meta["xpuruntime.json_error"] = True  # nested groups print it once
                print_json(error_document(exc))
            print_error(str(exc))
            raise typer.Exit(1) from None


def error_document(exc: XpuRuntimeError) -> dict[str, Any]:
    """An error as ``--json`` prints it: type, message, expected, received, hint, violations and the receipt
    (the ExecutionReport's dict when the error carries one, else None).

    Example: ``error_document(InputError("bad", expected="x"))["error"] == "InputError"``.
    """
    report = getattr(exc, "report", None)
    violations = [dataclasses.asdict(v) if dataclasses.is_dataclass(v) else str(v)
                  for v in getattr(exc, "violations", [])]
    return {"error": type(exc).__name__, "message": exc.reason, "expected": exc.expected, "received": exc.received,
            "hint": exc.hint, "violations": violations,
            "receipt": report.to_dict() if hasattr(report, "to_dict") else None}


_SHOWN = (UserWarning, RuntimeWarning, ResourceWarning)  # not Deprecation/Pending/Import/Syntax: not the user's


def print_warnings(caught: list[warnings.WarningMessage]) -> None:
    """Print each recorded warning once as ``warning: ...`` on stderr (control characters escaped).

    Example: ``with warnings.catch_warnings(record=True) as caught: ...; print_warnings(caught)``.
    """
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    seen: set[str] = set()
    for w in caught:
        text = str(w.message)
        if issubclass(w.category, _SHOWN) and text not in seen:
            seen.add(text)
            console.print(Text("warning: ", style="bold yellow"), Text(safe_text(text, newlines=True)), sep="")


def stdout_console() -> Console:
    """A rich console on the current stdout, for tables and human-readable text (never for JSON).

    Example: ``stdout_console().print(table)``.
    """
    return Console(highlight=False)


def print_error(message: str) -> None:
    """Print ``error: message`` on stderr (red on a terminal), without wrapping or markup.

    Example: ``print_error("cannot read policy.yaml")``.
    """
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    console.print(Text("error: ", style="bold red"), Text(safe_text(message, newlines=True)), sep="")


def print_json(data: Any) -> None:
    """Print ``data`` as indented, plain JSON on stdout.

    Example: ``print_json({"ok": True})``.
    """
    typer.echo(json.dumps(data, indent=2))


def table(*headers: str) -> Table:
    """An edgeless table with bold headers whose cells fold rather than being cut.

    Example: ``add_row(table("field", "value"), "hash", "ab12")``.
    """
    out = Table(show_edge=False, header_style="bold")
    for header in headers:
        out.add_column(header, overflow="fold")
    return out


def add_row(to: Table, *cells: Any) -> None:
    """Add a row of plain-text cells (no markup); None prints as ``-``, non-strings as JSON."""
    to.add_row(*(Text(cell(c)) for c in cells))


def cell(value: Any) -> str:
    """One table cell as text: ``-`` for None, strings as they are, anything else as JSON."""
    if value is None:
        return "-"
    return safe_text(value) if isinstance(value, str) else json.dumps(value)


def check_output(path: str | os.PathLike[str] | None, option: str = "--output", *, stdout: bool = False) -> None:
    """Check an output target before any long work: ``-`` (where ``stdout``), else a new file or a regular file in
    an existing folder. ``UnsafePathError`` for a folder, FIFO, device or symlink; ``InputError`` otherwise.

    Example: ``check_output(args.output, "--output", stdout=True)`` at the top of a command.
    """
    from xpuruntime._io import check_write_target, is_stdout

    if path is None:
        return
    if is_stdout(path):
        if stdout:
            return
        raise InputError(f"{option} cannot be standard output here", expected="a file name", received="-")
    name = os.fspath(path)
    if not name or "\0" in name:
        raise InputError(f"{option} is not a usable file name", expected="a file name", received=safe_text(repr(name)))
    check_write_target(path)
    parent = Path(path).parent
    if not parent.is_dir():
        raise InputError(f"the folder of {option} does not exist", expected="an existing folder",
                         received=safe_text(str(parent)), hint=f"create it first: mkdir -p {safe_text(str(parent))}")


def write_text_output(path: str | os.PathLike[str], text: str, option: str = "--output") -> None:
    """Write a command's text output through :func:`xpuruntime._io.write_output` (``-`` is stdout); I/O failures
    become an ``XpuRuntimeError`` naming the file.

    Example: ``write_text_output(output, json.dumps(schema))``.
    """
    from xpuruntime._io import write_output

    check_output(path, option, stdout=True)
    try:
        write_output(path, text)
    except OSError as exc:
        if isinstance(exc, XpuRuntimeError):
            raise
        raise XpuRuntimeError(f"cannot write {safe_text(os.fspath(path))}", expected="a writable file path",
                              received=exc.strerror or str(exc)) from None

