"""CLI command ``compare``: run one model on several engines with the same inputs and compare the outputs.

    $ xpuruntime compare model.onnx --engines onnxruntime,openvino
    $ xpuruntime compare model.onnx --engines onnxruntime@cpu,openvino@gpu --input x=x.npy --json
    $ xpuruntime compare model.onnx --engines onnxruntime,onnxrt --engine-policy onnxrt=int8.yaml

Exit status: 0 when every output agrees within the tolerance, 1 when any differs (each difference is
named on stderr: output, engines, how many elements, by how much) or on an error, 2 on a usage error.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.text import Text

from xpuruntime.cli._common import check_output, print_warnings
from xpuruntime.cli.inference import AllOpt, DimsOpt, IntRangeOpt, RandomInputs, ShapesOpt
from xpuruntime.cli.report import HtmlOpt, TraceOpt, write_outputs
from xpuruntime.errors import InputError, safe_text

__all__ = ["ORDER", "register"]

ORDER = 40  #: place in ``xpuruntime --help`` (see xpuruntime.cli)

_Model = Annotated[Path, typer.Argument(help="Path to an .onnx model.", show_default=False)]
_Engines = Annotated[str, typer.Option(
    "--engines", "-e", show_default=False,
    help="Comma-separated engines, each NAME or NAME@DEVICE; the first is the reference.")]
_PolicyOpt = Annotated[Optional[Path], typer.Option("--policy", "-p", help="Policy file for every engine.")]
_EnginePolicy = Annotated[Optional[list[str]], typer.Option(
    "--engine-policy", help="ENGINE=FILE: a policy merged over --policy for one engine; repeat per engine.")]
_Device = Annotated[str, typer.Option("--device", "-d", help="Device for engines given without @DEVICE.")]
_Inputs = Annotated[Optional[list[str]], typer.Option(
    "--input", "-i", help="NAME=FILE.npy; repeat per input. Without it, seeded random inputs.")]
_Rtol = Annotated[float, typer.Option("--rtol", help="Relative tolerance (numpy allclose).", min=0.0)]
_Atol = Annotated[float, typer.Option("--atol", help="Absolute tolerance (numpy allclose).", min=0.0)]
_Seed = Annotated[int, typer.Option("--seed", help="Seed of the random inputs.")]
_Json = Annotated[bool, typer.Option("--json", help="Print plain JSON on stdout instead of tables.")]


def _engine_policies(items: list[str]) -> dict[str, Path]:
    policies: dict[str, Path] = {}
    for item in items:
        label, sep, path = item.partition("=")
        if not sep or not label or not path:
            raise InputError("malformed --engine-policy", expected="ENGINE=FILE, e.g. openvino=int8.yaml",
                             received=repr(item))
        policies[label] = Path(path)
    return policies


def _compare(model: Path, engines: str, policy: Path | None, engine_policy: list[str] | None, device: str,
             inputs: list[str] | None, rtol: float, atol: float, seed: int, as_json: bool,
             trace: Path | None = None, html: Path | None = None, shapes: RandomInputs | None = None,
             show_all: bool = False, validate: bool = False) -> None:
    import dataclasses

    from xpuruntime.cli import print_json
    from xpuruntime.cli.inference import model_feeds, parse_input_args
    from xpuruntime.inference.compare import compare

    check_output(trace, "--trace")
    check_output(html, "--html")
    shapes = shapes or RandomInputs(None, None, None, seed)
    feeds = model_feeds(model, shapes, parse_input_args(inputs or []), policy)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = compare(model, engines, feeds=feeds, rtol=rtol, atol=atol, device=device, policy=policy,
                         policies=_engine_policies(engine_policy or []), seed=seed, validate=validate)
    result = dataclasses.replace(result, random_inputs=any(d["source"] == "random" for d in shapes.described))
    print_warnings(caught)
    write_outputs([r.report for r in result.runs], trace=trace, html=html, labels=[r.label for r in result.runs])
    if as_json:
        print_json({**result.to_dict(), **shapes.to_dict()})
    else:
        _print_result(result, shapes, show_all)
    if not result.passed:
        _print_differences(result)
        raise typer.Exit(1)


def _print_result(result: Any, shapes: RandomInputs, show_all: bool) -> None:
    from xpuruntime.cli import stdout_console
    from xpuruntime.receipts._render import report_rich

    console = stdout_console()
    console.print(Text("\n".join(shapes.lines())))
    if not show_all:
        console.print(result)
        return
    for run in result.runs:
        console.print(report_rich(run.report, max_rows=len(run.report.nodes), limit=None))
    console.print(result)


def _print_differences(result: Any) -> None:
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    for c in result.failures:
        console.print(Text("differs: ", style="bold red"), Text(safe_text(c.summary())), sep="")


def register(app: typer.Typer) -> None:
    """Add ``compare`` to the root app."""

    @app.command("compare")
    def compare_cmd(model: _Model, engines: _Engines, policy: _PolicyOpt = None, engine_policy: _EnginePolicy = None,
                    device: _Device = "cpu", input: _Inputs = None, rtol: _Rtol = 1e-3, atol: _Atol = 1e-4,
                    seed: _Seed = 0, as_json: _Json = False, trace: TraceOpt = None, html: HtmlOpt = None,
                    dim: DimsOpt = None, shape: ShapesOpt = None, int_range: IntRangeOpt = None,
                    show_all: AllOpt = False,
                    validate: Annotated[bool, typer.Option("--validate", help="Also check each engine against its "
                                                           "own reference run (see run --validate).")] = False) -> None:
        """Run a model on several engines with the same inputs; exit 1 when any output differs.

        Each output of each engine is checked against the first engine with numpy's allclose rule
        (|actual - reference| <= atol + rtol * |reference|); the receipts of every engine are printed too.
        """
        _compare(model, engines, policy, engine_policy, device, input, rtol, atol, seed, as_json, trace, html,
                 RandomInputs(dim, shape, int_range, seed), show_all, validate)
