"""Where xpuruntime's per-call time goes against the bare engine, for one model, batch and policy (diagnosis).

Builds the candidates the way ``xrt.bench`` does (``_build``, ``_bare``, ``_caller``), adds a second bare twin
(A/A: the noise floor and what interleaving two engines costs by itself), then times them two ways: each alone in
blocks of calls, and interleaved call by call in an order shuffled every round (``bench``'s order), with each
row's time over the bare twin's of the same round (median, 95% bootstrap interval). With ``--cprofile`` prints cProfile's top entries
of the xpuruntime call and of the bare call.

    PYTHONPATH=/tmp/ortsite:src python benchmarks/profile_run_paths.py --engine onnxruntime --model minilm --io device
    PYTHONPATH=src python benchmarks/profile_run_paths.py --engine torch --model gpt2-128 --batch 32 \
        --execution '{"precision": "fp16", "static_shape": true, "compile": "reduce-overhead"}'
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import pstats
import random
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import bench_models as bm  # noqa: E402

from xpuruntime.inference import bench as B  # noqa: E402


def _sync(device: str) -> None:
    B._sync(device)


def _time(fn: Any, n: int, device: str) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        _sync(device)
        out.append((time.perf_counter() - start) * 1e6)
    return out


def _bound_by_address(eng: Any, feeds: dict[str, Any], run_options: Any = None) -> Any:
    """Bare ONNX Runtime bound the way xpuruntime binds a caller's CUDA tensors: by address (``bind_input`` /
    ``bind_output`` with torch tensors' pointers) instead of OrtValues it allocated; one binding built once."""
    import onnxruntime as ort
    import torch

    source = str(eng.model.path) if eng.model.path else eng.model.data
    sess = ort.InferenceSession(source, sess_options=eng._session_options(), providers=eng.plan.providers)
    host = sess.run(None, feeds)
    ins = {k: torch.from_numpy(v).cuda() for k, v in feeds.items()}
    outs = {o.name: torch.empty(v.shape, dtype=getattr(torch, str(v.dtype)), device="cuda")
            for o, v in zip(sess.get_outputs(), host)}
    binding = sess.io_binding()
    for k, t in ins.items():
        binding.bind_input(k, "cuda", 0, np.dtype(str(t.dtype).removeprefix("torch.")), list(t.shape), t.data_ptr())
    for k, t in outs.items():
        binding.bind_output(k, "cuda", 0, np.dtype(str(t.dtype).removeprefix("torch.")), list(t.shape), t.data_ptr())
    keep = (ins, outs)
    return lambda: (sess.run_with_iobinding(binding, run_options), keep)


