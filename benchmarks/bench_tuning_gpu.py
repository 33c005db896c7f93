"""Tuning on one GPU: tuned matmul kernels against torch's defaults, the cuBLAS peak, a tuned training step and a
tuned ONNX Runtime CUDA session.

1. GPT-2 small (d 768, ffn 3072, vocab 50257, 12 layers) and medium (d 1024, ffn 4096, 24 layers) forward matmuls
   at batch 1, 8, 32 x seq 1024 (m = batch * 1024) in bf16 and fp16, laid out as F.linear runs them (``b`` =
   weight.t()): each shape is tuned with ``best_performance`` (candidates: default, cublas, cublaslt, nvmath's
   cuBLASLt algorithms; ``--triton`` adds the Triton GEMM), then timed against ``torch.matmul``: the chosen kernel
   called directly ("kernel") and through ``xpuruntime.kernels.matmul`` under the tuned policy ("dispatched",
   xpuruntime's per-call overhead included). Totals weight each shape by how often a forward runs it.
2. 8192^3 bf16: peak = the best of torch.matmul, torch with cuBLASLt, and nvmath's cuBLASLt heuristic pick,
   measured in this run; the tuned choice must reach >= 90% of it.
3. The time tuning takes (per shape and in total).
4. A GPT-2 small training step (bench_torch_train_gpu's model, batch 8, bf16 autocast, eager): torch's defaults vs
   the same step under the policy tuned on the step's own recorded shapes (xpuruntime.pytorch routes the matmuls).
5. ONNX Runtime CUDA (only when onnxruntime-gpu is importable): an MLP of MatMuls in fp16, default session vs
   ``matmul: auto`` (TunableOp) with the tuning results captured once, stored in a lock and replayed.

    python benchmarks/bench_tuning_gpu.py [--quick] [--json benchmarks/results/tuning_gpu.json] [--triton]

``--quick``: GPT-2 small, batch 8, bf16 only, fewer timed calls (about a minute). Full run: under 4 minutes on an
H100 (the budget is checked as it goes; later sections are skipped with a note when it is used up).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_json  # noqa: E402

import xpuruntime.kernels as xk  # noqa: E402
from xpuruntime import Policy  # noqa: E402
from xpuruntime.kernels import nvmath_matmul as nm  # noqa: E402
from xpuruntime.kernels import tuner as T  # noqa: E402
from xpuruntime.policies.lock import Lock  # noqa: E402

BUDGET_S = 225
MODELS = {"gpt2-small": {"d": 768, "ffn": 3072, "layers": 12}, "gpt2-medium": {"d": 1024, "ffn": 4096, "layers": 24}}
VOCAB, SEQ = 50257, 1024


def _layers(cfg: dict[str, int]) -> list[tuple[str, int, int, int]]:
    """(name, n, k, calls per forward) of a GPT-2 block's linear layers and the LM head."""
    d, f, n_layers = cfg["d"], cfg["ffn"], cfg["layers"]
    return [("qkv", 3 * d, d, n_layers), ("proj", d, d, n_layers), ("fc", f, d, n_layers), ("out", d, f, n_layers),
            ("lm_head", VOCAB, d, 1)]


def _per_call_ms(fn: Callable[[], Any], est_ms: float | None, rounds: int) -> float:
    """Median over rounds of (CUDA events around back-to-back calls) / calls; about 5 ms of work per round."""
    calls = max(3, min(200, int(5.0 / max(est_ms or 0.05, 0.005))))
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(rounds):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / calls)
    return statistics.median(times)


def _candidates(with_triton: bool) -> list[str]:
    names = ["cublas", "cublaslt"] + (["triton"] if with_triton else [])
    return names + (["nvmath"] if "nvmath" in xk.get_registry().kernels("matmul") and
                    xk.get_registry().get("matmul", "nvmath").availability() is None else [])


def _summary(record: Any) -> dict[str, Any]:
    return {c.label: round(c.time_ms, 4) if c.time_ms is not None else f"{c.status}: {(c.reason or '')[:80]}"
            for c in record.candidates}


