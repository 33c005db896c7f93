"""Probe: what torch's fp32 precision switches cost per write, and whether a model runs slower while they hold
explicit values ("ieee") instead of torch's defaults ("none"). Diagnosis for the torch engine's per-run frame.

    PYTHONPATH=src python benchmarks/probe_fp32_switches.py --device cuda
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import bench_models as bm  # noqa: E402


def _us(fn: Any, n: int, sync: Any) -> float:
    out = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        sync()
        out.append((time.perf_counter() - start) / n * 1e6)
    return float(np.median(out))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda")
    p.add_argument("--model", default="minilm")
    p.add_argument("--calls", type=int, default=100)
    args = p.parse_args()
    warnings.simplefilter("ignore")
    import torch

    from xpuruntime.policies import Policy
    from xpuruntime.pytorch import _flags, _state
    from xpuruntime.pytorch._translate import translate

    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    module, names = bm.build(args.model)
    module = module.to(args.device).eval()
    feeds = bm.feeds(args.model, 1)
    inputs = [torch.from_numpy(feeds[n]).to(args.device) for n in names]

    def model() -> Any:
        with torch.inference_mode():
            return module(*inputs)

    get = torch._C._get_fp32_precision_getter
    set_ = torch._C._set_fp32_precision_setter
    base = _flags.snapshot()
    print("defaults:", {k: v for k, v in base.items() if k.startswith(("fp32", "legacy"))})
    states = {
        "torch defaults": lambda: None,
        "legacy highest + cuda.matmul=ieee": lambda: (torch.set_float32_matmul_precision("highest"),
                                                       set_("cuda", "matmul", "ieee")),
        "cudnn allow_tf32=False + cuda.conv/rnn=ieee": lambda: (setattr(torch.backends.cudnn, "allow_tf32", False),
                                                                 set_("cuda", "conv", "ieee"),
                                                                 set_("cuda", "rnn", "ieee")),
        "both (the fp32 plan's writes)": lambda: (torch.set_float32_matmul_precision("highest"),
                                                  set_("cuda", "matmul", "ieee"),
                                                  setattr(torch.backends.cudnn, "allow_tf32", False),
                                                  set_("cuda", "conv", "ieee"), set_("cuda", "rnn", "ieee")),
    }
    rows: dict[str, float] = {}
    for _ in range(10):
        model()
    for rep in range(2):
        for name, apply in states.items():
            _flags.restore(base)
            apply()
            t = _us(model, args.calls, sync)
            rows[f"model, {name}"] = min(t, rows.get(f"model, {name}", t))
            _flags.restore(base)
    for name, apply in states.items():  # warnings torch raises per call in each state (each costs a trip to Python)
        _flags.restore(base)
        apply()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model()
        _flags.restore(base)
        print(f"warnings per call, {name}: {len(caught)}", *{str(w.message)[:100] for w in caught}, sep="\n  ")
    rows["write: set_float32_matmul_precision('highest')"] = _us(
        lambda: torch.set_float32_matmul_precision("highest"), 2000, lambda: None)
    rows["write: _set_fp32_precision_setter(cuda, matmul, ieee)"] = _us(lambda: set_("cuda", "matmul", "ieee"), 2000,
                                                                         lambda: None)
    rows["write: cudnn.allow_tf32 = False"] = _us(lambda: setattr(torch.backends.cudnn, "allow_tf32", False), 2000,
                                                  lambda: None)
    rows["read: _get_fp32_precision_getter(cuda, matmul)"] = _us(lambda: get("cuda", "matmul"), 2000, lambda: None)
    _flags.restore(base)
    plan = translate(Policy(execution={"precision": "fp32"}), device=args.device)
    rows["frame push + pop (fp32 plan)"] = _us(lambda: _state._pop(_state._push(plan)), 2000, lambda: None)
    print(f"{'':60s} {'us per call':>12s}")
    for k, v in rows.items():
        print(f"{k:60s} {v:12.2f}")
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(2000):
        _state._pop(_state._push(plan))
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(14)


if __name__ == "__main__":
    main()
