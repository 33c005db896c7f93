"""The ``xpuruntime`` command: devices, the environment fingerprint and policy files from a shell.

    $ xpuruntime devices --json
    $ xpuruntime policy validate policy.yaml
    $ xpuruntime policy diff old.yaml new.yaml

Exit status: 0 on success; 1 when an xpuruntime error is raised (``error: ...`` on stderr, no
traceback), when ``policy validate`` finds an invalid file or ``policy diff`` a difference;
2 on a usage error (unknown command, missing argument, bad option). Any other exception is a bug
and keeps its traceback.

Adding commands: write a module that defines ``register(app: typer.Typer) -> None`` (adding
commands with ``@app.command()`` or a sub-app with ``app.add_typer``) and name it in
:data:`COMMAND_MODULES`. Such a module must not import an engine or torch at import time, and
gets the error handling above for free (it lives in the command group, not in each command).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from xpuruntime import __version__
from xpuruntime._io import atomic_write_text
from xpuruntime.errors import XpuRuntimeError
from xpuruntime.policies import Change, Policy

if TYPE_CHECKING:
    from xpuruntime.runtime.devices import Device
    from xpuruntime.runtime.fingerprint import Fingerprint

__all__ = [
    "COMMAND_MODULES",
    "JsonFlag",
    "app",
    "main",
    "policy_app",
    "print_error",
    "print_json",
    "stdout_console",
]

#: Modules that add commands to :data:`app`; each defines ``register(app)``.
COMMAND_MODULES: tuple[str, ...] = ("xpuruntime.cli_inference", "xpuruntime.cli_compare", "xpuruntime.cli_kernels",
                                     "xpuruntime.cli_bench")


class _Group(TyperGroup):
    """A command group that turns any XpuRuntimeError into ``error: ...`` on stderr and exit 1."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except XpuRuntimeError as exc:
            print_error(str(exc))
            raise typer.Exit(1) from None


_SETTINGS = {"help_option_names": ["-h", "--help"]}

app = typer.Typer(
    cls=_Group, name="xpuruntime", no_args_is_help=True, add_completion=False,
    pretty_exceptions_show_locals=False, context_settings=_SETTINGS,
)
policy_app = typer.Typer(
    cls=_Group, name="policy", no_args_is_help=True, context_settings=_SETTINGS,
    help="Validate, show, compare and hash policy files; print their JSON Schema.",
)
app.add_typer(policy_app, name="policy")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print plain JSON on stdout instead of a table.")]


# ----------------------------------------------------------------------------- output helpers


def stdout_console() -> Console:
    """A rich console on the current stdout, for tables and human-readable text (never for JSON)."""
    return Console(highlight=False)


def print_error(message: str) -> None:
    """Print ``error: message`` on stderr (red on a terminal), without wrapping or markup."""
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    console.print(Text("error: ", style="bold red"), Text(message), sep="")


def print_json(data: Any) -> None:
    """Print ``data`` as indented, plain JSON on stdout."""
    typer.echo(json.dumps(data, indent=2))


def _table(*headers: str) -> Table:
    table = Table(show_edge=False, header_style="bold")
    for header in headers:
        table.add_column(header, overflow="fold")
    return table


def _row(table: Table, *cells: Any) -> None:
    table.add_row(*(Text(_cell(c)) for c in cells))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return value if isinstance(value, str) else json.dumps(value)


