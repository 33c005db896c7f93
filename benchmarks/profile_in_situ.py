"""What each layer of a call costs where it runs: right after the engine's work, not in a tight loop (diagnosis).

A piece of Python timed in a tight loop runs from warm caches; in a serving loop it runs right after the engine's
own work (kernel launches, a device synchronisation, a copy back), which has evicted much of what it touches. This
script builds the torch engine for one model and policy, runs it once, then times each piece of xpuruntime's call
two ways: in a tight loop ("warm"), and once per round right after a hand-driven run of the engine's own instance
and a synchronisation ("in situ", the way the next call meets it). The ratio is what the piece really costs per call
over what a micro-benchmark says.

    PYTHONPATH=src python benchmarks/profile_in_situ.py --device cuda \
        --execution '{"precision": "fp16", "static_shape": true, "compile": "default", "cuda_graphs": true}'
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import bench_models as bm  # noqa: E402

from xpuruntime.inference import _bare  # noqa: E402
from xpuruntime.inference import bench as B  # noqa: E402


def _warm_us(fn: Any, n: int) -> float:
    blocks = []
    for _ in range(7):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        blocks.append((time.perf_counter() - start) / n * 1e6)
    return float(np.median(blocks))


def _in_situ_us(fn: Any, engine_call: Any, sync: Any, rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        engine_call()
        sync()
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e6)
    return float(np.median(samples))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="minilm")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--device", default="cuda")
    p.add_argument("--execution", default='{"precision": "fp16", "static_shape": true, "compile": "default", '
                                          '"cuda_graphs": true}')
    p.add_argument("--rounds", type=int, default=400)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    warnings.simplefilter("ignore")
    import torch

    from xpuruntime.pytorch import _state

    eng, feeds = bm.warm_torch_engine(args.model, args.batch, json.loads(args.execution), args.device, "cast-all")
    make, _ = _bare.same_instance(eng)
    hand = make(feeds, "host")  # the engine's own instance from a hand loop: the work every piece follows

    def sync() -> None:
        B._sync(args.device)

    out_names = list(eng._output_list)
    checked = eng.check_feeds(feeds, eng._feeds)
    results = hand()
    plan = eng.plan.native
    py = list(range(64))

    def spans() -> None:
        eng._spans.end(eng._spans.begin("run"))

    def scope() -> None:
        s = _state.applied(eng.policy, plan, device_type=eng.device_kind, receipt=False)
        s.__enter__()
        s.__exit__(None, None, None)

    pieces: dict[str, Any] = {
        "nothing (the timer)": lambda: None,
        "64-item Python loop (reference)": lambda: sum(x * 2 for x in py),
        "time.time_ns() x2": lambda: (time.time_ns(), time.time_ns()),
        "check_feeds (numpy fast path)": lambda: eng.check_feeds(feeds, eng._feeds),
        "span begin + end": spans,
        "policy scope enter + exit": scope,
        "results dict(zip(...))": lambda: dict(zip(out_names, results)),
        "run lock acquire + release": lambda: (eng_lock.acquire(), eng_lock.release()),
    }
    from xpuruntime.inference.engines import torch as te

    eng_lock = te._RUN_LOCK
    if eng._replay is not None:
        pieces["xrt prepared path (incl. the engine's work)"] = lambda: eng._replay(checked, out_names)
    pieces["hand loop (the engine's work)"] = hand
    pieces["Engine.run (incl. the engine's work)"] = lambda: eng.run(feeds)
    rows = {}
    for name, fn in pieces.items():
        for _ in range(20):
            fn()
        warm = _warm_us(fn, 50 if "work" in name else 2000)
        situ = _in_situ_us(fn, hand, sync, args.rounds)
        rows[name] = (warm, situ)
    title = f"torch {args.model} b{args.batch} {args.execution} ({args.device}, torch {torch.__version__})"
    print(title)
    print(f"{'piece':48s} {'warm us':>10s} {'in situ us':>11s} {'ratio':>7s}")
    for name, (warm, situ) in rows.items():
        print(f"{name:48s} {warm:10.2f} {situ:11.2f} {situ / warm if warm > 0.05 else float('nan'):7.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"title": title, "warm_vs_in_situ_us": rows}, indent=2))


if __name__ == "__main__":
    main()
