"""CLI commands that run models: ``run``, ``explain``, ``demo`` and ``engines``.

    $ xpuruntime demo
    $ xpuruntime run model.onnx --policy policy.yaml --device cuda --random-inputs
    $ xpuruntime explain model.onnx --input x=x.npy --json
    $ xpuruntime run bert.onnx --random-inputs --dim batch=8 --dim seq=128 --int-range input_ids=0:30522

Random inputs: every symbolic dim needs a size (``--dim NAME=N``, or ``--shape INPUT=AxB`` for a whole input, or
the policy's ``fixed_shapes``); only a dim named like ``*batch*`` defaults to 1, and the output says so. Integer
inputs are drawn from ``[LO, HI)``: ``--int-range LO:HI`` (every integer input) or ``INPUT=LO:HI``; by default
``[0, rows)`` for ids that index an embedding of the ONNX model, 0/1 for a name containing ``mask``, else
``[0, 100)``. The shapes and ranges used are printed, and are under ``inputs`` in ``--json``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated, Any, Optional

import numpy as np
import typer
from rich.text import Text

from xpuruntime.cli._common import check_output, print_warnings
from xpuruntime.cli._outputs import check_output_folder, write_output_folder
from xpuruntime.cli.report import HtmlOpt, TraceOpt, write_outputs
from xpuruntime.errors import InputError, safe_text
from xpuruntime.inference.feeds import TensorInfo, load_array_file, random_feeds
from xpuruntime.policies.vocabulary import DEFAULT_ENGINE

__all__ = ["ORDER", "register", "random_feeds", "parse_input_args", "parse_sizes", "parse_shapes",
           "parse_int_ranges", "RandomInputs", "model_feeds", "DimsOpt", "ShapesOpt", "IntRangeOpt", "AllOpt"]

ORDER = 30  #: place in ``xpuruntime --help`` (see xpuruntime.cli)

_Model = Annotated[Path, typer.Argument(help="Path to an .onnx model.", show_default=False)]
_PolicyOpt = Annotated[Optional[Path], typer.Option("--policy", "-p", help="Policy file (.yaml/.yml/.json).")]
_Engine = Annotated[str, typer.Option("--engine", "-e", help="Engine name (see `xpuruntime engines`).")]
_Device = Annotated[str, typer.Option("--device", "-d", help="cpu, cuda, cuda:N, gpu, npu or auto.")]
_Inputs = Annotated[Optional[list[str]], typer.Option("--input", "-i", help="NAME=FILE.npy; repeat per input.")]
_Random = Annotated[bool, typer.Option("--random-inputs", help="Feed seeded random data shaped like the inputs.")]
_Output = Annotated[Optional[Path], typer.Option("--output", "-o", help="Folder to write one .npy per output, "
                                                 "outputs.json (output name -> file) and report.json into.")]
_Json = Annotated[bool, typer.Option("--json", help="Print plain JSON on stdout instead of tables.")]
_Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace files that already exist in --output.")]
_Validate = Annotated[bool, typer.Option("--validate", help="Check outputs against the reference run (finite, and "
                                         "execution.accuracy's tolerance): max abs/rel error per output.")]
DimsOpt = Annotated[Optional[list[str]], typer.Option(
    "--dim", help="NAME=N: size of a symbolic dim for random inputs (e.g. seq=128); repeat.")]
ShapesOpt = Annotated[Optional[list[str]], typer.Option(
    "--shape", help="INPUT=AxB: a whole random input's shape (e.g. input_ids=8x128); repeat.")]
IntRangeOpt = Annotated[Optional[list[str]], typer.Option(
    "--int-range", help="LO:HI or INPUT=LO:HI: random integers in [LO, HI). Default: [0, rows) for embedding ids, "
                        "0:2 for *mask*, else 0:100.")]
AllOpt = Annotated[bool, typer.Option("--all", help="Show every node and every violation's nodes (no cut).")]


def parse_sizes(items: list[str], what: str = "--dim") -> dict[str, int]:
    """``["seq=128", ...]`` -> {"seq": 128}."""
    out: dict[str, int] = {}
    for item in items:
        name, sep, size = item.partition("=")
        if not sep or not name or not size.strip().isdigit() or int(size) <= 0:
            raise InputError(f"malformed {what}", expected="NAME=SIZE with SIZE >= 1, e.g. seq=128", received=repr(item))
        out[name] = int(size)
    return out


def parse_shapes(items: list[str]) -> dict[str, tuple[int, ...]]:
    """``["input_ids=8x128", ...]`` -> {"input_ids": (8, 128)}."""
    out: dict[str, tuple[int, ...]] = {}
    for item in items:
        name, sep, shape = item.partition("=")
        dims = shape.lower().replace(",", "x").split("x")
        if not sep or not name or not all(d.strip().isdigit() for d in dims):
            raise InputError("malformed --shape", expected="INPUT=AxBxC, e.g. input_ids=1x128", received=repr(item))
        out[name] = tuple(int(d) for d in dims)
    return out


def parse_int_ranges(items: list[str]) -> tuple[tuple[int, int] | None, dict[str, tuple[int, int]]]:
    """``["0:1000", "attention_mask=0:2"]`` -> ((0, 1000), {"attention_mask": (0, 2)}): HI is excluded."""
    everywhere, per_input = None, {}
    for item in items:
        name, sep, bounds = item.rpartition("=")
        low, colon, high = bounds.partition(":")
        if (sep and not name) or not colon or not _is_int(low) or not _is_int(high):
            raise InputError("malformed --int-range", expected="LO:HI or INPUT=LO:HI, e.g. input_ids=0:30522",
                             received=repr(item))
        if sep:
            per_input[name] = (int(low), int(high))
        else:
            everywhere = (int(low), int(high))
    return everywhere, per_input


def _is_int(text: str) -> bool:
    return text.strip().lstrip("-").isdigit()


class RandomInputs:
    """What the random-input flags ask for: sizes, shapes and integer ranges; :meth:`feeds` makes them.

    Example: ``RandomInputs(["seq=128"], [], []).feeds(infos, model_path)``.
    """

    def __init__(self, dims: list[str] | None, shapes: list[str] | None, int_ranges: list[str] | None,
                 seed: int = 0) -> None:
        self.dims, self.shapes = parse_sizes(dims or []), parse_shapes(shapes or [])
        self.everywhere, self.ranges = parse_int_ranges(int_ranges or [])
        from xpuruntime.inference.feeds import check_seed

        self.seed = check_seed(seed)
        self.described: list[dict[str, Any]] = []
        self.defaults: list[str] = []

    def feeds(self, infos: list[TensorInfo], model: Any, fixed: Any = None,
              given: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Random data for ``infos`` (those not in ``given``); records what it made in ``described``."""
        from xpuruntime.inference.feeds import int_ranges, resolve_shapes

        given = given or {}
        missing = [i for i in infos if i.name not in given]
        shapes, self.defaults = resolve_shapes(missing, dims=self.dims, shapes=self.shapes, fixed=fixed)
        ints = {i.name for i in missing if np.dtype(i.dtype).kind in "iu"}
        ranges = int_ranges(infos, given=self.ranges, everywhere=self.everywhere, vocab=_vocab(model) if ints else None)
        ranges = {name: bounds for name, bounds in ranges.items() if name in ints}
        made = random_feeds(missing, shapes, seed=self.seed, ranges=ranges)
        self.described = [_described(n, v, "file") for n, v in given.items()]
        self.described += [_described(n, v, "random", ranges.get(n)) for n, v in made.items()]
        return {**made, **given}

    def lines(self) -> list[str]:
        """``inputs  input_ids int64[8, 128] random [0, 1000)`` and the defaults applied, for the terminal."""
        out = []
        for d in self.described:
            span = f" [{d['range'][0]}, {d['range'][1]})" if d.get("range") else ""
            out.append(f"  {safe_text(str(d['name']))}: {d['dtype']}{d['shape']} {d['source']}{span}")
        return ["inputs", *out, *(f"  default: {safe_text(line)}" for line in self.defaults)]

    def to_dict(self) -> dict[str, Any]:
        """``{"feeds": {"inputs": [{name, shape, dtype, source, range}], "defaults": [...]}}`` for ``--json``."""
        return {"feeds": {"inputs": self.described, "defaults": self.defaults}}


