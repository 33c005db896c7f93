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

CUDA graphs (``--graphs``; ``--device cuda`` implies it): the policy is fp16 + ``cuda_graphs`` + ``fixed_shapes``
(+ ``fusions: bert`` on MiniLM, as bench_models.py's ``fp16-bert-graphs``). Per model, interleaved (rounds of one
block per candidate, order rotated every round), with host numpy feeds:

  xpuruntime        ``sess.run(feeds)`` (InferenceSession -> Engine.run -> run_impl -> GraphBinding)
  engine run_impl   ``engine.run_impl(feeds, names, None)``: no base-class work (checks, spans), a diagnostic
  bare              ``_bare.onnxruntime``'s ``host_call`` (what ``xpuruntime bench --baseline`` compares with)
  bare bound-first  the hand-written loop bound before its first run (ONNX Runtime's documented recipe: the graph
                    is captured on the bound buffers), ORT-allocated outputs like the engine's

It prints p50 us per call, per-round ratios against both bare loops, a check that every candidate's outputs follow
new inputs (a loop whose graph reads other buffers returns stale outputs), and what a ``gpu_graph_id`` lookup that
misses costs in this process (ONNX Runtime's Python ``run_with_iobinding`` does one per call unless the RunOptions
name the graph). On the CPU (``--graphs --device cpu``) the same binding runs on CPU OrtValues: the Python work of
the path, without a GPU.

    PYTHONPATH=/tmp/ortsite:src python benchmarks/bench_ort_overhead.py --device cuda --json out.json
    python benchmarks/bench_ort_overhead.py --graphs --device cpu --quick
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
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda; cuda implies --graphs")
    p.add_argument("--graphs", action="store_true", help="the CUDA-graph path against the bare loops (see above)")
    p.add_argument("--models", default=None, help=f"--graphs models, comma-separated, from {', '.join(GRAPH_MODELS)} "
                   "(default add,mlp,transformer and, on cuda, minilm)")
    args = p.parse_args(argv)
    if args.graphs or args.device.startswith("cuda"):
        return main_graphs(args)

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


# -- CUDA graphs ------------------------------------------------------------------------------------------
GRAPH_MODELS = ("add", "mlp", "transformer", "minilm", "bert", "resnet50")
GRAPH_ITERS = {"full": (200, 300, 5), "quick": (20, 30, 2)}  # warm-up calls, rounds, calls per block


def _add_model() -> Any:
    """``y = a + b``, a and b float32 [1, 16]: the smallest graph with two inputs."""
    from onnx import TensorProto, helper

    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 16]) for n in ("a", "b", "y")]
    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["y"], name="add")], "add", io[:2], io[2:])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def _mlp_model(width: int = 256, layers: int = 3) -> Any:
    """``layers`` x (MatMul, Add, Relu), x float32 [batch, width]."""
    from onnx import TensorProto, helper, numpy_helper

    rng, nodes, inits, x = np.random.default_rng(0), [], [], "x"
    for i in range(layers):
        inits += [numpy_helper.from_array((rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32),
                                          f"w{i}"), numpy_helper.from_array(np.zeros(width, np.float32), f"b{i}")]
        nodes += [helper.make_node("MatMul", [x, f"w{i}"], [f"m{i}"]), helper.make_node("Add", [f"m{i}", f"b{i}"],
                  [f"a{i}"]), helper.make_node("Relu", [f"a{i}"], ["y" if i == layers - 1 else f"h{i}"])]
        x = f"h{i}"
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def graph_model(name: str, folder: Path) -> tuple[Any, dict[str, np.ndarray], str]:
    """(model: proto or path, feeds A, fusions) for one --graphs model; the transformers models are exported by
    bench_models.py (random weights, nothing downloaded; needs torch and transformers)."""
    rng = np.random.default_rng(0)
    if name == "add":
        return _add_model(), {k: rng.standard_normal((1, 16)).astype(np.float32) for k in ("a", "b")}, "off"
    if name == "mlp":
        return _mlp_model(), {"x": rng.standard_normal((1, 256)).astype(np.float32)}, "off"
    if name == "transformer":
        from xpuruntime.inference.samples import tiny_transformer

        return tiny_transformer(d_model=256, heads=4, ffn=1024), {
            "x": rng.standard_normal((1, 96, 256)).astype(np.float32)}, "off"
    import bench_models  # the same models, inputs and fusions as the benchmark set

    module, names = bench_models.build(name)
    sample = bench_models.feeds(name, 1)
    return bench_models.export(module, names, sample, folder), sample, bench_models.FUSIONS[name]


