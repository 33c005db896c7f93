#!/usr/bin/env python
"""IO binding on the CUDA provider: xpuruntime with numpy feeds vs. torch CUDA tensors, vs. bare ORT.

Model: ``y = relu(x @ W)`` (``matmul_relu``) with x float32 [m, k] and y float32 [m, n]; by default
m = k = n = 4096, so x, W and y are 64 MiB each. At that size the host<->device copies of x and y
(128 MiB per call over PCIe) cost as much as or more than the GEMM (137 GFLOP, fp32 without TF32
under the default policy), which is what IO binding is meant to remove.

Variants, run INTERLEAVED round by round (order rotated every round) after warm-up:

  a  xpuruntime ``sess.run({"x": x_numpy})``                          host -> device -> host copies
  b  xpuruntime ``sess.run({"x": x_cuda}, outputs={"y": y_cuda})``    IO binding, torch tensors, no host copies
  c  bare ORT ``run_with_iobinding`` on a binding built once         the reference for b
  d  bare ORT ``run(None, {"x": x_numpy})``                          the reference for a

Both sessions use the same providers and provider options (read back from the xpuruntime session's plan)
and the same graph optimisation level. Every call is timed with ``time.perf_counter_ns`` between two
``torch.cuda.synchronize()`` calls (device-wide, so ONNX Runtime's own stream is covered).

    python benchmarks/bench_ort_gpu_iobinding.py              # ~10-20 s on an H100, most of it start-up
    python benchmarks/bench_ort_gpu_iobinding.py --quick

Needs onnxruntime-gpu (CUDAExecutionProvider) and a CUDA build of torch; without them it says so and exits 0
(``--require-gpu`` makes that exit 2).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import quantiles, write_json  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_JSON = HERE / "results" / "ort_iobinding_gpu.json"
CUDA_EP = "CUDAExecutionProvider"

# (warm-up rounds, measured rounds); each round runs every variant once
ITERS = {"full": (5, 40), "quick": (2, 8)}

VARIANTS = {
    "a": "xpuruntime run, numpy feeds (H2D + D2H copies)",
    "b": "xpuruntime run, torch CUDA feeds + preallocated CUDA output (IO binding)",
    "c": "bare ORT run_with_iobinding (binding built once)",
    "d": "bare ORT run, numpy feeds",
}


def _import_xpuruntime() -> Any:
    try:
        import xpuruntime
    except ImportError:  # running from a checkout without an install
        sys.path.insert(0, str(HERE.parent / "src"))
        import xpuruntime
    return xpuruntime


def _unavailable(reason: str, require: bool) -> int:
    print(f"bench_ort_gpu_iobinding: skipped: {reason}", file=sys.stderr)
    print("  needs onnxruntime-gpu (CUDAExecutionProvider), a CUDA build of torch and an NVIDIA GPU", file=sys.stderr)
    return 2 if require else 0




def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="few iterations (smoke run)")
    p.add_argument("--m", type=int, default=4096, help="rows of x and y (default 4096)")
    p.add_argument("--k", type=int, default=4096, help="columns of x, rows of W (default 4096)")
    p.add_argument("--n", type=int, default=4096, help="columns of W and y (default 4096)")
    p.add_argument("--precision", default="fp32", help="xpuruntime ExecutionPolicy precision (default fp32: no TF32)")
    p.add_argument("--device-id", type=int, default=0, help="CUDA device index (default 0)")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"result file (default {DEFAULT_JSON})")
    p.add_argument("--require-gpu", action="store_true", help="exit 2 (not 0) when no CUDA provider or GPU is found")
    args = p.parse_args(argv)

    try:
        import onnxruntime as ort
    except ImportError as exc:
        return _unavailable(f"onnxruntime is not installed ({exc})", args.require_gpu)
    available = ort.get_available_providers()
    if CUDA_EP not in available:
        return _unavailable(f"{CUDA_EP} is not available in onnxruntime {ort.__version__} "
                            f"(providers: {', '.join(available)})", args.require_gpu)
    try:
        import torch  # imported here only: the script's --help and skip paths must not need it
    except ImportError as exc:
        return _unavailable(f"torch is not installed ({exc})", args.require_gpu)
    if not torch.cuda.is_available():
        return _unavailable(f"torch {torch.__version__} sees no CUDA device", args.require_gpu)
    if hasattr(ort, "preload_dlls"):  # onnxruntime >= 1.21: use the CUDA/cuDNN libraries torch brought
        try:
            ort.preload_dlls()
        except Exception as exc:  # noqa: BLE001 - best effort; session creation reports real failures
            print(f"note: onnxruntime.preload_dlls() failed: {exc}", file=sys.stderr)

    xrt = _import_xpuruntime()
    from xpuruntime.inference.samples import matmul_relu

    dev = args.device_id
    torch.cuda.set_device(dev)
    m, k, n = args.m, args.k, args.n
    data = matmul_relu(m, k, n).SerializeToString()
    policy = xrt.ExecutionPolicy(precision=args.precision, fallback="error")  # every node on CUDA, or no run
    t0 = time.perf_counter()
    sess = xrt.InferenceSession(data, device=f"cuda:{dev}", exec_policy=policy)
    plan = sess.engine.plan
    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, plan.graph_level)
    so.log_severity_level = 3
    bare = ort.InferenceSession(data, sess_options=so, providers=[(name, dict(opts)) for name, opts in plan.providers])
    setup_s = time.perf_counter() - t0
    if bare.get_providers()[0] != CUDA_EP or sess.engine.session.get_providers()[0] != CUDA_EP:
        print(f"error: sessions are not on {CUDA_EP}: xpuruntime {sess.engine.session.get_providers()}, "
              f"bare {bare.get_providers()}", file=sys.stderr)
        return 1

    gen = torch.Generator(device=f"cuda:{dev}").manual_seed(0)
    x_cuda = torch.randn((m, k), device=f"cuda:{dev}", dtype=torch.float32, generator=gen)
    y_b = torch.empty((m, n), device=f"cuda:{dev}", dtype=torch.float32)
    y_c = torch.empty_like(y_b)
    x_np = x_cuda.cpu().numpy()  # the same values, on the host
    feeds_np = {"x": x_np}
    feeds_cuda = {"x": x_cuda}
    outs_b = {"y": y_b}

    binding = bare.io_binding()  # the reference: built once, reused every call
    binding.bind_input("x", "cuda", dev, np.float32, list(x_cuda.shape), x_cuda.data_ptr())
    binding.bind_output("y", "cuda", dev, np.float32, list(y_c.shape), y_c.data_ptr())

    calls = {
        "a": lambda: sess.run(feeds_np),
        "b": lambda: sess.run(feeds_cuda, outputs=outs_b),
        "c": lambda: bare.run_with_iobinding(binding),
        "d": lambda: bare.run(None, feeds_np),
    }

    sync = torch.cuda.synchronize
    clock = time.perf_counter_ns

    def timed(call: Any) -> tuple[int, Any]:
        sync()
        start = clock()
        out = call()
        sync()
        return clock() - start, out

    # correctness, once: all four agree
    sync()
    y_a = calls["a"]()["y"]
    calls["b"]()
    calls["c"]()
    y_d = calls["d"]()[0]
    sync()
    np.testing.assert_allclose(y_a, y_d, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y_b.cpu().numpy(), y_c.cpu().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y_b.cpu().numpy(), y_a, rtol=1e-4, atol=1e-4)
    del y_a, y_d

    warmup, rounds = ITERS["quick" if args.quick else "full"]
    keys = list(calls)
    for _ in range(warmup):
        for key in keys:
            timed(calls[key])
    times = {key: np.empty(rounds, np.int64) for key in keys}
    for i in range(rounds):
        order = keys[i % len(keys):] + keys[: i % len(keys)]
        for key in order:
            times[key][i], _ = timed(calls[key])
    ms = {key: v / 1e6 for key, v in times.items()}

    moved_mib = (m * k + m * n) * 4 / 2**20
    results = {key: {"what": VARIANTS[key], "ms": quantiles(ms[key])} for key in keys}
    comparisons = {
        "b_vs_a_speedup": quantiles(ms["a"] / ms["b"]),
        "b_vs_c_ratio": quantiles(ms["b"] / ms["c"]),
        "b_minus_c_us": quantiles((ms["b"] - ms["c"]) * 1e3),
        "a_vs_d_ratio": quantiles(ms["a"] / ms["d"]),
        "a_minus_d_us": quantiles((ms["a"] - ms["d"]) * 1e3),
    }
    payload = {
        "benchmark": "ort_iobinding_gpu",
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "device": {"gpu": torch.cuda.get_device_name(dev), "device_id": dev,
                   "capability": list(torch.cuda.get_device_capability(dev)),
                   "host_cpu": platform.processor() or platform.machine(), "platform": platform.platform()},
        "python": platform.python_version(),
        "onnxruntime_version": ort.__version__,
        "xpuruntime_version": getattr(xrt, "__version__", None),
        "torch_version": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "command": [sys.executable, *sys.argv],
        "mode": "quick" if args.quick else "full",
        "model": {"name": "matmul_relu", "m": m, "k": k, "n": n, "dtype": "float32",
                  "host_bytes_moved_per_call_mib": moved_mib, "gflop_per_call": 2 * m * k * n / 1e9},
        "policy": {"precision": args.precision, "fallback": "error"},
        "providers": [[name, dict(opts)] for name, opts in plan.providers],
        "graph_optimization_level": plan.graph_level,
        "setup_s": setup_s,
        "warmup_rounds": warmup,
        "rounds": rounds,
        "method": "interleaved rounds, order rotated; perf_counter_ns between torch.cuda.synchronize() calls",
        "results": results,
        "comparisons": comparisons,
    }
    write_json(args.json, payload)

    print(f"{payload['device']['gpu']}  onnxruntime {ort.__version__}  xpuruntime {payload['xpuruntime_version']}  "
          f"torch {torch.__version__}")
    print(f"matmul_relu m={m} k={k} n={n} float32, precision {args.precision}: {moved_mib:.0f} MiB of x+y per call, "
          f"{payload['model']['gflop_per_call']:.0f} GFLOP; {rounds} rounds after {warmup} warm-up")
    head = f"{'':2} {'variant':<74} {'p10 ms':>8} {'median':>8} {'p90 ms':>8}"
    print(head)
    print("-" * len(head))
    for key in keys:
        r = results[key]["ms"]
        print(f"{key:2} {VARIANTS[key]:<74} {r['p10']:>8.3f} {r['median']:>8.3f} {r['p90']:>8.3f}")
    c = comparisons
    print(f"\nIO binding speed-up (a/b, median of per-round ratios): {c['b_vs_a_speedup']['median']:.2f}x")
    print(f"xpuruntime IO binding vs bare (b/c): ratio {c['b_vs_c_ratio']['median']:.3f}, "
          f"added {c['b_minus_c_us']['median']:.1f} us (p10 {c['b_minus_c_us']['p10']:.1f}, "
          f"p90 {c['b_minus_c_us']['p90']:.1f})")
    print(f"xpuruntime numpy vs bare numpy (a/d): ratio {c['a_vs_d_ratio']['median']:.3f}, "
          f"added {c['a_minus_d_us']['median']:.1f} us")
    print(f"\nwritten: {args.json}")
    sess.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