def _bisect(xrt: Any, feeds: dict[str, Any], io: str, device: str) -> dict[str, Any]:
    """xpuruntime's call taken apart, outermost layer first: what each layer of ``session.run`` adds is the
    difference between two adjacent rows, and the innermost row runs xpuruntime's own engine object (its ORT
    session and binding, or its compiled module) from a hand-written loop."""
    eng = xrt.engine
    names = list(eng._output_list)
    calls: dict[str, Any] = {}
    if eng.name == "onnxruntime" and io == "device":
        dev, outputs = B._device_buffers(eng, feeds)
        checked = eng.check_feeds(dev, eng._feeds)
        eng.run(dev, outputs=outputs)
        binding, ro = eng._bound[1], eng._run_options
        calls["xrt run_impl"] = lambda: eng.run_impl(checked, names, outputs)
        calls["xrt _run_bound"] = lambda: eng._run_bound(checked, names, outputs)
        calls["xrt session+binding"] = lambda: eng.session.run_with_iobinding(binding, ro)
        calls["xrt session, no ro"] = lambda: eng.session.run_with_iobinding(binding)
        from xpuruntime.inference.feeds import tensor_key

        tensors = [*dev.values(), *outputs.values()]

        def keys_then_run() -> Any:  # the attribute reads of one fast-path check, then the run itself
            for t in tensors:
                tensor_key(t)
            return eng.session.run_with_iobinding(binding, ro)
        calls["tensor keys + session"] = keys_then_run
    elif eng.name == "onnxruntime":
        checked = eng.check_feeds(feeds, eng._feeds)
        ro = eng._run_options
        calls["xrt run_impl"] = lambda: eng.run_impl(checked, names, None)
        if not eng._graphs:
            calls["xrt session.run"] = lambda: eng.session.run(names, checked, ro)
        else:  # ORT's CUDA-graph recipe by hand over xpuruntime's own session, binding and buffers
            eng.run(feeds)
            graph = eng._graph
            staged, outs = graph.inputs, [graph.outputs[n] for n in names]

            def hand_graph_loop() -> Any:
                for k, v in staged.items():
                    v.update_inplace(feeds[k])
                eng.session.run_with_iobinding(graph.binding, ro)
                return [o.numpy() for o in outs]
            calls["xrt session, hand loop"] = hand_graph_loop
    elif eng.name == "torch":
        import torch

        checked = eng.check_feeds(feeds, eng._feeds)
        eng.run(feeds)  # compiles or captures now, so the rows below can reach what it made
        fn = eng._compiled if eng._compiled is not None else eng.module
        dtype = getattr(torch, {"fp16": "float16", "bf16": "bfloat16"}[eng.cast_dtype]) if eng.cast_dtype else None
        order = [i.name for i in eng._inputs]

        def prepare(value: Any) -> Any:
            t = torch.from_numpy(np.ascontiguousarray(value)).to(eng.target)
            return t.to(dtype) if dtype is not None and t.is_floating_point() else t

        def forward_host() -> Any:
            with torch.inference_mode():
                inputs = [eng._as_tensor(feeds[n]) for n in order]
            out = eng._forward(inputs)
            return [t.cpu().numpy() for _, t in _flat(out)]

        def module_host() -> Any:
            with torch.inference_mode():
                out = fn(*[prepare(feeds[n]) for n in order])
            return [t.float().cpu().numpy() for _, t in _flat(out)]

        from xpuruntime.inference.engines import torch as te

        def forward_delivered() -> Any:  # run_impl's way out: flatten, pick by key, _deliver
            with torch.inference_mode():
                inputs = [eng._as_tensor(feeds[n]) for n in order]
                out = eng._forward(inputs)
            flat = dict(te._flatten(out))
            return [te._deliver(flat[k], eng.target, False) for k in eng._keys_of(names)]

        def forward_scoped() -> Any:  # under the policy scope (the Active state set, switches applied)
            with eng._scope(receipt=False):
                return forward_host()

        def forward_locked() -> Any:  # under the engines' run lock and torch's error wrapper
            with te._RUN_LOCK, te._torch_errors():
                return forward_host()

        calls["xrt run_impl"] = lambda: eng.run_impl(checked, names, None)
        if eng._replay is not None:  # the prepared numpy path (graph replayer or host runner), called directly
            calls["xrt prepared path"] = lambda: eng._replay(checked, names)
        calls["xrt _forward"] = forward_host
        calls["  + delivered as run_impl"] = forward_delivered
        calls["  + policy scope"] = forward_scoped
        calls["  + lock, errors"] = forward_locked
        calls["xrt module, bare loop"] = module_host
        if eng._graph is not None and eng._graph.captured:  # xpuruntime's captured graph replayed by hand
            graph = eng._graph
            statics = dict(zip(order, graph.static_args))
            outs = [t for _, t in _flat(graph.outputs)]

            def hand_replay() -> Any:
                for k, static in statics.items():
                    static.copy_(torch.from_numpy(feeds[k]))
                graph.replay()
                return [t.cpu().numpy() for t in outs]
            calls["xrt graph, hand replay"] = hand_replay
            from xpuruntime.inference.engines import _torch_staging as staging

            fill = staging.GraphFeeder(torch, order, graph.static_args, eng._packed).fill
            read = staging.reader(torch, outs) or (lambda: [t.cpu().numpy() for t in outs])

            def hand_staged() -> Any:  # the same, sending and reading as xpuruntime does (pinned, one wait)
                fill(feeds, torch.from_numpy)
                graph.graph.replay()
                return read()
            calls["xrt graph, hand replay, staged I/O"] = hand_staged
    # session.prepare's run: with the feed check, without it (the prepared feeds again), its lean call alone
    if io == "device" and eng.name == "onnxruntime":
        prepared = eng.prepare(dev, outputs=outputs)
        calls["prepared(feeds)"] = lambda: prepared(dev)
    else:
        prepared = eng.prepare(feeds)
        calls["prepared(feeds)"] = lambda: prepared(feeds)
        calls["prepared lean call"] = lambda: prepared._call(feeds)
    calls["prepared()"] = prepared
    return calls


