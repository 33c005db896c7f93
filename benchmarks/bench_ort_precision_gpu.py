"""fp32 vs tf32 on ONNX Runtime's CUDA provider: error against float64 and time, per policy.

Evidence that ``precision`` reaches the provider (``use_tf32``): with the default ONNX Runtime
options TF32 is on; ``precision="fp32"`` turns it off. Run on a GPU machine with onnxruntime-gpu:

    python benchmarks/bench_ort_precision_gpu.py [--json PATH]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np
from _common import write_json  # noqa: E402


def _time(fn, repeats: int = 20) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default="benchmarks/results/ort_precision_gpu.json")
    parser.add_argument("--m", type=int, default=256)
    parser.add_argument("--k", type=int, default=4096)
    parser.add_argument("--n", type=int, default=1024)
    args = parser.parse_args()
    import onnx.numpy_helper as nh
    import onnxruntime as ort

    import xpuruntime as xrt
    from xpuruntime.inference.samples import matmul_relu

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        print("CUDAExecutionProvider is not available: install onnxruntime-gpu on a CUDA machine", file=sys.stderr)
        return 2
    model = matmul_relu(m=args.m, k=args.k, n=args.n)
    w = nh.to_array(model.graph.initializer[0]).astype(np.float64)
    x = np.random.default_rng(0).standard_normal((args.m, args.k)).astype(np.float32)
    ref = np.maximum(x.astype(np.float64) @ w, 0)
    rows = []
    for label, policy in [("fp32", {"precision": "fp32"}), ("tf32", {"precision": "tf32"}),
                          ("fp16", {"precision": "fp16"})]:
        sess = xrt.InferenceSession(model, device="cuda", exec_policy={**policy, "fallback": "error"})
        y = sess.run({"x": x})["y"]
        rows.append({"policy": label, "max_abs_err": float(np.max(np.abs(y - ref))),
                     "use_tf32": sess.report.requested["provider_options"]["CUDAExecutionProvider"]["use_tf32"],
                     "ms_per_run_numpy_io": _time(lambda s=sess: s.run({"x": x}))})
    bare = ort.InferenceSession(model.SerializeToString(), providers=["CUDAExecutionProvider"])
    y = bare.run(None, {"x": x})[0]
    rows.append({"policy": "bare onnxruntime defaults", "max_abs_err": float(np.max(np.abs(y - ref))),
                 "use_tf32": bare.get_provider_options()["CUDAExecutionProvider"].get("use_tf32"),
                 "ms_per_run_numpy_io": _time(lambda: bare.run(None, {"x": x}))})
    print(f"{'policy':<28}{'use_tf32':>9}{'max |err| vs fp64':>20}{'ms/run':>10}")
    for r in rows:
        print(f"{r['policy']:<28}{r['use_tf32']!s:>9}{r['max_abs_err']:>20.3e}{r['ms_per_run_numpy_io']:>10.3f}")
    out = {"benchmark": "ort_precision_gpu", "date": dt.datetime.now(dt.timezone.utc).isoformat(),
           "device": _gpu_name(), "onnxruntime": ort.__version__, "shape": [args.m, args.k, args.n],
           "command": " ".join([os.path.basename(sys.executable), *sys.argv]), "python": platform.python_version(),
           "results": rows}
    path = Path(args.json)
    write_json(path, out)
    return 0


def _gpu_name() -> str:
    from xpuruntime.runtime.devices import get_all_devices

    return next((d.name for d in get_all_devices() if d.kind == "cuda"), "no CUDA device")


if __name__ == "__main__":
    raise SystemExit(main())