def model_feeds(model: Path, shapes: RandomInputs, given: dict[str, np.ndarray],
                policy: Path | None = None) -> dict[str, np.ndarray]:
    """Feeds for an ONNX file before any engine loads it: ``given`` plus random data for the other inputs, sized by
    the flags (and ``fixed_shapes`` of ``policy``)."""
    from xpuruntime._models import load_model_source
    from xpuruntime.inference.feeds import onnx_inputs

    fixed = None
    if policy is not None:
        from xpuruntime.policies import Policy

        fixed = Policy.load(policy).execution.fixed_shapes
    return shapes.feeds(onnx_inputs(load_model_source(model).proto), model, fixed, given)


def _described(name: str, value: Any, source: str, bounds: tuple[int, int] | None = None) -> dict[str, Any]:
    out = {"name": name, "shape": list(np.shape(value)), "dtype": str(np.asarray(value).dtype), "source": source}
    if bounds:
        out["range"] = list(bounds)
    return out


def _vocab(model: Any) -> dict[str, int]:
    """Inputs that index an embedding of the ONNX model, with its row count (empty for anything else)."""
    from xpuruntime._models import load_model_source
    from xpuruntime.errors import XpuRuntimeError
    from xpuruntime.inference.feeds import embedding_sizes

    try:
        return embedding_sizes(load_model_source(model).proto)
    except XpuRuntimeError:  # not an ONNX file we can read here: the engine reads it its own way
        return {}


def parse_input_args(items: list[str]) -> dict[str, np.ndarray]:
    """``["x=x.npy", ...]`` -> feeds; arrays are loaded without pickle."""
    feeds: dict[str, np.ndarray] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise InputError("malformed --input", expected="NAME=FILE.npy", received=safe_text(repr(item)))
        if name in feeds:
            raise InputError(f"--input {safe_text(repr(name))} is given twice", expected="one --input per input",
                             received=safe_text(repr(item)), hint="drop one of them")
        feeds[name] = load_array_file(path, name)  # regular files only; the header is checked before allocating
    return feeds