def _flat(out: Any) -> list[Any]:
    from xpuruntime.inference.engines.torch import _flatten

    return _flatten(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--engine", default="torch")
    p.add_argument("--model", default="minilm")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--device", default="cuda")
    p.add_argument("--io", default="host")
    p.add_argument("--execution", default='{"precision": "fp16"}')
    p.add_argument("--precision-mode", default="cast-all")
    p.add_argument("--rounds", type=int, default=300)
    p.add_argument("--cprofile", action="store_true")
    p.add_argument("--bare-first", action="store_true", help="warm and time the bare twins before xpuruntime")
    p.add_argument("--sort", default="tottime", help="cProfile sort key (tottime, cumulative)")
    p.add_argument("--bisect", action="store_true",
                   help="also time xpuruntime's call layer by layer (run_impl, the engine's own session or module "
                        "from a bare loop) and a second xpuruntime twin (A/A)")
    args = p.parse_args()
    warnings.simplefilter("ignore")
    import torch

    module, names = bm.build(args.model)
    feeds = bm.feeds(args.model, args.batch)
    policy = {"execution": json.loads(args.execution)}
    with tempfile.TemporaryDirectory() as tmp:
        if args.engine == "torch":
            model: Any = module
            opts = {"example_inputs": tuple(torch.from_numpy(feeds[n]) for n in names),
                    "precision_mode": args.precision_mode}
        else:
            model, opts = bm.export(module, names, feeds, Path(tmp)), {}
        xrt = B._build(model, args.engine, "xrt", policy, args.device, opts)
        if xrt.row.error:
            raise SystemExit(xrt.row.error)
        bare = B._bare(xrt, model, args.device)
        bare2 = B._bare(xrt, model, args.device)
        cands = {"xpuruntime": xrt, "bare": bare, "bare (A/A)": bare2}
        if args.bare_first:
            cands = {"bare": bare, "bare (A/A)": bare2, "xpuruntime": xrt}
        if args.bisect:
            cands["xpuruntime (A/A)"] = B._build(model, args.engine, "xrt2", policy, args.device, opts)
        calls = {k: B._caller(c, feeds, args.io, args.device) for k, c in cands.items()}
        if args.bisect:
            calls.update(_bisect(xrt, feeds, args.io, args.device))
        if args.engine == "onnxruntime" and args.io == "device":
            calls["bare, by address"] = _bound_by_address(xrt.engine, feeds)
            calls["  + xrt RunOptions"] = _bound_by_address(xrt.engine, feeds, xrt.engine._run_options)
        for fn in calls.values():
            for _ in range(20):
                fn()
        _sync(args.device)
        rows: dict[str, dict[str, float]] = {k: {} for k in calls}
        for k, fn in calls.items():  # alone, in blocks
            rows[k]["block p50 us"] = float(np.median(_time(fn, args.rounds, args.device)))
        inter: dict[str, list[float]] = {k: [] for k in calls}
        order, rng = list(calls), random.Random(0)
        gc.collect()
        for _ in range(args.rounds):  # interleaved, call by call, in an order shuffled every round
            rng.shuffle(order)
            for k in order:
                inter[k] += _time(calls[k], 1, args.device)
        rounds = list(range(args.rounds))
        for k in calls:
            rows[k]["interleaved p50 us"] = float(np.median(inter[k]))
            ratio, (lo, hi) = B.paired_ratio(inter[k], rounds, inter["bare"], rounds)
            rows[k]["paired"] = f"{ratio:.3f} ({lo:.3f}-{hi:.3f})"
        print(f"{args.engine} {args.model} b{args.batch} io={args.io} {args.execution} ({args.device})")
        print(f"{'':24s} {'block p50 us':>14s} {'interleaved p50 us':>20s} {'/ bare, same round (95%)':>26s}")
        for k, r in rows.items():
            print(f"{k:24s} {r['block p50 us']:14.1f} {r['interleaved p50 us']:20.1f} {r['paired']:>26s}")
        if args.cprofile:
            for k in ("xpuruntime", "bare"):
                prof = cProfile.Profile()
                prof.enable()
                for _ in range(200):
                    calls[k]()
                _sync(args.device)
                prof.disable()
                print(f"===== cProfile, 200 calls: {k}")
                pstats.Stats(prof).sort_stats(args.sort).print_stats(14)
        if args.engine == "torch":
            from torch._dynamo.utils import counters

            print("dynamo counters:", {k: dict(v) for k, v in counters.items() if k in ("stats", "recompiles")})
        for c in cands.values():
            c.close()


if __name__ == "__main__":
    main()
