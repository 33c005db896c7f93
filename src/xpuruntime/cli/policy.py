"""CLI group ``policy``: validate, show, compare and hash policy files; print their JSON Schema.

    $ xpuruntime policy validate policy.yaml
    $ xpuruntime policy diff old.yaml new.yaml
    $ xpuruntime policy schema -o policy.schema.json

``policy validate`` exits 1 when any file is invalid, ``policy diff`` when the policies differ (like diff(1)).
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from xpuruntime._io import is_stdout
from xpuruntime.cli._common import (
    SETTINGS,
    WIDE,
    Group,
    JsonFlag,
    add_row,
    cell,
    print_error,
    print_json,
    stdout_console,
    table,
    write_text_output,
)
from xpuruntime.errors import XpuRuntimeError, safe_text
from xpuruntime.policies import Change, Policy

__all__ = ["ORDER", "policy_app", "register"]

#: place in ``xpuruntime --help``: typer lists groups after all commands, so this only puts ``policy`` before ``lock``
ORDER = 20

policy_app = typer.Typer(
    cls=Group, name="policy", no_args_is_help=True, context_settings=SETTINGS,
    help="Validate, show, compare and hash policy files; print their JSON Schema.",
)


class OutputFormat(str, Enum):
    yaml = "yaml"
    json = "json"


PolicyFile = Annotated[Path, typer.Argument(help="A policy file (.yaml, .yml or .json).", metavar="FILE",
                                            show_default=False)]
_PolicyA = Annotated[Path, typer.Argument(help="The first policy file.", metavar="A", show_default=False)]
_PolicyB = Annotated[Path, typer.Argument(help="The second policy file.", metavar="B", show_default=False)]


def _check(path: Path) -> Policy | XpuRuntimeError:
    try:
        return Policy.load(path)
    except XpuRuntimeError as exc:
        return exc


def _validation_record(path: Path, result: Policy | XpuRuntimeError) -> dict[str, Any]:
    if isinstance(result, Policy):
        return {"file": str(path), "ok": True, "hash": result.hash}
    keys = ("reason", "field", "expected", "received", "hint")
    error = {k: getattr(result, k, None) for k in keys} | {"message": str(result)}
    return {"file": str(path), "ok": False, "error": error}


@policy_app.command("validate")
def policy_validate(
    files: Annotated[list[Path], typer.Argument(help="Policy files (.yaml, .yml or .json).", metavar="FILE",
                                                show_default=False)],
    as_json: JsonFlag = False,
) -> None:
    """Check policy files: print 'FILE: ok (hash ...)' for each valid one, the reason for each invalid one.

    Exit status: 0 when every file is valid, 1 when any is invalid or unreadable.
    """
    results = [(path, _check(path)) for path in files]
    if as_json:
        print_json([_validation_record(path, result) for path, result in results])
    else:
        for path, result in results:
            _report_validation(path, result)
    if any(not isinstance(result, Policy) for _, result in results):
        raise typer.Exit(1)


def _report_validation(path: Path, result: Policy | XpuRuntimeError) -> None:
    if isinstance(result, Policy):
        typer.echo(f"{path}: ok (hash {result.short_hash})")
    else:
        print_error(str(result))


@policy_app.command("show")
def policy_show(
    file: Annotated[Path | None, typer.Argument(help="A policy file; omit with --default.", metavar="FILE",
                                                show_default=False)] = None,
    fmt: Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format.")] = OutputFormat.yaml,
    default: Annotated[bool, typer.Option("--default", help="Show the default policy instead of a file.")] = False,
) -> None:
    """Print a policy normalised: canonical kernel names, every execution field spelled out."""
    if (file is None) != default:
        raise typer.BadParameter("give a policy FILE or --default (exactly one)", param_hint="FILE")
    policy = Policy() if default else Policy.load(file)
    typer.echo(policy.dumps(fmt.value), nl=False)


def _diff_record(a: Path, pa: Policy, b: Path, pb: Policy, changes: list[Change]) -> dict[str, Any]:
    return {
        "identical": not changes,
        "a": {"file": str(a), "hash": pa.hash},
        "b": {"file": str(b), "hash": pb.hash},
        "changes": [{"path": c.path, "a": c.old, "b": c.new} for c in changes],
    }


def _print_diff(a: Path, b: Path, changes: list[Change]) -> None:
    console = stdout_console()
    console.print(Text(f"A: {a}\nB: {b}"), soft_wrap=True)
    if console.width < WIDE:  # a three-column table folds every word; one line per side reads better
        lines = (f"{c.path}\n  A: {cell(c.old)}\n  B: {cell(c.new)}" for c in changes)
        return console.print(Text("\n".join(lines)), soft_wrap=True)
    out = table("path", "A", "B")
    for change in changes:
        add_row(out, change.path, change.old, change.new)
    console.print(out)


@policy_app.command("diff")
def policy_diff(a: _PolicyA, b: _PolicyB, as_json: JsonFlag = False) -> None:
    """Compare two policies field by field, after normalisation (aliases and defaults resolved).

    Exit status, like diff(1): 0 when identical (prints 'identical (hash ...)');
    1 when they differ (prints a table of path / A / B);
    1 also when a file cannot be loaded (the reason on stderr); 2 on a usage error.
    """
    pa, pb = Policy.load(a), Policy.load(b)
    changes = pa.diff(pb)
    if as_json:
        print_json(_diff_record(a, pa, b, pb, changes))
    elif not changes:
        typer.echo(f"identical (hash {pa.short_hash})")
    else:
        _print_diff(a, b, changes)
    if changes:
        raise typer.Exit(1)


@policy_app.command("schema")
def policy_schema(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the schema to this file ('-': "
                                                "standard output, the default).", show_default=False)] = None,
) -> None:
    """Print the JSON Schema (draft 2020-12) of policy files, for editors and CI linters."""
    text = json.dumps(Policy.json_schema(), indent=2) + "\n"
    if output is None or is_stdout(output):
        return typer.echo(text, nl=False)
    write_text_output(output, text)
    typer.echo(f"wrote {safe_text(str(output))}")


@policy_app.command("hash")
def policy_hash(file: PolicyFile) -> None:
    """Print the policy's full content hash (SHA-256 of the normalised policy)."""
    typer.echo(Policy.load(file).hash)


def register(app: typer.Typer) -> None:
    """Add the ``policy`` group to the root app."""
    app.add_typer(policy_app, name="policy")
