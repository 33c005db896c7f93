"""CLI commands that run models: ``run``, ``explain``, ``demo`` and ``engines``.

    $ xpuruntime demo
    $ xpuruntime run model.onnx --policy policy.yaml --device cuda --random-inputs
    $ xpuruntime explain model.onnx --input x=x.npy --json
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated, Any, Optional

import numpy as np
import typer
from rich.text import Text

from xpuruntime._io import atomic_write_bytes, atomic_write_text
from xpuruntime.cli.report import HtmlOpt, TraceOpt, write_outputs
from xpuruntime.errors import InputError
from xpuruntime.inference.feeds import load_array_file, random_feeds

__all__ = ["ORDER", "register", "random_feeds", "parse_input_args"]

ORDER = 30  #: place in ``xpuruntime --help`` (see xpuruntime.cli)

_Model = Annotated[Path, typer.Argument(help="Path to an .onnx model.", show_default=False)]
_PolicyOpt = Annotated[Optional[Path], typer.Option("--policy", "-p", help="Policy file (.yaml/.yml/.json).")]
_Engine = Annotated[str, typer.Option("--engine", "-e", help="Engine name (see `xpuruntime engines`).")]
_Device = Annotated[str, typer.Option("--device", "-d", help="cpu, cuda, cuda:N, gpu, npu or auto.")]
_Inputs = Annotated[Optional[list[str]], typer.Option("--input", "-i", help="NAME=FILE.npy; repeat per input.")]
_Random = Annotated[bool, typer.Option("--random-inputs", help="Feed seeded random data shaped like the inputs.")]
_Output = Annotated[Optional[Path], typer.Option("--output", "-o", help="Folder to write NAME.npy and report.json.")]
_Json = Annotated[bool, typer.Option("--json", help="Print plain JSON on stdout instead of tables.")]
_Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace files that already exist in --output.")]
_Validate = Annotated[bool, typer.Option("--validate", help="Check outputs against the reference run (finite, and "
                                         "execution.accuracy's tolerance): max abs/rel error per output.")]


def parse_input_args(items: list[str]) -> dict[str, np.ndarray]:
    """``["x=x.npy", ...]`` -> feeds; arrays are loaded without pickle."""
    feeds: dict[str, np.ndarray] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise InputError("malformed --input", expected="NAME=FILE.npy", received=repr(item))
        feeds[name] = load_array_file(path, name)  # regular files only; the header is checked before allocating
    return feeds


def _summary(name: str, value: Any) -> dict[str, Any]:
    arr = np.asarray(value)
    numeric = arr.size and arr.dtype.kind in "fiub"
    return {"name": name, "shape": list(arr.shape), "dtype": str(arr.dtype),
            "min": float(arr.min()) if numeric else None, "max": float(arr.max()) if numeric else None,
            "mean": float(arr.astype(np.float64).mean()) if numeric else None}


def _write_outputs(folder: Path, outputs: dict[str, Any], report_json: str, overwrite: bool) -> None:
    import io

    folder.mkdir(parents=True, exist_ok=True)
    files = {f"{name}.npy": value for name, value in outputs.items()}
    taken = [n for n in [*files, "report.json"] if (folder / n).exists()]
    if taken and not overwrite:
        raise InputError(f"{folder} already holds {', '.join(taken)}", expected="an empty or new folder",
                         received=str(folder), hint="choose another --output folder or pass --overwrite")
    for file_name, value in files.items():
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(value), allow_pickle=False)
        atomic_write_bytes(folder / file_name, buffer.getvalue())
    atomic_write_text(folder / "report.json", report_json)


def _print_warnings(caught: list[warnings.WarningMessage]) -> None:
    from rich.console import Console

    console = Console(stderr=True, highlight=False, soft_wrap=True)
    for w in caught:
        console.print(Text("warning: ", style="bold yellow"), Text(str(w.message)), sep="")


def _run(model: Path, policy: Path | None, engine: str, device: str, inputs: list[str] | None,
         random_inputs: bool, explain: bool, as_json: bool, output: Path | None, overwrite: bool,
         trace: Path | None = None, html: Path | None = None, validate: bool = False) -> None:
    from xpuruntime.cli import print_json, stdout_console
    from xpuruntime.inference.session import InferenceSession

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sess = InferenceSession(model, device=device, engine=engine, policy=policy)
        feeds = _feeds(sess, inputs, random_inputs)
        report = sess.explain(feeds) if explain else sess.report
        report = report.with_accuracy(sess.validate(feeds)) if validate else report
        outputs = sess.run(feeds)
    _print_warnings([w for w in caught if issubclass(w.category, UserWarning)])
    if output is not None:
        _write_outputs(output, outputs, report.to_json(), overwrite)
    write_outputs(report, trace=trace, html=html)
    summaries = [_summary(n, v) for n, v in outputs.items()]
    if as_json:
        print_json({"outputs": summaries, "report": report.to_dict()})
        return
    console = stdout_console()
    console.print(report)
    console.print(Text("\noutputs", style="bold"))
    for s in summaries:
        console.print(f"  {s['name']}: {s['dtype']}{s['shape']}  min {s['min']:.4g}  max {s['max']:.4g}  "
                      f"mean {s['mean']:.4g}" if s["min"] is not None else f"  {s['name']}: {s['dtype']}{s['shape']}")


def _feeds(sess: Any, inputs: list[str] | None, random_inputs: bool) -> dict[str, np.ndarray]:
    feeds = parse_input_args(inputs or [])
    missing = [i for i in sess.input_info if i.name not in feeds]
    if missing and not random_inputs:
        raise InputError(f"no data for input {missing[0].name!r}",
                         expected="; ".join(i.describe() for i in sess.input_info),
                         received=", ".join(feeds) or "no --input", hint="pass --input NAME=FILE.npy or --random-inputs")
    fixed = sess.policy.execution.fixed_shapes
    return {**random_feeds(missing, fixed), **feeds}


def register(app: typer.Typer) -> None:
    """Add the inference commands to the root app."""

    @app.command("run")
    def run_cmd(model: _Model, policy: _PolicyOpt = None, engine: _Engine = "onnxruntime", device: _Device = "cpu",
                input: _Inputs = None, random_inputs: _Random = False,
                explain: Annotated[bool, typer.Option("--explain", help="Profile the run (per-node times).")] = False,
                as_json: _Json = False, output: _Output = None, overwrite: _Overwrite = False,
                trace: TraceOpt = None, html: HtmlOpt = None, validate: _Validate = False) -> None:
        """Run a model under a policy and print the receipt of what ran."""
        _run(model, policy, engine, device, input, random_inputs, explain, as_json, output, overwrite, trace, html,
             validate)

    @app.command("explain")
    def explain_cmd(model: _Model, policy: _PolicyOpt = None, engine: _Engine = "onnxruntime",
                    device: _Device = "cpu", input: _Inputs = None, random_inputs: _Random = True,
                    as_json: _Json = False, output: _Output = None, overwrite: _Overwrite = False,
                    trace: TraceOpt = None, html: HtmlOpt = None, validate: _Validate = False) -> None:
        """One profiled run: per-node provider and time, and every policy violation."""
        _run(model, policy, engine, device, input, random_inputs, True, as_json, output, overwrite, trace, html,
             validate)

    @app.command("demo")
    def demo_cmd(engine: _Engine = "onnxruntime", as_json: _Json = False) -> None:
        """Run the embedded model under two contrasting policies and print both receipts."""
        _demo(engine, as_json)

    @app.command("engines")
    def engines_cmd(as_json: _Json = False) -> None:
        """List the engines: installed or not, version, devices, and the extra that installs them."""
        _engines(as_json)


def _demo(engine: str, as_json: bool) -> None:
    from xpuruntime.cli import print_json, stdout_console
    from xpuruntime.demo import run_demo

    results = run_demo(engine)
    if as_json:
        print_json([{"case": r.case.name, "engine": r.report.engine, "device": r.case.device,
                     "policy": r.case.policy.to_dict(),
                     "report": r.report.to_dict()} for r in results])
        return
    from xpuruntime.policies import _yaml
    from xpuruntime.receipts._render import report_rich

    console = stdout_console()
    for r in results:
        console.rule(Text(r.case.name, style="bold"))
        console.print(Text(r.case.story, style="italic"))
        asked = {"device": r.case.device, "kernels": r.case.policy.kernels.to_dict(),
                 "execution": r.case.policy.execution.to_dict(exclude_defaults=True)}
        console.print(Text(_yaml.dump(asked).strip(), style="dim"))
        console.print(report_rich(r.report, max_rows=12))
    a = results[0]
    console.rule()
    for other in results[1:]:
        diff = float(np.max(np.abs(a.output - other.output)))
        console.print(f"max |A - {other.case.name[0]}| on the same input: {diff:.3g} "
                      f"({a.case.policy.execution.precision} on {a.report.engine} vs "
                      f"{other.case.policy.execution.precision} on {other.report.engine}, as the receipts show)")


def _engines(as_json: bool) -> None:
    from rich.table import Table

    from xpuruntime.cli import print_json, stdout_console
    from xpuruntime.inference.engine import list_engines

    engines = list_engines()
    if as_json:
        print_json([e.to_dict() for e in engines])
        return
    table = Table("engine", "aliases", "installed", "version", "devices", "install / reason", show_edge=False)
    for e in engines:
        table.add_row(e.name, ", ".join(e.aliases), "yes" if e.installed else "no", e.version or "-",
                      ", ".join(e.devices), e.reason or (f"extra: {e.extra}" if e.extra else "-"))
    stdout_console().print(table)
