"""The ``xpuruntime`` command: devices, policies, runs, receipts, kernels and tuning from a shell.

    $ xpuruntime devices --json
    $ xpuruntime policy validate policy.yaml
    $ xpuruntime run model.onnx --policy policy.yaml --random-inputs

Exit status: 0 on success; 1 when an xpuruntime error is raised (``error: ...`` on stderr, no
traceback), when ``policy validate`` finds an invalid file or ``policy diff`` a difference;
2 on a usage error (unknown command, missing argument, bad option). Any other exception is a bug
and keeps its traceback.

Adding commands: add a module to this package (its name not starting with ``_``) that defines
``register(app: typer.Typer) -> None``, adding commands with ``@app.command()`` or a sub-app with
``app.add_typer``. Modules are found by listing the package: there is no list to edit. An optional
module constant ``ORDER`` (an int, default 100) places its commands in ``--help``. Such a module
must not import an engine or torch at import time, and gets the error handling above for free (it
lives in the command group, not in each command).
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Annotated

import typer

from xpuruntime import __version__
from xpuruntime.cli._common import SETTINGS, Group, JsonFlag, print_error, print_json, stdout_console

__all__ = ["JsonFlag", "app", "command_modules", "main", "print_error", "print_json", "stdout_console"]

app = typer.Typer(
    cls=Group, name="xpuruntime", no_args_is_help=True, add_completion=True,
    pretty_exceptions_show_locals=False, context_settings=SETTINGS,
)


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


def command_modules() -> list[ModuleType]:
    """The command modules of this package (every module not starting with ``_``), in ``--help`` order.

    >>> [m.__name__ for m in command_modules()]  # doctest: +SKIP
    ['xpuruntime.cli.environment', 'xpuruntime.cli.inference', 'xpuruntime.cli.compare', ...]
    """
    names = sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))
    modules = [importlib.import_module(f"{__name__}.{name}") for name in names]
    return sorted(modules, key=lambda m: getattr(m, "ORDER", 100))


def main(argv: Sequence[str] | None = None) -> None:
    """Run the ``xpuruntime`` command (the console script and ``python -m xpuruntime``).

    Example::

        >>> main(["policy", "hash", "policy.yaml"])  # doctest: +SKIP
    """
    try:
        app(args=list(argv) if argv is not None else None, prog_name="xpuruntime")
    except SystemExit as exc:  # an OpenVINO run that cannot be stopped may make the process end itself: same status
        engine = sys.modules.get("xpuruntime.inference.engines.openvino")
        if engine is not None:
            engine.note_exit_status(exc.code)
        raise


for _module in command_modules():
    _module.register(app)
del _module
