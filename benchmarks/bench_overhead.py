"""What control costs: xpuruntime against the same engine configured the same way by hand, per call.

For each model and batch, the fastest configurations of the benchmark set (``bench_models.py``) run through
``xrt.bench(..., baseline=True)``: every xpuruntime candidate and its bare twin (``xpuruntime.inference._bare``)
timed interleaved (every candidate once per round, the order shuffled each round) in one process. Printed per row:
p50 of each, the overhead (the median over rounds of xpuruntime's time over its bare twin's in the same round; 1.00 =
free) with its 95% bootstrap interval, and the difference of the p50s in microseconds per call. ``--io device``
feeds CUDA tensors and writes into caller-owned CUDA tensors (ONNX Runtime through IO binding). ``--baseline both``
(the default) also times each candidate's own engine instance driven by a hand loop (``baseline="same"``): the
"same instance" overhead is xpuruntime's Python alone, without the few percent two instances of one engine differ by.
``--call both`` (the default) times each candidate twice in the same rounds: through ``session.run`` (every check,
every call) and through a prepared run (``session.prepare``: checked once, then the engine's own call).

    python benchmarks/bench_overhead.py --device cpu --models minilm --engines torch,onnxruntime
    PYTHONPATH=/tmp/ortsite:src python benchmarks/bench_overhead.py --device cuda --models minilm,bert --batches 1

JSON goes to $OUT/bench_overhead_<device>.json when $OUT is set, else benchmarks/results/.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

from _common import write_json

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import bench_models as bm  # noqa: E402

import xpuruntime as xrt  # noqa: E402


def torch_configs(cuda: bool) -> list[tuple[str, dict[str, Any]]]:
    """The benchmark set's torch policies (``bench_models.torch_policies``), plus max-autotune on CUDA."""
    extra = [("fp16-max-autotune", {"execution": {"precision": "fp16", "static_shape": True,
                                                  "compile": "max-autotune"}})] if cuda else []
    return [*bm.torch_policies(cuda), *extra]


DEFAULT_TORCH = "fp16-graphs,fp16-compile-graphs,fp16-reduce-overhead,fp16,default,bf16"  # max-autotune on request: minutes of autotuning


def ort_configs(name: str, sample: dict[str, Any], cuda: bool, chosen: str = "") -> list[tuple[str, dict[str, Any]]]:
    """The benchmark set's ONNX Runtime policies named in ``chosen`` (labels of ``bench_models.ort_policies``;
    ``fusions`` stands for the model's fusion type); by default its fastest on CUDA (fp16, fused, with and without
    CUDA graphs) and the CPU's default."""
    policies = bm.ort_policies(name, sample, cuda)
    if chosen:
        wanted = {w for c in chosen.split(",") for w in (c, c.replace("fusions", bm.FUSIONS[name]))}
        return [p for p in policies if p[0] in wanted]
    return [p for p in policies if p[0].startswith("fp16-")] if cuda else policies[:1]


