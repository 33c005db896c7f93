"""What every command module shares: the error-handling command group, output helpers, the ``--json`` flag."""

from __future__ import annotations

import dataclasses
import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from xpuruntime.errors import XpuRuntimeError

__all__ = ["SETTINGS", "WIDE", "Group", "JsonFlag", "add_row", "cell", "error_document", "print_error", "print_json",
           "stdout_console", "table"]

#: context settings of every command group (``-h`` as well as ``--help``)
SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"]}
#: below this many columns, wide tables switch to a compact layout
WIDE = 72

JsonFlag = Annotated[bool, typer.Option("--json", help="Print plain JSON on stdout instead of a table.")]


class Group(TyperGroup):
    """A command group that turns any XpuRuntimeError into ``error: ...`` on stderr and exit 1; with ``--json``
    on the command line, stdout also gets the error as a JSON document (:func:`error_document`).

    Example: ``typer.Typer(cls=Group, context_settings=SETTINGS)`` for a sub-app (``xpuruntime lock``).
    """

    def invoke(self, ctx: Any) -> Any:
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
    console.print(Text("error: ", style="bold red"), Text(message), sep="")


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
    return value if isinstance(value, str) else json.dumps(value)
