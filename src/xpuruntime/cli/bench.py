"""CLI command ``bench``: time one model under several policies and engines, interleaved, in one process.

    $ xpuruntime bench model.onnx --policy fp16.yaml --policy fused.yaml --dim batch=1 --dim seq=128
    $ xpuruntime bench model.onnx --engine onnxruntime --engine openvino --baseline --json
    $ xpuruntime bench model.onnx --policy fast.yaml --same-instance
    $ xpuruntime bench model.onnx --policy fast.yaml --call both --same-instance

Exit status 0 when every candidate ran, 1 when any failed (its error is in its row) or on an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from xpuruntime.cli.inference import IntRangeOpt, RandomInputs, model_feeds, parse_shapes, parse_sizes

__all__ = ["register", "parse_sizes", "parse_shapes"]

_Model = Annotated[Path, typer.Argument(help="Path to an .onnx model.", show_default=False)]
_Policies = Annotated[Optional[list[Path]], typer.Option(
    "--policy", "-p", help="Policy file; repeat for several (the default policy when none).")]
_Engines = Annotated[Optional[list[str]], typer.Option("--engine", "-e", help="Engine; repeat for several.")]
_Dims = Annotated[Optional[list[str]], typer.Option("--dim", help="NAME=SIZE for a symbolic dim; repeat.")]
_Shapes = Annotated[Optional[list[str]], typer.Option("--shape", help="INPUT=AxBxC: a whole input's shape; repeat.")]
_Device = Annotated[str, typer.Option("--device", "-d", help="Device: cpu, cuda, cuda:1, gpu, npu.")]
_Warmup = Annotated[int, typer.Option("--warmup", min=0, help="Untimed calls per candidate after the first run.")]
_Repeat = Annotated[int, typer.Option("--repeat", min=1, help="Timed calls per candidate (interleaved).")]
_Io = Annotated[str, typer.Option("--io", help="host (numpy in and out) or device (CUDA tensors, IO binding).")]
_Baseline = Annotated[bool, typer.Option("--baseline", help="Add the bare engine with the same settings.")]
_Same = Annotated[bool, typer.Option("--same-instance", help="Add each candidate's own engine instance driven by a "
                                     "hand loop: xpuruntime's Python alone, without the spread between instances.")]
_Call = Annotated[str, typer.Option("--call", help="How xpuruntime is called: run (session.run every call), "
                                    "prepared (session.prepare once, then the prepared run) or both (two rows).")]
_Json = Annotated[bool, typer.Option("--json", help="Print plain JSON on stdout instead of a table.")]


ORDER = 45  #: place in ``xpuruntime --help`` (see xpuruntime.cli)


def register(app: typer.Typer) -> None:
    """Add ``bench`` to the root app."""

    @app.command("bench")
    def bench_cmd(model: _Model, policy: _Policies = None, engine: _Engines = None, dim: _Dims = None,
                  shape: _Shapes = None, device: _Device = "cpu", warmup: _Warmup = 10, repeat: _Repeat = 50,
                  io: _Io = "host", baseline: _Baseline = False, same_instance: _Same = False, call: _Call = "run",
                  as_json: _Json = False, int_range: IntRangeOpt = None) -> None:
        """p50/p90/p99 latency, throughput, first-run time and memory of each policy x engine, interleaved.

        Rounds run every candidate once, in an order shuffled each round. With --baseline each candidate is paired
        with the bare engine configured the same way by hand; the overhead column is the median over rounds of
        xpuruntime's time over the bare time of the same round, with its 95% bootstrap interval. Two instances of
        one engine differ by a few percent; --same-instance pairs each candidate with its own session or module
        driven by a hand loop instead (column "overhead, same instance"); give both flags for both. --call prepared
        times a prepared run (feeds checked once, then the engine's own call), --call both adds it as a second row.
        """
        from xpuruntime.cli import print_json, stdout_console
        from xpuruntime.inference.bench import bench

        shapes = RandomInputs(dim, shape, int_range)
        feeds = model_feeds(model, shapes, {})
        result = bench(model, policies=list(policy or []) or None, engines=list(engine or []) or None,
                       device=device, feeds=feeds, warmup=warmup, repeat=repeat, io=io,
                       baseline=("both" if baseline else "same") if same_instance else baseline, call=call)
        if as_json:
            print_json({**result.to_dict(), **shapes.to_dict()})
        else:
            from rich.text import Text

            stdout_console().print(Text("\n".join(shapes.lines())))
            stdout_console().print(result)
        if any(r.error for r in result.rows):
            raise typer.Exit(1)
