"""Eager against a captured CUDA graph of the same fp16 module, device-resident inputs (no host copies): time per
call and the top GPU kernels of each under torch.profiler (diagnosis: why a captured model can run slower).

    PYTHONPATH=src python benchmarks/profile_graph_kernels.py --model vit --batch 32
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_models as bm  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vit")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--top", type=int, default=8)
    p.add_argument("--why", action="store_true", help="each fused SDPA backend alone, eager and captured: torch's reasons")
    p.add_argument("--attention", default=None, help="an SDPA backend (FLASH_ATTENTION, ...) set around every run")
    args = p.parse_args()
    warnings.simplefilter("ignore")
    import torch

    module, names = bm.build(args.model)
    module = module.cuda().half().eval()
    feeds = bm.feeds(args.model, args.batch)
    xs = [torch.from_numpy(feeds[n]).cuda() for n in names]
    xs = [x.half() if x.is_floating_point() else x for x in xs]
    from xpuruntime.inference._bare import _graphed

    import contextlib

    from torch.nn.attention import SDPBackend, sdpa_kernel
    scope = (lambda: sdpa_kernel([getattr(SDPBackend, args.attention)])) if args.attention else contextlib.nullcontext
    eager = lambda: module(*xs)  # noqa: E731
    if args.why:
        _why(module, xs)
        return
    with torch.inference_mode(), scope():
        graphed = _graphed(module, xs)
        compiled = torch.compile(module, mode="reduce-overhead", dynamic=False)
        for _ in range(5):
            compiled(*xs)
    runs = {"eager": eager, "graph replay": lambda: graphed(*xs), "compile r-o": lambda: compiled(*xs)}
    for name, fn in runs.items():
        with torch.inference_mode(), scope():
            for _ in range(10):
                fn()
            torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(50):
                fn()
            torch.cuda.synchronize()
        print(f"{name:14s} {(time.perf_counter() - start) / 50 * 1e3:8.3f} ms per call (device inputs, 50 calls)")
    for name, fn in runs.items():
        with torch.inference_mode(), torch.profiler.profile(
                activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                fn()
            torch.cuda.synchronize()
        totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
        for e in prof.events():
            if e.device_type == torch.autograd.DeviceType.CUDA:
                totals[e.name][0] += e.device_time_total / 5
                totals[e.name][1] += 1
        gpu = sum(v[0] for v in totals.values())
        print(f"--- {name}: GPU kernel time {gpu / 1e3:.3f} ms per call; top kernels (us per call, launches):")
        for k, (us, n) in sorted(totals.items(), key=lambda kv: -kv[1][0])[:args.top]:
            print(f"   {us:9.1f} {n // 5:4d}  {k[:110]}")


def _why(module, xs) -> None:
    """Each fused SDPA backend alone, eager then under capture: ran, or torch's first reasons for refusing it."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    for backend in ("CUDNN_ATTENTION", "FLASH_ATTENTION", "EFFICIENT_ATTENTION"):
        for mode in ("eager", "captured"):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    with sdpa_kernel([getattr(SDPBackend, backend)]), torch.inference_mode():
                        if mode == "eager":
                            module(*xs)
                        else:
                            g = torch.cuda.CUDAGraph()
                            with torch.cuda.graph(g):
                                module(*xs)
                    result = "ran"
                except RuntimeError as exc:
                    result = "refused: " + str(exc).strip().splitlines()[0][:100]
            reasons = sorted({str(w.message).strip().splitlines()[0][:200] for w in caught
                              if "CUDA Graph is empty" not in str(w.message)})[:5]
            print(f"{backend:20s} {mode:9s} {result}")
            for r in reasons:
                print("      ", r)


if __name__ == "__main__":
    main()