# ----------------------------------------------------------------------------- root


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"xpuruntime {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_show_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Execution control plane for GPUs and NPUs: policies as code, applied to ONNX Runtime,
    OpenVINO and PyTorch, with receipts of what actually ran.

    Exit status: 0 success, 1 error (message on stderr), 2 usage error.
    """


# ----------------------------------------------------------------------------- devices


_FLAG_NAMES = ("fp16", "bf16", "int8", "fp8")
_WIDE = 72  # below this many columns the devices table becomes two columns: spec and details


def _flags(d: Device) -> tuple[bool, ...]:
    return d.supports_fp16, d.supports_bf16, d.supports_int8, d.supports_fp8


def _capability(d: Device) -> str | None:
    return None if d.compute_capability is None else "{}.{}".format(*d.compute_capability)


def _devices_table(found: Sequence[Device], tick: str) -> Table:
    table = _table("spec", "kind", "name", "memory GB", "capability", *_FLAG_NAMES)
    for d in found:
        _row(table, d.spec, d.kind, d.name, d.total_memory_gb, _capability(d), *(tick if f else "" for f in _flags(d)))
    return table


def _devices_compact(found: Sequence[Device]) -> Table:
    table = _table("spec", "details")
    for d in found:
        memory = None if d.total_memory_gb is None else f"{d.total_memory_gb} GB"
        facts = [d.kind, memory, _capability(d) and f"capability {_capability(d)}"]
        flags = " ".join(n for n, f in zip(_FLAG_NAMES, _flags(d)) if f) or "no fp16/bf16/int8/fp8"
        _row(table, d.spec, "\n".join((d.name, ", ".join(f for f in facts if f), flags)))
    return table


def _tick(console: Console) -> str:
    return "✓" if console.encoding.lower().startswith("utf") else "yes"


@app.command("devices")
def devices_cmd(as_json: JsonFlag = False) -> None:
    """List the devices xpuruntime can see: the CPU, CUDA GPUs, OpenVINO GPUs and NPUs."""
    from xpuruntime.runtime.devices import discovery_notes, get_all_devices

    found = get_all_devices()
    if as_json:
        return print_json([d.to_dict() for d in found])
    console = stdout_console()
    console.print(_devices_table(found, _tick(console)) if console.width >= _WIDE else _devices_compact(found))
    for family, notes in discovery_notes().items():
        for note in notes:
            console.print(Text(f"{family}: {note}", style="dim"))


# ----------------------------------------------------------------------------- fingerprint


def _device_summary(entry: dict[str, Any]) -> str:
    parts = [str(entry.get("name"))]
    if entry.get("total_memory"):
        parts.append(f"{entry['total_memory'] / 1024**3:.1f} GB")
    if entry.get("compute_capability"):
        parts.append("sm_{}{}".format(*entry["compute_capability"]))
    return ", ".join(parts)


def _fingerprint_table(fp: Fingerprint) -> Table:
    table = _table("field", "value")
    for name in ("hash", "python", "os", "machine", "driver", "cuda", "cudnn"):
        _row(table, name, getattr(fp, name))
    for lib, version in fp.libraries.items():
        _row(table, lib, version)
    for entry in fp.devices:
        _row(table, f"device {entry.get('spec')}", _device_summary(entry))
    return table


@app.command("fingerprint")
def fingerprint_cmd(as_json: JsonFlag = False) -> None:
    """Show the environment results depend on: driver, CUDA, cuDNN, libraries, devices, and its hash."""
    from xpuruntime.runtime.fingerprint import fingerprint

    fp = fingerprint()
    if as_json:
        return typer.echo(fp.to_json())
    stdout_console().print(_fingerprint_table(fp))


# ----------------------------------------------------------------------------- policy


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
    if console.width < _WIDE:  # a three-column table folds every word; one line per side reads better
        lines = (f"{c.path}\n  A: {_cell(c.old)}\n  B: {_cell(c.new)}" for c in changes)
        return console.print(Text("\n".join(lines)), soft_wrap=True)
    table = _table("path", "A", "B")
    for change in changes:
        _row(table, change.path, change.old, change.new)
    console.print(table)


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


def _write_output(path: Path, text: str) -> None:
    if path.is_dir():
        raise XpuRuntimeError("cannot write over a directory", expected="a file path", received=f"{path} (a directory)")
    if not path.parent.is_dir():
        raise XpuRuntimeError("the folder to write to does not exist", expected="an existing folder",
                              received=str(path.parent), hint=f"create it first: mkdir -p {path.parent}")
    try:
        atomic_write_text(path, text)
    except OSError as exc:
        raise XpuRuntimeError(f"cannot write {path}", expected="a writable file path",
                              received=exc.strerror or str(exc)) from None


@policy_app.command("schema")
def policy_schema(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the schema to this file.",
                                                show_default=False)] = None,
) -> None:
    """Print the JSON Schema (draft 2020-12) of policy files, for editors and CI linters."""
    text = json.dumps(Policy.json_schema(), indent=2) + "\n"
    if output is None:
        return typer.echo(text, nl=False)
    _write_output(output, text)
    typer.echo(f"wrote {output}")


@policy_app.command("hash")
def policy_hash(file: PolicyFile) -> None:
    """Print the policy's full content hash (SHA-256 of the normalised policy)."""
    typer.echo(Policy.load(file).hash)


# ----------------------------------------------------------------------------- entry point


def _register_command_modules() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the ``xpuruntime`` command (the console script and ``python -m xpuruntime``).

    Example::

        >>> main(["policy", "hash", "policy.yaml"])  # doctest: +SKIP
    """
    app(args=list(argv) if argv is not None else None, prog_name="xpuruntime")


_register_command_modules()