# ---------------------------------------------------------------------------------------------- 1 + 3: GPT-2 shapes
def bench_shapes(models: list[str], batches: list[int], dtypes: list[str], tuner: T.Tuner, rounds: int,
                 deadline: float) -> tuple[list[dict[str, Any]], dict[str, Any], list[str]]:
    rows, notes, tuning_s = [], [], 0.0
    for model in models:
        for batch in batches:
            for dtype in dtypes:
                for name, n, k, count in _layers(MODELS[model]):
                    if time.perf_counter() > deadline:
                        notes.append(f"shapes after {model} b{batch} {dtype} {name} skipped: time budget")
                        return rows, _totals(rows, tuning_s), notes
                    target = T.parse_spec(f"matmul:{dtype}:{batch * SEQ}x{n}x{k}:nt", device="cuda")
                    t0 = time.perf_counter()
                    record = tuner.tune_one(target)
                    took = time.perf_counter() - t0
                    tuning_s += took
                    row = _measure_shape(target, record, rounds)
                    row.update({"model": model, "batch": batch, "layer": name, "count": count,
                                "tuning_s": round(took, 2)})
                    rows.append(row)
                    print(f"{model:12} b{batch:<3} {dtype} {name:8} m={batch * SEQ:<6} {record.kernel:9} "
                          f"{row['tuned_ms']:.4f} ms vs {row['default_ms']:.4f} ms  ({row['speedup']:.2f}x)", flush=True)
                    nm.clear_plans()
    return rows, _totals(rows, tuning_s), notes


def _measure_shape(target: T.Target, record: Any, rounds: int) -> dict[str, Any]:
    a, b = T.make_inputs(target, 7)
    fn = xk.get_registry().get("matmul", record.kernel).bind(record.params)
    policy = T.build_policy([record], all_rules=True)
    est = record.default_time_ms
    default = _per_call_ms(lambda: torch.matmul(a, b), est, rounds)
    tuned = _per_call_ms(lambda: fn(a, b), est, rounds)
    with xk.use_policy(policy):
        dispatched = _per_call_ms(lambda: xk.matmul(a, b), est, rounds)
    params = record.params or {}
    return {"dtype": target.dtype, "m": target.dims["m"], "n": target.dims["n"], "k": target.dims["k"],
            "kernel": record.kernel, "algorithm": params.get("algorithm"), "rank": params.get("rank"),
            "default_ms": round(default, 5), "tuned_ms": round(tuned, 5), "dispatched_ms": round(dispatched, 5),
            "speedup": round(default / tuned, 3), "speedup_dispatched": round(default / dispatched, 3),
            "tflops_tuned": round(2 * target.dims["m"] * target.dims["n"] * target.dims["k"] / tuned / 1e9, 1),
            "candidates_ms": _summary(record)}


def _totals(rows: list[dict[str, Any]], tuning_s: float) -> dict[str, Any]:
    groups: dict[str, dict[str, float]] = {}
    for r in rows:
        key = f"{r['model']} b{r['batch']} {r['dtype']}"
        g = groups.setdefault(key, {"default_ms": 0.0, "tuned_ms": 0.0, "dispatched_ms": 0.0})
        for field in g:
            g[field] += r[field] * r["count"]
    for g in groups.values():
        g.update({k: round(v, 3) for k, v in g.items()})
        g["speedup"] = round(g["default_ms"] / g["tuned_ms"], 3)
        g["speedup_dispatched"] = round(g["default_ms"] / g["dispatched_ms"], 3)
    all_default = sum(g["default_ms"] for g in groups.values())
    all_tuned = sum(g["tuned_ms"] for g in groups.values())
    slower = [f"{r['model']} b{r['batch']} {r['dtype']} {r['layer']}" for r in rows if r["tuned_ms"] >
              r["default_ms"] * 1.05]
    return {"per_forward": groups, "forward_matmul_ms_default": round(all_default, 3),
            "forward_matmul_ms_tuned": round(all_tuned, 3),
            "speedup": round(all_default / all_tuned, 3) if all_tuned else None,
            "tuning_s": round(tuning_s, 1), "shapes": len(rows), "shapes_slower_than_default_by_5pct": slower}


# ---------------------------------------------------------------------------------------------- 2: peak
def bench_peak(tuner: T.Tuner, rounds: int) -> dict[str, Any]:
    target = T.parse_spec("matmul:bf16:8192x8192x8192", device="cuda")
    a, b = T.make_inputs(target, 11)
    flop = 2 * 8192**3
    tflops = {}
    tflops["torch.matmul"] = flop / _per_call_ms(lambda: torch.matmul(a, b), 1.6, rounds) / 1e9
    lt = xk.get_registry().get("matmul", "cublaslt").load_forward()
    tflops["torch cublaslt"] = flop / _per_call_ms(lambda: lt(a, b), 1.6, rounds) / 1e9
    if "nvmath" in _candidates(False):
        tflops["nvmath heuristic"] = flop / _per_call_ms(lambda: nm.matmul(a, b), 1.6, rounds) / 1e9
    record = tuner.tune_one(target)
    fn = xk.get_registry().get("matmul", record.kernel).bind(record.params)
    chosen = flop / _per_call_ms(lambda: fn(a, b), 1.6, rounds) / 1e9
    peak = max(tflops.values())
    nm.clear_plans()
    return {"tflops": {k: round(v, 1) for k, v in tflops.items()}, "peak_tflops": round(peak, 1),
            "peak_from": max(tflops, key=tflops.get), "chosen": record.kernel, "chosen_rank": (record.params or {}).get(
                "rank"), "chosen_tflops": round(chosen, 1), "fraction_of_peak": round(chosen / peak, 3),
            "goal": 0.9, "met": chosen / peak >= 0.9, "candidates_ms": _summary(record)}


