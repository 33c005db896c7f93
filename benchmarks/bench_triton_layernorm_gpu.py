"""Triton LayerNorm bandwidth against a device-to-device copy of the same size, with torch's kernel beside it.

Goal: the forward moves data at >= 80% of the copy bandwidth measured on the same device. Bytes counted are
the ones each pass must move (forward: read x, write y, weight/bias, mean/rstd; backward: read x and dy,
write dx, mean/rstd, weight, write dweight/dbias); the backward's partial sums are overhead, not credited.
Times are medians from ``triton.testing.do_bench`` (L2 flushed before each run). Also reports the wall time
of one ``xpuruntime.kernels.layer_norm`` call (custom op + dispatcher) beside a bare kernel launch.

    python benchmarks/bench_triton_layernorm_gpu.py [--json PATH] [--quick] [--sweep] [--dtype bf16]

``--sweep`` also times other forward/backward block configurations on the first two shapes (adds ~30 s).
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
from _common import write_json  # noqa: E402

SHAPES = [(8192, 768), (4096, 4096), (16384, 1024), (8192, 8192)]
GOAL = 0.8


def _bench(fn, quick: bool) -> float:
    from triton.testing import do_bench

    return float(do_bench(fn, warmup=10 if quick else 25, rep=40 if quick else 100, return_mode="median"))


def _gbps(nbytes: int, ms: float) -> float:
    return nbytes / (ms * 1e-3) / 1e9


def _wall_us(fn, calls: int = 200) -> float:
    import torch

    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / calls * 1e6


def _inputs(shape: tuple[int, int], dtype):
    import torch

    m, n = shape
    g = torch.Generator(device="cuda").manual_seed(0)
    make = lambda *s: torch.randn(*s, device="cuda", dtype=dtype, generator=g)  # noqa: E731
    return make(m, n), make(n), make(n), make(m, n)


def _bytes(shape: tuple[int, int], es: int) -> tuple[int, int]:
    m, n = shape
    fwd = 2 * m * n * es + 2 * n * es + 8 * m
    bwd = 3 * m * n * es + 8 * m + 3 * n * es
    return fwd, bwd


def _one(shape: tuple[int, int], dtype, quick: bool) -> dict:
    import torch

    import xpuruntime.kernels as xk
    from xpuruntime.kernels import triton_layernorm as tln

    x, w, b, dy = _inputs(shape, dtype)
    n, eps = shape[1], 1e-5
    y, mean, rstd = tln.layer_norm_forward(x, w, b, eps)
    ty, tmean, trstd = torch.ops.aten.native_layer_norm(x, [n], w, b, eps)
    err = ((y.float() - ty.float()).abs().max()).item()
    tln.layer_norm_backward(dy, x, w, b, mean, rstd)
    out = torch.empty_like(x)
    fwd_bytes, bwd_bytes = _bytes(shape, x.element_size())
    ms = {
        "copy": _bench(lambda: out.copy_(x), quick),
        "triton_fwd": _bench(lambda: tln.layer_norm_forward(x, w, b, eps), quick),
        "torch_fwd": _bench(lambda: torch.ops.aten.native_layer_norm(x, [n], w, b, eps), quick),
        "triton_bwd": _bench(lambda: tln.layer_norm_backward(dy, x, w, b, mean, rstd), quick),
        "torch_bwd": _bench(lambda: torch.ops.aten.native_layer_norm_backward(
            dy, x, [n], tmean, trstd, w, b, [True, True, True]), quick),
    }
    copy_gbps = _gbps(2 * x.numel() * x.element_size(), ms["copy"])
    row = {"shape": list(shape), "dtype": str(dtype).removeprefix("torch."), "max_abs_diff_vs_torch": err,
           "ms": ms, "copy_gbps": copy_gbps}
    for impl in ("triton", "torch"):
        fwd = _gbps(fwd_bytes, ms[f"{impl}_fwd"])
        both = _gbps(fwd_bytes + bwd_bytes, ms[f"{impl}_fwd"] + ms[f"{impl}_bwd"])
        row.update({f"{impl}_fwd_gbps": fwd, f"{impl}_fwd_vs_copy": fwd / copy_gbps,
                    f"{impl}_fwdbwd_gbps": both, f"{impl}_fwdbwd_vs_copy": both / copy_gbps})
    with xk.use_policy({"kernels": {"layernorm": "triton"}, "execution": {"fallback": "error"}}):
        row["op_call_wall_us"] = _wall_us(lambda: xk.layer_norm(x, w, b, eps))
    row["kernel_call_wall_us"] = _wall_us(lambda: tln.layer_norm_forward(x, w, b, eps))
    row["goal_met"] = row["triton_fwd_vs_copy"] >= GOAL
    return row


def _sweep(shape: tuple[int, int], dtype, quick: bool) -> dict:
    import torch

    from xpuruntime.kernels import triton_layernorm as tln

    x, w, b, dy = _inputs(shape, dtype)
    _, mean, rstd = tln.layer_norm_forward(x, w, b, 1e-5)
    fwd_bytes, bwd_bytes = _bytes(shape, x.element_size())
    block_n = tln.forward_config(shape[1])[1]
    fwd, bwd = [], []
    for bm in (1, 2, 4, 8, 16):
        for warps in (2, 4, 8, 16):
            if bm * block_n > 16384 or bm * block_n < 32 * warps:
                continue
            ms = _bench(lambda bm=bm, warps=warps: tln.layer_norm_forward(x, w, b, 1e-5, block_m=bm, num_warps=warps),
                        quick)
            fwd.append({"block_m": bm, "num_warps": warps, "gbps": _gbps(fwd_bytes, ms)})
    sms = torch.cuda.get_device_properties(x.device).multi_processor_count
    for per_sm in (1, 2, 4):
        for warps in (4, 8, 16):
            ms = _bench(lambda warps=warps, per_sm=per_sm: tln.layer_norm_backward(
                dy, x, w, b, mean, rstd, num_warps=warps, programs=sms * per_sm), quick)
            bwd.append({"programs_per_sm": per_sm, "num_warps": warps, "gbps": _gbps(bwd_bytes, ms)})
    return {"shape": list(shape), "default_forward": list(tln.forward_config(shape[1])),
            "default_backward": list(tln.backward_config(shape[1])),
            "forward": sorted(fwd, key=lambda r: -r["gbps"]), "backward": sorted(bwd, key=lambda r: -r["gbps"])}


def _table(rows: list[dict]) -> None:
    print(f"{'shape':<14}{'copy GB/s':>10}{'triton fwd':>18}{'torch fwd':>18}{'triton fwd+bwd':>18}"
          f"{'torch fwd+bwd':>18}{'op us':>8}{'kernel us':>10}")
    for r in rows:
        cells = [f"{r[f'{k}_gbps']:7.0f} ({r[f'{k}_vs_copy']:4.0%})" for k in
                 ("triton_fwd", "torch_fwd", "triton_fwdbwd", "torch_fwdbwd")]
        print(f"{'x'.join(map(str, r['shape'])):<14}{r['copy_gbps']:>10.0f}" + "".join(f"{c:>18}" for c in cells)
              + f"{r['op_call_wall_us']:>8.1f}{r['kernel_call_wall_us']:>10.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default="benchmarks/results/triton_layernorm_gpu.json")
    parser.add_argument("--quick", action="store_true", help="two shapes, shorter timing loops")
    parser.add_argument("--sweep", action="store_true", help="also time other block configurations")
    parser.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    args = parser.parse_args()
    import torch
    import triton

    if not torch.cuda.is_available():
        print("needs a CUDA device and a CUDA build of torch", file=sys.stderr)
        return 2
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    shapes = SHAPES[:2] if args.quick else SHAPES
    started = time.perf_counter()
    rows = [_one(s, dtype, args.quick) for s in shapes]
    _table(rows)
    sweeps = [_sweep(s, dtype, args.quick) for s in shapes[:2]] if args.sweep else []
    for s in sweeps:
        best_f, best_b = s["forward"][0], s["backward"][0]
        print(f"sweep {s['shape']}: best forward {best_f} (default {s['default_forward']}); "
              f"best backward {best_b}")
    out = {"benchmark": "triton_layernorm_gpu", "date": dt.datetime.now(dt.timezone.utc).isoformat(),
           "device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
           "cuda": torch.version.cuda, "goal_fwd_vs_copy": GOAL, "seconds": round(time.perf_counter() - started, 1),
           "command": " ".join([os.path.basename(sys.executable), *sys.argv]), "python": platform.python_version(),
           "results": rows, "sweeps": sweeps}
    path = Path(args.json)
    write_json(path, out)
    print(f"wrote {path} ({out['seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