def measure(name: str, batch: int, device: str, engines: list[str], warmup: int, repeat: int,
            configs: str = DEFAULT_TORCH, io: str = "host", ort: str = "",
            baseline: str = "both", call: str = "both") -> list[dict[str, Any]]:
    import torch

    cuda = device.startswith("cuda")
    module, names = bm.build(name)
    sample = bm.feeds(name, batch)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        if "onnxruntime" in engines:
            path = bm.export(module, names, sample, Path(tmp))
            results.append(xrt.bench(path, policies=ort_configs(name, sample, cuda, ort), engines=["onnxruntime"],
                                     device=device, feeds=sample, warmup=warmup, repeat=repeat, baseline=baseline,
                                     io=io, call=call))
        if "torch" in engines:
            example = tuple(torch.from_numpy(sample[n]) for n in names)
            options = {"example_inputs": example, "precision_mode": "cast-all"}  # like the bare module.half()
            chosen = [c for c in torch_configs(cuda) if c[0] in configs.split(",")]
            results.append(xrt.bench(module, policies=chosen, engines=["torch"], device=device,
                                     feeds=sample, warmup=warmup, repeat=repeat, baseline=baseline, io=io,
                                     engine_options={"torch": options}, call=call))
    rows = []
    for result in results:
        by_label = {r.label: r for r in result.rows}
        for r in result.rows:
            if r.kind != "xpuruntime":
                continue
            base = r.label.removesuffix(" (prepared)")  # a prepared row shares its run row's twins
            bare = by_label.get(f"bare {base}")
            same = by_label.get(f"same-instance {base}")
            ok = r.p50_ms and bare is not None and bare.p50_ms
            ok_same = r.p50_ms and same is not None and same.p50_ms
            rows.append({"model": name, "batch": batch, "config": base, "call": r.call, "xpuruntime_p50_ms": r.p50_ms,
                         "bare_p50_ms": bare.p50_ms if bare else None,
                         "ratio": r.overhead if ok else None, "ratio_ci95": r.overhead_ci if ok else None,
                         "ratio_of_p50s": r.p50_ms / bare.p50_ms if ok else None, "io": io,
                         "delta_us": (r.p50_ms - bare.p50_ms) * 1e3 if ok else None,
                         "same_instance_p50_ms": same.p50_ms if same else None,
                         "ratio_same_instance": r.overhead_same if ok_same else None,
                         "ratio_same_instance_ci95": r.overhead_same_ci if ok_same else None,
                         "delta_same_instance_us": (r.p50_ms - same.p50_ms) * 1e3 if ok_same else None,
                         "error": r.error or (bare.error if bare else None) or (same.error if same else None)
                         or (None if bare or same else "no bare twin")})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", default="minilm")
    parser.add_argument("--batches", default="1")
    parser.add_argument("--engines", default="torch,onnxruntime")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--torch-configs", default=DEFAULT_TORCH, help="torch policies to time (labels above)")
    parser.add_argument("--ort-configs", default="", help="ONNX Runtime policies (e.g. default,fp16-fusions)")
    parser.add_argument("--io", default="host", choices=["host", "device"])
    parser.add_argument("--tag", default="", help="added to the JSON file's name")
    parser.add_argument("--baseline", default="both", choices=["separate", "same", "both"],
                        help="bare twins: a separate instance, the candidate's own instance by hand, or both")
    parser.add_argument("--call", default="both", choices=["run", "prepared", "both"],
                        help="xpuruntime through session.run, a prepared run (session.prepare), or both")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    rows = []
    for name in args.models.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            rows += measure(name, batch, args.device, args.engines.split(","), args.warmup, args.repeat,
                            args.torch_configs, args.io, args.ort_configs, args.baseline, args.call)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"xpuruntime over the bare engine, same settings, io={args.io} (p50 ms; overhead 1.00 = no cost)")
    for col in ("model", "batch", "config", "call", "xpuruntime", "bare", "overhead (95%)", "extra us/call",
                "same instance", "overhead (95%) ", "extra us/call ", "error"):
        table.add_column(col)
    fmt = lambda v, f: "" if v is None else format(v, f)  # noqa: E731
    for r in rows:
        table.add_row(r["model"], str(r["batch"]), r["config"], r["call"], fmt(r["xpuruntime_p50_ms"], ".3f"),
                      fmt(r["bare_p50_ms"], ".3f"), _ratio(r["ratio"], r["ratio_ci95"]), fmt(r["delta_us"], ".0f"),
                      fmt(r["same_instance_p50_ms"], ".3f"),
                      _ratio(r["ratio_same_instance"], r["ratio_same_instance_ci95"]),
                      fmt(r["delta_same_instance_us"], ".0f"), (r["error"] or "")[:60])
    Console(width=200).print(table)
    out = Path(os.environ.get("OUT") or Path(__file__).parent / "results")
    suffix = ("" if args.io == "host" else "_device_io") + (f"_{args.tag}" if args.tag else "")
    write_json(out / f"bench_overhead_{'cpu' if not args.device.startswith('cuda') else 'cuda'}{suffix}.json", {
        "date": datetime.date.today().isoformat(), "device": bm._device(args.device),
        "python": platform.python_version(), "versions": _versions(),
        "settings": {"warmup": args.warmup, "repeat": args.repeat, "io": args.io,
                     "order": "interleaved, shuffled each round; ratio = median of same-round ratios",
                     "baseline": args.baseline, "call": args.call},
        "rows": rows})


def _ratio(ratio: float | None, interval: list[float] | None) -> str:
    if ratio is None:
        return ""
    lo, hi = interval or (None, None)
    return f"{ratio:.3f} ({lo:.3f}-{hi:.3f})" if lo is not None else f"{ratio:.3f}"


def _versions() -> dict[str, str]:
    out = {"xpuruntime": xrt.__version__}
    for mod in ("torch", "onnxruntime"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return out


if __name__ == "__main__":
    main()