def _summary(name: str, value: Any) -> dict[str, Any]:
    arr = np.asarray(value)
    numeric = arr.size and arr.dtype.kind in "fiub"
    return {"name": name, "shape": list(arr.shape), "dtype": str(arr.dtype),
            "min": float(arr.min()) if numeric else None, "max": float(arr.max()) if numeric else None,
            "mean": float(arr.astype(np.float64).mean()) if numeric else None}


def _run(model: Path, policy: Path | None, engine: str, device: str, inputs: list[str] | None,
         random_inputs: bool, explain: bool, as_json: bool, output: Path | None, overwrite: bool,
         trace: Path | None = None, html: Path | None = None, shapes: RandomInputs | None = None,
         show_all: bool = False, validate: bool = False) -> None:
    from xpuruntime.cli import print_json, stdout_console
    from xpuruntime.inference.session import InferenceSession

    if output is not None:
        check_output_folder(output)  # every target before the run
    check_output(trace, "--trace")
    check_output(html, "--html")
    shapes = shapes or RandomInputs(None, None, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sess = InferenceSession(model, device=device, engine=engine, policy=policy)
        feeds = _feeds(sess, inputs, random_inputs, shapes, model)
        report = sess.explain(feeds) if explain else sess.report
        report = report.with_accuracy(sess.validate(feeds)) if validate else report
        outputs = sess.run(feeds)
    print_warnings(caught)
    if output is not None:
        write_output_folder(output, outputs, report.to_json(), overwrite)
    write_outputs(report, trace=trace, html=html)
    summaries = [_summary(n, v) for n, v in outputs.items()]
    if as_json:
        print_json({**shapes.to_dict(), "outputs": summaries, "report": report.to_dict()})
        return
    from xpuruntime.receipts._render import report_rich

    console = stdout_console()
    console.print(Text("\n".join(shapes.lines())))
    console.print(report_rich(report, max_rows=len(report.nodes) if show_all else 60, limit=None if show_all else 8))
    console.print(Text("\noutputs", style="bold"))
    for s in summaries:
        s["name"] = safe_text(s["name"])
        console.print(Text(f"  {s['name']}: {s['dtype']}{s['shape']}  min {s['min']:.4g}  max {s['max']:.4g}  "
                           f"mean {s['mean']:.4g}" if s["min"] is not None else f"  {s['name']}: {s['dtype']}{s['shape']}"))


def _feeds(sess: Any, inputs: list[str] | None, random_inputs: bool, shapes: RandomInputs,
           model: Any) -> dict[str, np.ndarray]:
    feeds = parse_input_args(inputs or [])
    missing = [i for i in sess.input_info if i.name not in feeds]
    if missing and not random_inputs:
        raise InputError(f"no data for input {missing[0].name!r}",
                         expected="; ".join(i.describe() for i in sess.input_info),
                         received=", ".join(feeds) or "no --input", hint="pass --input NAME=FILE.npy or --random-inputs")
    return shapes.feeds(list(sess.input_info), model, sess.policy.execution.fixed_shapes, feeds)


def register(app: typer.Typer) -> None:
    """Add the inference commands to the root app."""

    @app.command("run")
    def run_cmd(model: _Model, policy: _PolicyOpt = None, engine: _Engine = DEFAULT_ENGINE, device: _Device = "cpu",
                input: _Inputs = None, random_inputs: _Random = False,
                explain: Annotated[bool, typer.Option("--explain", help="Profile the run (per-node times).")] = False,
                as_json: _Json = False, output: _Output = None, overwrite: _Overwrite = False,
                trace: TraceOpt = None, html: HtmlOpt = None, dim: DimsOpt = None, shape: ShapesOpt = None,
                int_range: IntRangeOpt = None, show_all: AllOpt = False, validate: _Validate = False) -> None:
        """Run a model under a policy and print the inputs it used and the receipt of what ran."""
        _run(model, policy, engine, device, input, random_inputs, explain, as_json, output, overwrite, trace, html,
             RandomInputs(dim, shape, int_range), show_all, validate)

    @app.command("explain")
    def explain_cmd(model: _Model, policy: _PolicyOpt = None, engine: _Engine = DEFAULT_ENGINE,
                    device: _Device = "cpu", input: _Inputs = None, random_inputs: _Random = True,
                    as_json: _Json = False, output: _Output = None, overwrite: _Overwrite = False,
                    trace: TraceOpt = None, html: HtmlOpt = None, dim: DimsOpt = None, shape: ShapesOpt = None,
                    int_range: IntRangeOpt = None, show_all: AllOpt = False, validate: _Validate = False) -> None:
        """One profiled run: per-node provider and time, and every policy violation."""
        _run(model, policy, engine, device, input, random_inputs, True, as_json, output, overwrite, trace, html,
             RandomInputs(dim, shape, int_range), show_all, validate)

    @app.command("demo")
    def demo_cmd(engine: _Engine = DEFAULT_ENGINE, as_json: _Json = False) -> None:
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
