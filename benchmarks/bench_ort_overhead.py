#!/usr/bin/env python
"""Per-call overhead of xpuruntime.InferenceSession.run over a bare onnxruntime.InferenceSession.run (CPU).

Both sessions load the same model bytes with the same provider (CPUExecutionProvider), the same
graph optimisation level and the same thread counts (read back from the xpuruntime session's plan),
and are fed the same numpy object. Calls are measured INTERLEAVED in one process, after warm-up:
rounds of one small block per session (xpuruntime A, bare B, and a second bare session C as an
A/A control), the order rotated every round (ABC, BCA, CAB), each block timed with
``time.perf_counter_ns`` and divided by its number of calls. The control (C against B) shows the
noise floor: what two identical bare sessions differ by on this machine.

Per model it reports the median time per call of each side, the median of per-pair ratios
(xpuruntime / bare) and the median of per-pair differences (added microseconds per call), with
p10/p90 of each, and checks two goals:

* tiny model (matmul_relu m=1,k=16,n=16): added time <= 15 us per call;
* ~1 ms model (tiny_transformer d_model=256, ffn=1024, x [1, 96, 256] by default): median ratio <= 1.03.

    python benchmarks/bench_ort_overhead.py            # full run (~1 minute on a 2-core VM)
    python benchmarks/bench_ort_overhead.py --quick    # a few seconds, for CI
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import quantiles, write_json  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_JSON = HERE / "results" / "ort_overhead_cpu.json"

TINY_GOAL_US = 15.0  # added time per call, tiny model
MID_GOAL_RATIO = 1.03  # median per-pair ratio, ~1 ms model

# (warm-up calls per session, measured rounds, calls per block) — fixed, so runs are comparable
ITERS = {
    "full": {"tiny": (2000, 6000, 10), "mid": (50, 3000, 1)},
    "quick": {"tiny": (300, 500, 10), "mid": (10, 200, 1)},
}


def _import_xpuruntime() -> Any:
    try:
        import xpuruntime
    except ImportError:  # running from a checkout without an install
        sys.path.insert(0, str(HERE.parent / "src"))
        import xpuruntime
    return xpuruntime


def cpu_description() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def build_sessions(xrt: Any, model: Any, threads: int) -> tuple[Any, Any, Any]:
    """The xpuruntime session and two bare onnxruntime sessions with the same options."""
    import onnxruntime as ort

    data = model.SerializeToString()
    a = xrt.InferenceSession(data, device="cpu", exec_policy=xrt.ExecutionPolicy(num_threads=threads))
    plan = a.engine.plan

    def bare() -> Any:
        so = ort.SessionOptions()
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, plan.graph_level)
        so.intra_op_num_threads = plan.intra_op_threads or 0
        so.inter_op_num_threads = 1 if plan.intra_op_threads else 0
        so.use_deterministic_compute = plan.deterministic
        so.log_severity_level = 3
        return ort.InferenceSession(data, sess_options=so, providers=plan.provider_names())

    b, c = bare(), bare()
    native = a.engine.session.get_session_options()
    assert native.graph_optimization_level == b.get_session_options().graph_optimization_level
    assert native.intra_op_num_threads == b.get_session_options().intra_op_num_threads == threads
    assert a.engine.session.get_providers() == b.get_providers(), (a.engine.session.get_providers(), b.get_providers())
    return a, b, c




def measure(a: Any, b: Any, c: Any, x: np.ndarray, warmup: int, rounds: int, block: int) -> dict[str, Any]:
    """Interleaved timing of A (xpuruntime), B (bare ORT) and C (a second bare ORT session, the A/A control).

    Each round runs one block of ``block`` calls on each session, the order rotated every round
    (ABC, BCA, CAB), so no session always runs first or after the same neighbour. Per-round
    A/B and C/B ratios and differences give the overhead and, from the control, the noise floor.
    """
    feeds = {"x": x}  # the same dict and numpy object for every side
    runs = (lambda: a.run(feeds), lambda: b.run(None, feeds), lambda: c.run(None, feeds))
    out_a, out_b, out_c = a.run(feeds)["y"], b.run(None, feeds)[0], c.run(None, feeds)[0]
    np.testing.assert_allclose(out_a, out_b, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out_b, out_c)
    for _ in range(warmup):
        for run in runs:
            run()
    a_call, b_call, c_call = a.run, b.run, c.run
    rng = range(block)
    clock = time.perf_counter_ns
    t = np.empty((3, rounds), np.int64)

    def block_a() -> int:
        t0 = clock()
        for _ in rng:
            a_call(feeds)
        return clock() - t0

    def block_b() -> int:
        t0 = clock()
        for _ in rng:
            b_call(None, feeds)
        return clock() - t0

    def block_c() -> int:
        t0 = clock()
        for _ in rng:
            c_call(None, feeds)
        return clock() - t0

    blocks = (block_a, block_b, block_c)
    orders = ((0, 1, 2), (1, 2, 0), (2, 0, 1))
    gc.collect()
    for i in range(rounds):
        for j in orders[i % 3]:
            t[j, i] = blocks[j]()
    per_call = t / block / 1e3  # microseconds per call
    ta, tb, tc = per_call
    return {"warmup_calls": warmup, "rounds": rounds, "calls_per_block": block,
            "xpuruntime_us": quantiles(ta), "bare_us": quantiles(tb), "ratio": quantiles(ta / tb), "added_us": quantiles(ta - tb),
            "control": {"what": "a second bare onnxruntime session, same options, against the first (A/A)",
                        "bare2_us": quantiles(tc), "ratio": quantiles(tc / tb), "added_us": quantiles(tc - tb)}}


def print_table(results: list[dict[str, Any]]) -> None:
    head = (f"{'model':<44} {'xrt us':>9} {'bare us':>9} {'ratio p10/med/p90':>20} "
            f"{'added us p10/med/p90':>22} {'A/A ratio':>9} {'A/A us':>7} {'goal':>13} {'ok':>4}")
    print(head)
    print("-" * len(head))
    for r in results:
        ra, ad, ctl = r["ratio"], r["added_us"], r["control"]
        print(f"{r['name']:<44} {r['xpuruntime_us']['median']:>9.2f} {r['bare_us']['median']:>9.2f} "
              f"{ra['p10']:>6.3f}/{ra['median']:.3f}/{ra['p90']:.3f} "
              f"{ad['p10']:>7.2f}/{ad['median']:.2f}/{ad['p90']:.2f} "
              f"{ctl['ratio']['median']:>9.3f} {ctl['added_us']['median']:>7.2f} "
              f"{r['goal']['text']:>13} {'PASS' if r['goal']['passed'] else 'FAIL':>4}")
    print("(ratio, added: per-round xpuruntime vs bare; A/A: a second bare session vs the first, the noise floor)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="few iterations (CI smoke run)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads for both sessions (default 1)")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"result file (default {DEFAULT_JSON})")
    p.add_argument("--mid-seq", type=int, default=96, help="sequence length of the ~1 ms model (default 96)")
    p.add_argument("--strict", action="store_true", help="exit 1 if a goal is missed")
    args = p.parse_args(argv)

    xrt = _import_xpuruntime()
    import onnxruntime as ort

    from xpuruntime.inference.samples import matmul_relu, tiny_transformer

    iters = ITERS["quick" if args.quick else "full"]
    rng = np.random.default_rng(0)
    models = [
        ("tiny", "matmul_relu m=1 k=16 n=16", matmul_relu(1, 16, 16),
         rng.standard_normal((1, 16)).astype(np.float32)),
        ("mid", f"tiny_transformer d=256 ffn=1024 x[1,{args.mid_seq},256]",
         tiny_transformer(d_model=256, heads=4, ffn=1024),
         rng.standard_normal((1, args.mid_seq, 256)).astype(np.float32)),
    ]
    results = []
    for kind, name, model, x in models:
        a, b, c = build_sessions(xrt, model, args.threads)  # c: the A/A control, another bare session
        warmup, rounds, block = iters[kind]
        print(f"[{name}] warm-up {warmup}, {rounds} interleaved rounds of {block}-call blocks ...", flush=True)
        r = measure(a, b, c, x, warmup, rounds, block)
        if kind == "tiny":
            passed = r["added_us"]["median"] <= TINY_GOAL_US
            goal = {"metric": "added_us.median", "limit": TINY_GOAL_US, "text": f"add<={TINY_GOAL_US:g}us"}
        else:
            passed = r["ratio"]["median"] <= MID_GOAL_RATIO
            goal = {"metric": "ratio.median", "limit": MID_GOAL_RATIO, "text": f"ratio<={MID_GOAL_RATIO:g}"}
            bare_ms = r["bare_us"]["median"] / 1e3
            print(f"  measured time of the ~1 ms model (bare ORT, median): {bare_ms:.3f} ms"
                  + ("" if 0.5 <= bare_ms <= 2.0 else "  (outside 0.5-2 ms: adjust --mid-seq)"))
        goal["passed"] = bool(passed)
        results.append({"key": kind, "name": name, "input_shape": list(x.shape),
                        "providers": a.engine.session.get_providers(),
                        "graph_optimization_level": a.engine.plan.graph_level, **r, "goal": goal})
        a.close()
        del b, c

    payload = {
        "benchmark": "ort_overhead_cpu",
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "device": {"cpu": cpu_description(), "processor": platform.processor(), "machine": platform.machine(),
                   "logical_cpus": os.cpu_count(), "platform": platform.platform()},
        "python": platform.python_version(),
        "onnxruntime_version": ort.__version__,
        "xpuruntime_version": getattr(xrt, "__version__", None),
        "numpy_version": np.__version__,
        "command": [sys.executable, *sys.argv],
        "mode": "quick" if args.quick else "full",
        "threads": {"intra_op": args.threads, "inter_op": 1},
        "method": "interleaved rounds of one block per session, order rotated (ABC, BCA, CAB); perf_counter_ns; "
                  "per-round ratio and difference per call (A=xpuruntime, B=bare ORT, C=second bare ORT as A/A "
                  "control); same model bytes, provider, graph level, threads and numpy feed object for all",
        "results": results,
        "all_passed": all(r["goal"]["passed"] for r in results),
    }
    write_json(args.json, payload)
    print()
    print(f"onnxruntime {ort.__version__}, xpuruntime {payload['xpuruntime_version']}, "
          f"{payload['device']['cpu']}, intra-op threads {args.threads}")
    print_table(results)
    print(f"\nwritten: {args.json}")
    return 1 if args.strict and not payload["all_passed"] else 0


if __name__ == "__main__":
    sys.exit(main())