# ---------------------------------------------------------------------------------------------- 4: training step
def bench_training(tuner: T.Tuner, quick: bool) -> dict[str, Any]:
    from bench_torch_train_gpu import BATCH, GPT, _step_fn
    from bench_torch_train_gpu import SEQ as TSEQ
    from bench_torch_train_gpu import VOCAB as TVOCAB

    import xpuruntime.pytorch as xrt_torch

    torch.manual_seed(0)
    model = GPT().cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, fused=True)
    step = _step_fn(model, opt, bf16=True)
    gen = torch.Generator(device="cuda").manual_seed(0)
    data = tuple(torch.randint(0, TVOCAB, (BATCH, TSEQ), device="cuda", generator=gen) for _ in range(2))
    with xk.recording() as rec:
        step(*data)
    t0 = time.perf_counter()
    records = tuner.tune([t for t in rec.targets if t.op == "matmul"])
    tuning_s = time.perf_counter() - t0
    tuned = T.build_policy(records)
    iters, windows = (5, 2) if quick else (10, 3)
    default = _step_ms(lambda: step(*data), iters, windows)
    with xrt_torch.policy(tuned, exec_policy={"precision": "bf16"}):
        with xk.dispatch_logging() as logged:
            step(*data)
        routed = _step_ms(lambda: step(*data), iters, windows)
    nm.clear_plans()
    kernels: dict[str, int] = {}
    for r in logged:
        kernels[f"{r.phase} {r.kernel}"] = kernels.get(f"{r.phase} {r.kernel}", 0) + 1
    return {"model": "gpt2-small (bench_torch_train_gpu.GPT)", "batch": BATCH, "seq": TSEQ, "precision": "bf16",
            "default_ms_per_step": round(default, 2), "tuned_ms_per_step": round(routed, 2),
            "speedup": round(default / routed, 3), "tuning_s": round(tuning_s, 1), "tuned_shapes": len(records),
            "rules": len(tuned.kernels.preference("matmul").rules) if "matmul" in tuned.kernels else 0,
            "chosen": {f"{r.dims['m']}x{r.dims['n']}x{r.dims['k']}": r.kernel for r in records},
            "dispatched_kernels": kernels}


def _step_ms(run: Callable[[], Any], iters: int, windows: int) -> float:
    for _ in range(2):
        run()
    torch.cuda.synchronize()
    times = []
    for _ in range(windows):
        t0 = time.perf_counter()
        for _ in range(iters):
            run()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) / iters * 1e3)
    return statistics.median(times)


# ---------------------------------------------------------------------------------------------- 5: ONNX Runtime
def bench_onnxruntime(quick: bool) -> dict[str, Any]:
    try:
        import onnxruntime as ort
    except ImportError:
        return {"skipped": "onnxruntime is not importable"}
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return {"skipped": f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (install onnxruntime-gpu)"}
    import xpuruntime as xrt
    from xpuruntime.inference.engines.onnxruntime import OnnxRuntimeEngine
    from xpuruntime.kernels.tuner import with_tunable_op

    rows, d, f, layers = 8192, 1024, 4096, 4
    with tempfile.TemporaryDirectory() as folder:
        model = _mlp_model(Path(folder) / "mlp.onnx", d, f, layers)
        x = torch.randn(rows, d, device="cuda", dtype=torch.float16)
        base = Policy(execution={"fallback": "warn"})
        t0 = time.perf_counter()
        results = OnnxRuntimeEngine.capture_tuning(model, device="cuda", policy=base, dims={"rows": rows})
        tuning_s = time.perf_counter() - t0
        lock = Lock.create(with_tunable_op(base), [], base_policy=base, engine_tuning={"onnxruntime": results})
        lock_path = lock.save(Path(folder) / "mlp.lock.json")
        plain = xrt.InferenceSession(model, device="cuda", policy=base)
        tuned = xrt.InferenceSession(model, device="cuda", policy=lock_path)
        n = 10 if quick else 30
        default_ms = _session_ms(plain, x, n)
        tuned_ms = _session_ms(tuned, x, n)
        replayed = tuned.report.requested.get("tuning_results_replayed")
        notes = [nt for nt in tuned.report.notes if "TunableOp" in nt]
    return {"onnxruntime": ort.__version__, "model": f"{layers} x (MatMul {d}x{f}, Relu, MatMul {f}x{d}) fp16, "
            f"{rows} rows", "default_ms": round(default_ms, 3), "tuned_ms": round(tuned_ms, 3),
            "speedup": round(default_ms / tuned_ms, 3), "tuning_s": round(tuning_s, 1),
            "tuning_result_sets": len(results), "tuned_ops": sum(len(r.get("results", {})) for r in results),
            "replayed": replayed, "notes": notes}


def _mlp_model(path: Path, d: int, f: int, layers: int) -> Path:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "x"
    for i in range(layers):
        for name, shape in ((f"w{i}a", (d, f)), (f"w{i}b", (f, d))):
            data = (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float16)
            inits.append(helper.make_tensor(name, TensorProto.FLOAT16, shape, data.tobytes(), raw=True))
        nodes += [helper.make_node("MatMul", [prev, f"w{i}a"], [f"h{i}"]),
                  helper.make_node("Relu", [f"h{i}"], [f"r{i}"]),
                  helper.make_node("MatMul", [f"r{i}", f"w{i}b"], [f"y{i}"])]
        prev = f"y{i}"
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["rows", d])],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT16, ["rows", d])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), path)
    return path