def _other_feeds(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Feeds B: the same shapes and dtypes as A, other values (integers stay in [0, 1000), masks stay ones)."""
    rng, out = np.random.default_rng(1), {}
    for k, v in feeds.items():
        if v.dtype.kind == "f":
            out[k] = rng.standard_normal(v.shape).astype(v.dtype)
        elif np.all(v == 1):  # an attention mask
            out[k] = v.copy()
        else:
            out[k] = rng.integers(0, 1000, v.shape).astype(v.dtype)
    return out


def _bound_first(ort: Any, eng: Any, feeds: dict[str, np.ndarray], device: str) -> Any:
    """The hand-written CUDA-graph loop: a session like the engine's, inputs and outputs bound BEFORE the first
    run (which captures), outputs allocated by ONNX Runtime there and kept; then update_inplace, replay, numpy."""
    source = str(eng.model.path) if eng.model.path else eng.model.data
    sess = ort.InferenceSession(source, sess_options=eng._session_options(), providers=eng.plan.providers)
    binding = sess.io_binding()
    inputs = {k: ort.OrtValue.ortvalue_from_numpy(v.copy(), device, 0) for k, v in feeds.items()}
    for k, v in inputs.items():
        binding.bind_ortvalue_input(k, v)
    for o in sess.get_outputs():
        binding.bind_output(o.name, device, 0)
    sess.run_with_iobinding(binding)  # CUDA: warm-up, capture and a replay, inside this call
    outputs = binding.get_outputs()
    copy = device == "cpu"  # a CPU OrtValue's numpy() is a view the next run overwrites (the engine copies too)

    def host_call() -> Any:
        for k, v in inputs.items():
            v.update_inplace(feeds[k])
        sess.run_with_iobinding(binding)
        return [v.numpy().copy() if copy else v.numpy() for v in outputs]
    return host_call


def graph_candidates(xrt: Any, model: Any, feeds: dict[str, np.ndarray], fusions: str,
                     device: str) -> tuple[Any, dict[str, Any], list[str]]:
    """(session, label -> zero-argument call, notes). ``feeds`` is read by every call (update it in place)."""
    import onnxruntime as ort

    from xpuruntime.inference import _bare
    from xpuruntime.inference.engines import _onnxruntime as tr

    cuda = device.startswith("cuda")
    policy = {"cuda_graphs": True, "fixed_shapes": {k: list(v.shape) for k, v in feeds.items()}, "fallback": "allow"}
    if cuda:
        policy["precision"] = "fp16"
    if fusions != "off":
        policy["fusions"] = fusions
    data = model if isinstance(model, (str, Path)) else model.SerializeToString()
    sess = xrt.InferenceSession(data, device=device, exec_policy=policy)
    eng, notes = sess.engine, [f"policy {policy}"]
    if not cuda:  # the CPU provider captures nothing: drive the same binding on CPU OrtValues
        eng._graphs, eng._graph = True, tr.GraphBinding(ort, eng.session, 0, device="cpu")
        notes.append("CPU emulation: GraphBinding on CPU OrtValues; bare is _bare.onnxruntime's plain run")
    if not eng._graphs:
        raise RuntimeError(f"the engine does not take its CUDA-graph path here (providers {eng.session.get_providers()})")
    make, bare_notes = _bare.onnxruntime(eng)
    names = list(eng._output_list)
    calls = {"xpuruntime": lambda: sess.run(feeds),
             "engine run_impl": lambda: eng.run_impl(feeds, names, None),
             "bare": make(feeds, "host"),
             "bare bound-first": _bound_first(ort, eng, feeds, "cuda" if cuda else "cpu")}
    return sess, calls, notes + bare_notes


def _outputs(result: Any) -> list[np.ndarray]:
    values = result.values() if isinstance(result, dict) else result
    return [np.asarray(v, dtype=np.float64) for v in values]


def follow_check(calls: dict[str, Any], feeds: dict[str, np.ndarray]) -> dict[str, Any]:
    """Each candidate on feeds A, then on feeds B (written into the same arrays): does it return new outputs, and
    do they match the bound-first loop's? A loop whose graph reads other buffers returns A's outputs again."""
    a = {label: _outputs(call()) for label, call in calls.items()}
    original = {k: v.copy() for k, v in feeds.items()}
    for k, v in _other_feeds(feeds).items():
        np.copyto(feeds[k], v)
    b = {label: _outputs(call()) for label, call in calls.items()}
    for k, v in original.items():
        np.copyto(feeds[k], v)
    ref = b["bare bound-first"]
    out = {}
    for label in calls:
        changed = any(not np.array_equal(x, y) for x, y in zip(a[label], b[label]))
        err = max((float(np.max(np.abs(x - y))) if x.size else 0.0) for x, y in zip(b[label], ref))
        out[label] = {"follows_new_inputs": changed, "max_abs_vs_bound_first": err}
    return out


def measure_many(calls: dict[str, Any], warmup: int, rounds: int, block: int) -> dict[str, np.ndarray]:
    """Per-call microseconds of each candidate per round: one block each per round, order rotated every round."""
    labels = list(calls)
    for _ in range(warmup):
        for call in calls.values():
            call()
    t = {label: np.empty(rounds) for label in labels}
    clock, rng = time.perf_counter_ns, range(block)
    gc.collect()
    for i in range(rounds):
        for label in labels[i % len(labels):] + labels[: i % len(labels)]:
            call = calls[label]
            t0 = clock()
            for _ in rng:
                call()
            t[label][i] = (clock() - t0) / block / 1e3
    return t


def lookup_miss_us(ort: Any, n: int = 2000) -> float:
    """What one ``RunOptions.get_run_config_entry("gpu_graph_id")`` that misses (a C++ exception) costs here."""
    ro = ort.RunOptions()
    t0 = time.perf_counter_ns()
    for _ in range(n):
        try:
            ro.get_run_config_entry("gpu_graph_id")
        except RuntimeError:
            pass
        except AttributeError:  # an onnxruntime without the lookup
            return float("nan")
    return (time.perf_counter_ns() - t0) / n / 1e3


def looks_up_graph_id(ort: Any) -> bool | None:
    """Whether this onnxruntime's Python ``run_with_iobinding`` reads ``gpu_graph_id`` (None: source unreadable)."""
    import inspect

    try:
        return "_graph_annotation_id" in inspect.getsource(ort.InferenceSession.run_with_iobinding)
    except (OSError, TypeError):
        return None


def print_graph_table(rows: list[dict[str, Any]]) -> None:
    head = (f"{'model':<12} {'xrt us':>8} {'run_impl':>8} {'bare us':>8} {'bound1st':>8} {'xrt/bare':>9} "
            f"{'xrt/bound1st':>12} {'added us':>9} {'follows new inputs (xrt,impl,bare,bound1st)':>45}")
    print(head)
    print("-" * len(head))
    for r in rows:
        if r.get("error"):
            print(f"{r['model']:<12} error: {r['error'][:100]}")
            continue
        p50 = {k: v["median"] for k, v in r["us"].items()}
        follows = ",".join("yes" if r["check"][k]["follows_new_inputs"] else "NO" for k in r["us"])
        print(f"{r['model']:<12} {p50['xpuruntime']:>8.1f} {p50['engine run_impl']:>8.1f} {p50['bare']:>8.1f} "
              f"{p50['bare bound-first']:>8.1f} {r['ratio_vs_bare']['median']:>9.3f} "
              f"{r['ratio_vs_bound_first']['median']:>12.3f} {r['added_us_vs_bare']['median']:>9.1f} {follows:>45}")
    print("(p50 us per call; ratios and added us: medians of per-round values; goal: xrt/bare <= 1.03)")


def graph_row(xrt: Any, name: str, device: str, iters: tuple[int, int, int], folder: Path) -> dict[str, Any]:
    model, feeds, fusions = graph_model(name, folder)
    sess, calls, notes = graph_candidates(xrt, model, feeds, fusions, device)
    try:
        check = follow_check(calls, feeds)
        t = measure_many(calls, *iters)
    finally:
        sess.close()
    xr, bare, first = t["xpuruntime"], t["bare"], t["bare bound-first"]
    return {"model": name, "fusions": fusions, "input_shapes": {k: list(v.shape) for k, v in feeds.items()},
            "notes": notes, "check": check, "us": {k: quantiles(v) for k, v in t.items()},
            "ratio_vs_bare": quantiles(xr / bare), "ratio_vs_bound_first": quantiles(xr / first),
            "added_us_vs_bare": quantiles(xr - bare), "added_us_vs_bound_first": quantiles(xr - first),
            "engine_share_us": quantiles(t["engine run_impl"] - first), "base_class_us": quantiles(
                xr - t["engine run_impl"]), "warmup_rounds_block": list(iters)}


def main_graphs(args: argparse.Namespace) -> int:
    import tempfile

    xrt = _import_xpuruntime()
    import onnxruntime as ort

    device = "cuda" if args.device.startswith("cuda") else "cpu"
    if device == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
        print(f"onnxruntime {ort.__version__} has no CUDAExecutionProvider: {ort.get_available_providers()}")
        return 2
    models = (args.models or ("add,mlp,transformer,minilm" if device == "cuda" else "add,mlp,transformer")).split(",")
    unknown = [m for m in models if m not in GRAPH_MODELS]
    if unknown:
        print(f"unknown --models {unknown}; choose from {', '.join(GRAPH_MODELS)}")
        return 2
    iters = GRAPH_ITERS["quick" if args.quick else "full"]
    miss = lookup_miss_us(ort)
    looks_up = looks_up_graph_id(ort)
    print(f"onnxruntime {ort.__version__} on {device}; its Python run_with_iobinding looks up gpu_graph_id per call: "
          f"{looks_up}; a lookup that misses costs {miss:.1f} us here", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="xrt-ort-overhead-") as tmp:
        for name in models:
            print(f"[{name}] warm-up {iters[0]}, {iters[1]} interleaved rounds of {iters[2]}-call blocks ...", flush=True)
            try:
                rows.append(graph_row(xrt, name, device, iters, Path(tmp)))
            except Exception as exc:  # one model failing must not lose the others
                rows.append({"model": name, "error": f"{type(exc).__name__}: {exc}"})
                print(f"  failed: {type(exc).__name__}: {exc}", flush=True)
    payload = {"benchmark": f"ort_overhead_{device}_graphs",
               "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
               "device": _device_info(device), "python": platform.python_version(),
               "onnxruntime_version": ort.__version__, "xpuruntime_version": getattr(xrt, "__version__", None),
               "ort_run_with_iobinding_looks_up_gpu_graph_id": looks_up, "gpu_graph_id_lookup_miss_us": miss,
               "command": [sys.executable, *sys.argv], "mode": "quick" if args.quick else "full",
               "method": "interleaved rounds of one block per candidate, order rotated; perf_counter_ns; host numpy "
                         "feeds; per-round ratios and differences", "results": rows}
    path = args.json if args.json != DEFAULT_JSON else _graph_json(device)
    write_json(path, payload)
    print()
    print_graph_table(rows)
    print(f"\nwritten: {path}")
    return 1 if any(r.get("error") for r in rows) else 0


def _graph_json(device: str) -> Path:
    name = f"ort_overhead_{device}_graphs.json"
    return Path(os.environ["OUT"]) / name if os.environ.get("OUT") else HERE / "results" / name


def _device_info(device: str) -> dict[str, Any]:
    info: dict[str, Any] = {"cpu": cpu_description(), "logical_cpus": os.cpu_count(), "platform": platform.platform()}
    if device == "cuda":
        try:
            import torch

            info["gpu"] = torch.cuda.get_device_name(0)
        except Exception as exc:  # torch absent or without CUDA: the GPU name is only a label
            info["gpu"] = f"unknown ({type(exc).__name__})"
    return info


if __name__ == "__main__":
    sys.exit(main())
