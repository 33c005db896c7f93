"""What xpuruntime's per-call layers cost with cold caches, on the CPU (diagnosis, no GPU needed).

Right after an engine's work, the Python around the next call runs from evicted caches, at several times its warm
price (``profile_in_situ.py`` measures that on a GPU). This probe imitates it on any machine: before each timed call
it sums a 64 MiB array, then times one call of each candidate over a three-input ONNX model on ONNX Runtime's CPU
provider (a few microseconds of engine work, so the layers dominate), candidates shuffled each round:

- ``bare ORT``: ``onnxruntime.InferenceSession.run(None, feeds)``, the documented loop;
- ``session.run (full)``: every check, each run (the repeat switched off);
- ``session.run (repeat)``: the same configuration a third time on, through ``Engine._remember``'s repeat;
- ``prepared(feeds)``: ``session.prepare``'s written-out call;
- ``prepared, general __call__``: the same run through ``PreparedRun.__call__``, the generic method.

    python benchmarks/probe_call_layers.py [--rounds 3000]

Prints a table (p50 us per call) and writes ``results/probe_call_layers_cpu.json`` (or ``$OUT``).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from _common import write_json  # noqa: E402

import xpuruntime as xrt  # noqa: E402
from xpuruntime.inference.prepared import PreparedRun  # noqa: E402


def _model(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, [1, 128]) for n in ("a", "b", "c")]
    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["t"]), helper.make_node("Add", ["t", "c"], ["y"])],
                              "three", inputs, [helper.make_tensor_value_info("y", TensorProto.INT64, [1, 128])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3000)
    args = p.parse_args()
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "three.onnx"
        _model(path)
        feeds = {n: np.ones((1, 128), np.int64) for n in "abc"}
        repeated, full = xrt.InferenceSession(str(path)), xrt.InferenceSession(str(path))
        full.engine._remember = lambda *_a: None  # type: ignore[method-assign]  # every run the full path
        prepared = repeated.prepare(feeds)
        bare = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        calls = {
            "bare ORT": lambda: bare.run(None, feeds),
            "session.run (full)": lambda: full.run(feeds),
            "session.run (repeat)": lambda: repeated.run(feeds),
            "prepared(feeds)": lambda: prepared(feeds),
            "prepared, general __call__": lambda: PreparedRun.__call__(prepared, feeds),
        }
        for call in calls.values():
            for _ in range(3):
                call()
        assert repeated.engine._repeat is not None
        big = np.ones(16 << 20, np.float32)
        names, samples = list(calls), {n: [] for n in calls}
        for _ in range(args.rounds):
            random.shuffle(names)
            for name in names:
                big.sum()  # the caches evicted, as an engine's work evicts them
                start = time.perf_counter()
                calls[name]()
                samples[name].append(time.perf_counter() - start)
        repeated.close()
        full.close()
    p50 = {n: float(np.median(v) * 1e6) for n, v in samples.items()}
    print(f"{'call':28s} {'p50 us (cold caches)':>22s}")
    for name, value in p50.items():
        print(f"{name:28s} {value:22.2f}")
    out = Path(os.environ["OUT"]) if os.environ.get("OUT") else Path(__file__).resolve().parent / "results"
    write_json(out / "probe_call_layers_cpu.json", {
        "date": time.strftime("%Y-%m-%d"), "machine": platform.machine(), "cpus": os.cpu_count(),
        "onnxruntime": ort.__version__, "rounds": args.rounds, "p50_us": p50})


if __name__ == "__main__":
    main()