def _session_ms(sess: Any, x: torch.Tensor, n: int) -> float:
    feeds = {"x": x}
    for _ in range(3):
        sess.run(feeds)
    torch.cuda.synchronize()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        sess.run(feeds)
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


# ---------------------------------------------------------------------------------------------- main
def _environment() -> dict[str, Any]:
    from xpuruntime.runtime.fingerprint import fingerprint

    props = torch.cuda.get_device_properties(0)
    fp = fingerprint()
    return {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "device": props.name,
            "capability": f"{props.major}.{props.minor}", "torch": torch.__version__, "cuda": torch.version.cuda,
            "driver": fp.driver, "python": platform.python_version(), "fingerprint": fp.short_hash,
            "libraries": {k: v for k, v in fp.libraries.items() if k in ("nvmath-python", "triton", "onnxruntime",
                                                                          "onnxruntime-gpu", "xpuruntime")}}


def _free() -> None:
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default="benchmarks/results/tuning_gpu.json")
    parser.add_argument("--quick", action="store_true", help="GPT-2 small, batch 8, bf16; fewer timed calls")
    parser.add_argument("--triton", action="store_true", help="also tune the Triton GEMM (its autotuning is slow)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("needs a CUDA build of torch and a GPU", file=sys.stderr)
        return 2
    start = time.perf_counter()
    deadline = start + BUDGET_S
    warnings.simplefilter("ignore")  # candidates' own warnings: their outcome is in the records
    tuner = T.Tuner(kernels={"matmul": _candidates(args.triton)}, warmup=3 if args.quick else 5,
                    repeats=10 if args.quick else 20)
    rounds = 3 if args.quick else 5
    models, batches, dtypes = (["gpt2-small"], [8], ["bf16"]) if args.quick else (list(MODELS), [1, 8, 32],
                                                                                   ["bf16", "fp16"])
    result: dict[str, Any] = {"environment": _environment(), "quick": args.quick,
                              "candidates": ["default", *_candidates(args.triton)]}
    rows, totals, notes = bench_shapes(models, batches, dtypes, tuner, rounds, deadline - 80)
    result.update({"shapes": rows, "totals": totals})
    print(f"forward matmuls: {totals['forward_matmul_ms_tuned']} ms tuned vs {totals['forward_matmul_ms_default']} "
          f"ms default ({totals['speedup']}x); tuning {totals['tuning_s']} s for {totals['shapes']} shapes", flush=True)
    for name, run in (("peak_8192_bf16", lambda: bench_peak(tuner, rounds)),
                      ("training_step", lambda: bench_training(tuner, args.quick)),
                      ("onnxruntime_cuda", lambda: bench_onnxruntime(args.quick))):
        if time.perf_counter() > deadline:
            notes.append(f"{name} skipped: time budget ({BUDGET_S} s) used")
            continue
        _free()
        try:
            result[name] = run()
        except Exception as exc:  # noqa: BLE001 - one section failing must not lose the others' figures
            result[name] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
        print(f"{name}: {result[name]}", flush=True)
    result["notes"] = notes
    result["total_s"] = round(time.perf_counter() - start, 1)
    write_json(Path(args.json), result)
    print(f"wrote {args.json} ({result['total_s']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
