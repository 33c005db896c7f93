"""CLI commands about this machine: ``devices`` and ``fingerprint``.

    $ xpuruntime devices --json
    $ xpuruntime fingerprint
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from xpuruntime.cli._common import WIDE, JsonFlag, add_row, print_json, stdout_console, table

if TYPE_CHECKING:
    from xpuruntime.runtime.devices import Device
    from xpuruntime.runtime.fingerprint import Fingerprint

__all__ = ["ORDER", "register"]

#: first in ``xpuruntime --help``
ORDER = 10

_FLAG_NAMES = ("fp16", "bf16", "int8", "fp8")


# ----------------------------------------------------------------------------- devices


def _flags(d: Device) -> tuple[bool, ...]:
    return d.supports_fp16, d.supports_bf16, d.supports_int8, d.supports_fp8


def _capability(d: Device) -> str | None:
    return None if d.compute_capability is None else "{}.{}".format(*d.compute_capability)


def _devices_table(found: Sequence[Device], tick: str) -> Table:
    out = table("spec", "kind", "name", "memory GB", "capability", *_FLAG_NAMES)
    for d in found:
        add_row(out, d.spec, d.kind, d.name, d.total_memory_gb, _capability(d), *(tick if f else "" for f in _flags(d)))
    return out


def _devices_compact(found: Sequence[Device]) -> Table:
    out = table("spec", "details")
    for d in found:
        memory = None if d.total_memory_gb is None else f"{d.total_memory_gb} GB"
        facts = [d.kind, memory, _capability(d) and f"capability {_capability(d)}"]
        flags = " ".join(n for n, f in zip(_FLAG_NAMES, _flags(d)) if f) or "no fp16/bf16/int8/fp8"
        add_row(out, d.spec, "\n".join((d.name, ", ".join(f for f in facts if f), flags)))
    return out


def _tick(console: Console) -> str:
    return "✓" if console.encoding.lower().startswith("utf") else "yes"


def devices_cmd(as_json: JsonFlag = False) -> None:
    """List the devices xpuruntime can see: the CPU, CUDA GPUs, OpenVINO GPUs and NPUs."""
    from xpuruntime.runtime.devices import discovery_notes, get_all_devices

    found = get_all_devices()
    if as_json:
        return print_json([d.to_dict() for d in found])
    console = stdout_console()
    console.print(_devices_table(found, _tick(console)) if console.width >= WIDE else _devices_compact(found))
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
    out = table("field", "value")
    for name in ("hash", "python", "os", "machine", "driver", "cuda", "cudnn"):
        add_row(out, name, getattr(fp, name))
    for lib, version in fp.libraries.items():
        add_row(out, lib, version)
    for entry in fp.devices:
        add_row(out, f"device {entry.get('spec')}", _device_summary(entry))
    return out


def fingerprint_cmd(as_json: JsonFlag = False) -> None:
    """Show the environment results depend on: driver, CUDA, cuDNN, libraries, devices, and its hash."""
    from xpuruntime.runtime.fingerprint import fingerprint

    fp = fingerprint()
    if as_json:
        return typer.echo(fp.to_json())
    stdout_console().print(_fingerprint_table(fp))


def register(app: typer.Typer) -> None:
    """Add ``devices`` and ``fingerprint`` to the root app."""
    app.command("devices")(devices_cmd)
    app.command("fingerprint")(fingerprint_cmd)
