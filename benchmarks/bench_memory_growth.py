"""Resident memory over many runs of one session, per engine: does anything leak per call?

    python benchmarks/bench_memory_growth.py [--runs N] [--warmup N] [--json PATH]

For each installed ONNX engine and each way of running (plain ``run``; ``run`` under
``execution_timeout_ms``, which adds a timer or an asynchronous request per call; and runs that fail
inside the engine, alternating with good ones, which drop requests and, on OpenVINO, recompile), the
script warms the session up, then makes ``--runs`` calls with a fresh input array each time and reads
the resident set size (``/proc/self/statm``) every tenth of the way. Growth is the last reading minus
the first one after warm-up. Not a timed test: the figures go to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import os
import platform
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_json  # noqa: E402

import xpuruntime as xrt  # noqa: E402
from xpuruntime.errors import InputError  # noqa: E402
from xpuruntime.inference.samples import matmul_relu  # noqa: E402

_PAGE = os.sysconf("SC_PAGE_SIZE")
MIB = 1 << 20


def rss_bytes() -> int:
    """Resident set size of this process, from /proc/self/statm (pages)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * _PAGE


def _failing_model() -> Any:
    """``z = x @ y`` with free dims: a mismatched inner dim fails inside the engine, at run time."""
    from onnx import TensorProto, helper

    from xpuruntime.inference.samples import IR_VERSION, OPSET

    graph = helper.make_graph([helper.make_node("MatMul", ["x", "y"], ["z"])], "mm",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["a", "b"]),
                               helper.make_tensor_value_info("y", TensorProto.FLOAT, ["c", "d"])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["a", "d"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    return model


def _calls(engine: str, variant: str) -> Callable[[int], None]:
    """One call of the variant; ``i`` picks the input."""
    rng = np.random.default_rng(0)
    if variant == "failing runs (every other)":
        sess = xrt.InferenceSession(_failing_model(), engine=engine)
        y_good, y_bad = np.ones((16, 8), np.float32), np.ones((9, 8), np.float32)

        def call(i: int) -> None:
            x = rng.standard_normal((4, 16)).astype(np.float32)
            try:
                sess.run({"x": x, "y": y_bad if i % 2 else y_good})
            except InputError:
                pass
        return call
    policy = {"execution_timeout_ms": 60_000} if "timeout" in variant else {}
    sess = xrt.InferenceSession(matmul_relu(k=64, n=64), engine=engine, exec_policy=policy)
    return lambda i: sess.run({"x": rng.standard_normal((1 + i % 4, 64)).astype(np.float32)})


def measure(engine: str, variant: str, runs: int, warmup: int) -> dict[str, Any]:
    call = _calls(engine, variant)
    for i in range(warmup):
        call(i)
    gc.collect()
    readings = [rss_bytes()]
    step = max(runs // 10, 1)
    for i in range(runs):
        call(i)
        if (i + 1) % step == 0:
            gc.collect()
            readings.append(rss_bytes())
    growth = readings[-1] - readings[0]
    return {"engine": engine, "variant": variant, "runs": runs, "warmup": warmup,
            "rss_after_warmup_mib": readings[0] / MIB, "rss_end_mib": readings[-1] / MIB,
            "growth_mib": growth / MIB, "growth_bytes_per_run": growth / runs,
            "max_above_start_mib": (max(readings) - readings[0]) / MIB,
            "readings_mib": [round(r / MIB, 3) for r in readings]}


def engines() -> list[str]:
    from xpuruntime.inference.engine import list_engines

    return [e.name for e in list_engines() if e.installed and e.name in ("onnxruntime", "openvino")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--failing-runs", type=int, default=1_000, help="runs of the failing variant")
    parser.add_argument("--warmup", type=int, default=1_000)
    parser.add_argument("--json", default="benchmarks/results/memory_growth_cpu.json")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    results = []
    for engine in engines():
        for variant in ("run", "run with execution_timeout_ms", "failing runs (every other)"):
            runs = args.failing_runs if variant.startswith("failing") else args.runs
            results.append(measure(engine, variant, runs, min(args.warmup, runs)))
            r = results[-1]
            print(f"{engine:<12}{variant:<34}{r['runs']:>7} runs  RSS {r['rss_after_warmup_mib']:8.1f} MiB -> "
                  f"{r['rss_end_mib']:8.1f} MiB  growth {r['growth_mib']:+7.3f} MiB "
                  f"({r['growth_bytes_per_run']:+.1f} B/run, max {r['max_above_start_mib']:+.3f})", flush=True)
    import onnxruntime

    from xpuruntime.runtime.devices import get_device

    versions = {"onnxruntime": onnxruntime.__version__}
    if "openvino" in engines():
        import openvino

        versions["openvino"] = openvino.__version__
    write_json(Path(args.json), {
        "benchmark": "memory_growth_cpu", "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": get_device("cpu").name, "cpus": os.cpu_count(), "python": platform.python_version(), **versions,
        "command": " ".join(["python", *sys.argv]), "results": results})
    print(f"\nwritten: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
