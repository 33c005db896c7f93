"""What the torch engine's per-run policy scope costs, piece by piece, with no model run inside (diagnosis).

Builds the torch engine for one model and policy, runs it once (compiles or captures), then times tight loops of
each piece the engine enters around a run: the whole scope (``_scope(receipt=False)``), the switch frame, the
cached hot state, the ``Active`` ContextVar, each context the scope enters (NVTX range, autocast, the kernels
policy, routing, the SDPA check), the run lock, ``inference_mode``; then the model's own call alone and inside
the scope, so an interaction (a guard that reads what the scope set) shows as more than the sum.

    PYTHONPATH=src python benchmarks/profile_scope.py --model minilm --device cuda \
        --execution '{"precision": "fp16", "static_shape": true, "compile": "reduce-overhead"}'
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

from xpuruntime.inference import bench as B  # noqa: E402


def _per_call_us(fn: Any, n: int, device: str, sync: bool = False, blocks_n: int = 7) -> float:
    """Median over ``blocks_n`` blocks of ``n`` calls, in microseconds per call."""
    blocks = []
    for _ in range(blocks_n):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        if sync:
            B._sync(device)
        blocks.append((time.perf_counter() - start) / n * 1e6)
    return float(np.median(blocks))


def _enter_exit(make: Any) -> Any:
    def call() -> None:
        cm = make()
        cm.__enter__()
        cm.__exit__(None, None, None)
    return call


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="minilm")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--device", default="cuda")
    p.add_argument("--execution", default='{"precision": "fp16", "static_shape": true, "compile": "reduce-overhead"}')
    p.add_argument("--precision-mode", default="cast-all")
    p.add_argument("-n", type=int, default=2000, help="calls per timed block of the pieces")
    p.add_argument("--model-calls", type=int, default=200, help="model calls per timed block (5 blocks each way)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    warnings.simplefilter("ignore")
    import torch

    from xpuruntime.inference.engines import torch as te
    from xpuruntime.pytorch import _state

    eng, feeds = bm.warm_torch_engine(args.model, args.batch, json.loads(args.execution), args.device,
                                      args.precision_mode)
    plan = eng.plan.native
    scope = _state.applied(eng.policy, plan, device_type=eng.device_kind, receipt=False)
    scope.__enter__()
    scope.__exit__(None, None, None)
    hot = _state._HOT[(id(eng.policy), id(plan), None, eng.device_kind, ())]
    state, kernels, makers = hot[3], hot[4], hot[5]
    n = args.n
    rows: dict[str, float] = {}
    rows["whole scope, enter + exit"] = _per_call_us(lambda: _enter_exit(
        lambda: _state.applied(eng.policy, plan, device_type=eng.device_kind, receipt=False))(), n, args.device)
    if plan.settings:
        def frame() -> None:
            _state._pop_hot(_state._push_hot(plan))
        rows[f"switch frame ({', '.join(plan.settings)})"] = _per_call_us(frame, n, args.device)
    rows["cached hot state (_hot)"] = _per_call_us(
        lambda: _state._hot(eng.policy, plan, None, eng.device_kind, ()), n, args.device)
    rows["Active ContextVar set + reset"] = _per_call_us(lambda: _state._ACTIVE.reset(_state._ACTIVE.set(state)), n,
                                                         args.device)
    if kernels is not None:
        var, value = kernels
        rows["kernels policy ContextVar set + reset"] = _per_call_us(lambda: var.reset(var.set(value)), n, args.device)
    for i, make in enumerate(makers):
        cm = make()
        rows[f"context {i}: {type(cm).__module__}.{type(cm).__qualname__}"] = _per_call_us(_enter_exit(make), n,
                                                                                          args.device)
    rows["run lock + torch error wrapper"] = _per_call_us(_enter_exit(lambda: _Both(te._RUN_LOCK, te._torch_errors())),
                                                          n, args.device)
    rows["torch.inference_mode()"] = _per_call_us(_enter_exit(torch.inference_mode), n, args.device)
    fn = eng._compiled if eng._compiled is not None else eng.module
    order = [i.name for i in eng._inputs]
    with torch.inference_mode():
        inputs = [eng._as_tensor(feeds[k]) for k in order]

    def model_alone() -> Any:
        with torch.inference_mode():
            return fn(*inputs)

    def model_scoped() -> Any:
        with _state.applied(eng.policy, plan, device_type=eng.device_kind, receipt=False), torch.inference_mode():
            return fn(*inputs)
    m = args.model_calls
    for _ in range(20):
        model_alone(), model_scoped()
    B._sync(args.device)
    alone, scoped = [], []
    for _ in range(5):  # interleaved blocks
        alone.append(_per_call_us(model_alone, m, args.device, sync=True, blocks_n=1))
        scoped.append(_per_call_us(model_scoped, m, args.device, sync=True, blocks_n=1))
    rows["model call alone (same inputs, no sync per call)"] = float(np.median(alone))
    rows["model call in the scope"] = float(np.median(scoped))
    title = f"torch {args.model} b{args.batch} {args.execution} ({args.device}, torch {torch.__version__})"
    print(title)
    print(f"plan: settings={list(plan.settings)} autocast={plan.autocast} custom={bool(plan.custom)} "
          f"attention={plan.attention} nvtx={_nvtx()}")
    print(f"{'piece':64s} {'us per call':>12s}")
    for k, v in rows.items():
        print(f"{k:64s} {v:12.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"title": title, "us_per_call": rows}, indent=2))


class _Both:
    def __init__(self, a: Any, b: Any) -> None:
        self.a, self.b = a, b

    def __enter__(self) -> None:
        self.a.__enter__()
        self.b.__enter__()

    def __exit__(self, *exc: Any) -> None:
        self.b.__exit__(*exc)
        self.a.__exit__(*exc)


def _nvtx() -> bool:
    from xpuruntime.runtime.profiler import nvtx_available

    return nvtx_available()


if __name__ == "__main__":
    main()
