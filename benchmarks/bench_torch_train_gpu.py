"""GPT-style decoder training step on one GPU: eager defaults vs an xpuruntime policy vs torch.compile.

Model: GPT-2 small shape (12 layers, d_model 768, 12 heads, vocab 50304), sequence 1024, batch 8; one step
is forward, cross-entropy loss, backward and a fused AdamW step. Configurations, measured in one run:

- ``eager``: torch's defaults (fp32; SDPA and cuBLAS as torch picks them);
- ``eager-bf16``: only ``torch.autocast(bf16)`` added, to show where the gain comes from;
- ``xpuruntime``: one policy (bf16 autocast, ``attention=flash``, ``matmul=cublaslt``, ``layernorm=triton``
  when xpuruntime.kernels registers it) and the whole step captured as a CUDA graph
  (``xrt_torch.capture_graph``); its receipt (an eager step profiled under the policy) is in the JSON;
- ``compile``: ``torch.compile(model)`` with its defaults (fp32);
- ``compile-bf16``: ``torch.compile(model)`` with bf16 autocast (the like-for-like precision).

Tokens per second are the median of timed windows; torch.compile's warm-up (compilation) and the graph
capture are reported separately. Goal: xpuruntime >= 2x eager and no slower than torch.compile.

    python benchmarks/bench_torch_train_gpu.py [--json PATH] [--quick] [--no-compile]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import math
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_json  # noqa: E402

import xpuruntime as xrt  # noqa: E402
import xpuruntime.pytorch as xrt_torch  # noqa: E402

LAYERS, DIM, HEADS, VOCAB, SEQ, BATCH = 12, 768, 12, 50304, 1024, 8
BUDGET_S = 130  # start compile-bf16 only before this many seconds (a cold compile takes ~1-1.5 min): < 4 min


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(DIM), nn.LayerNorm(DIM)
        self.qkv, self.proj = nn.Linear(DIM, 3 * DIM), nn.Linear(DIM, DIM)
        self.fc, self.out = nn.Linear(DIM, 4 * DIM), nn.Linear(4 * DIM, DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = (z.view(b, t, HEADS, c // HEADS).transpose(1, 2) for z in self.qkv(self.ln1(x)).split(c, dim=-1))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, c))
        return x + self.out(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(VOCAB, DIM), nn.Embedding(SEQ, DIM)
        self.blocks = nn.ModuleList(Block() for _ in range(LAYERS))
        self.ln = nn.LayerNorm(DIM)
        self.head = nn.Linear(DIM, VOCAB, bias=False)
        self.head.weight = self.tok.weight  # tied, as in GPT-2
        for name, p in self.named_parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02 / (math.sqrt(2 * LAYERS) if name.endswith(("proj.weight", "out.weight"))
                                              else 1.0))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))


def _setup(capturable: bool = False) -> tuple[GPT, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = GPT().cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, fused=True, capturable=capturable)
    return model, opt


def _step_fn(model: Callable[..., Any], opt: torch.optim.Optimizer, bf16: bool = False) -> Callable[..., Any]:
    """One training step; ``bf16`` wraps the forward in autocast (the xpuruntime row gets it from its policy)."""

    def step(idx: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            logits = model(idx)
        loss = F.cross_entropy(logits.float().view(-1, VOCAB), tgt.view(-1))
        loss.backward()
        opt.step()
        return loss

    return step


def _measure(run: Callable[[], Any], warmup: int, iters: int, windows: int) -> dict[str, Any]:
    for _ in range(warmup):
        run()
    torch.cuda.synchronize()
    rates = []
    for _ in range(windows):
        t0 = time.perf_counter()
        for _ in range(iters):
            run()
        torch.cuda.synchronize()
        rates.append(iters * BATCH * SEQ / (time.perf_counter() - t0))
    rates.sort()
    return {"tokens_per_s": rates[len(rates) // 2], "windows_tokens_per_s": rates,
            "ms_per_step": BATCH * SEQ / rates[len(rates) // 2] * 1e3}


def _free() -> None:
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()


def _peak_gib() -> float:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2)


def bench_eager(data: tuple[torch.Tensor, torch.Tensor], sizes: dict[str, int], bf16: bool) -> dict[str, Any]:
    model, opt = _setup()
    step = _step_fn(model, opt, bf16=bf16)
    row = _measure(lambda: step(*data), **sizes)
    row["peak_gib"] = _peak_gib()
    return row


def _policy() -> xrt.Policy:
    import xpuruntime.kernels as xk

    kernels: dict[str, Any] = {"attention": "flash", "matmul": "cublaslt"}
    if "triton" in xk.get_registry().kernels("layernorm"):
        kernels["layernorm"] = "triton"
    return xrt.Policy(kernels=kernels, execution={"precision": "bf16", "fallback": "warn", "static_shape": True,
                                                  "cuda_graphs": True})


def bench_xpuruntime(data: tuple[torch.Tensor, torch.Tensor], sizes: dict[str, int]) -> dict[str, Any]:
    model, opt = _setup(capturable=True)
    step = _step_fn(model, opt)  # precision comes from the policy (autocast entered by policy())
    policy = _policy()
    with xrt_torch.policy(policy) as applied:
        with xrt_torch.profile() as receipt:  # one eager step, profiled: the evidence of what the policy ran
            step(*data)
        t0 = time.perf_counter()
        graphed = xrt_torch.capture_graph(step, *data, state=(model, opt), warmup=3)
        capture_s = time.perf_counter() - t0
        row = _measure(graphed.replay, **sizes)
        with xrt_torch.profile() as replay_receipt:
            graphed.replay()
    row.update({"peak_gib": _peak_gib(), "captured": graphed.captured, "capture_s": round(capture_s, 2),
                "policy": policy.to_dict(), "policy_hash": policy.short_hash, "applied": applied.requested,
                "receipt": _receipt_summary(receipt), "replay_receipt": _receipt_summary(replay_receipt)})
    del graphed
    return row


def _receipt_summary(receipt: xrt.ExecutionReport) -> dict[str, Any]:
    ops: dict[str, dict[str, Any]] = {}
    for n in receipt.nodes:
        key = f"{n.op_type}: {n.kernel} ({n.precision})"
        entry = ops.setdefault(key, {"calls": 0, "time_us": 0.0, "requested": n.requested_kernel, "names": []})
        entry["calls"] += n.calls
        entry["time_us"] = round(entry["time_us"] + (n.time_us or 0.0), 1)
        if n.name not in entry["names"] and len(entry["names"]) < 3:
            entry["names"].append(n.name)
    return {"honored": receipt.honored, "violations": [str(v) for v in receipt.violations], "notes": receipt.notes,
            "ops": ops}


def bench_compile(data: tuple[torch.Tensor, torch.Tensor], sizes: dict[str, int], bf16: bool) -> dict[str, Any]:
    model, opt = _setup()
    step = _step_fn(torch.compile(model), opt, bf16=bf16)
    t0 = time.perf_counter()
    for _ in range(3):  # compilation of forward and backward, then recompiles if any
        step(*data)
    torch.cuda.synchronize()
    warmup_s = time.perf_counter() - t0
    row = _measure(lambda: step(*data), **{**sizes, "warmup": 1})
    row.update({"peak_gib": _peak_gib(), "compile_warmup_s": round(warmup_s, 1)})
    return row


def _environment() -> dict[str, Any]:
    props = torch.cuda.get_device_properties(0)
    return {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "device": props.name,
            "capability": f"{props.major}.{props.minor}", "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(), "python": platform.python_version(),
            "model": {"layers": LAYERS, "d_model": DIM, "heads": HEADS, "vocab": VOCAB, "seq": SEQ, "batch": BATCH}}


def _table(rows: dict[str, dict[str, Any]]) -> str:
    base = rows["eager"]["tokens_per_s"]
    lines = [f"{'config':<14}{'tokens/s':>12}{'ms/step':>10}{'vs eager':>10}{'peak GiB':>10}  warm-up"]
    for name, row in rows.items():
        warm = (f"compile {row['compile_warmup_s']} s" if "compile_warmup_s" in row
                else f"capture {row['capture_s']} s" if "capture_s" in row else "")
        lines.append(f"{name:<14}{row['tokens_per_s']:>12,.0f}{row['ms_per_step']:>10.1f}"
                     f"{row['tokens_per_s'] / base:>9.2f}x{row['peak_gib']:>10}  {warm}")
    return "\n".join(lines)


def _goals(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    ours = rows["xpuruntime"]["tokens_per_s"]
    goals = {"xpuruntime_vs_eager": round(ours / rows["eager"]["tokens_per_s"], 2), "goal_vs_eager": 2.0}
    for name in ("compile", "compile-bf16"):
        if name in rows:
            goals[f"xpuruntime_vs_{name}"] = round(ours / rows[name]["tokens_per_s"], 2)
    goals["met"] = goals["xpuruntime_vs_eager"] >= 2.0 and goals.get("xpuruntime_vs_compile", 1.0) >= 1.0
    return goals


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default="benchmarks/results/torch_train_gpu.json")
    parser.add_argument("--quick", action="store_true", help="fewer timed steps (about a minute)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("needs a CUDA build of torch and a GPU", file=sys.stderr)
        return 2
    sizes = {"warmup": 2, "iters": 5, "windows": 2} if args.quick else {"warmup": 3, "iters": 10, "windows": 3}
    gen = torch.Generator(device="cuda").manual_seed(0)
    data = tuple(torch.randint(0, VOCAB, (BATCH, SEQ), device="cuda", generator=gen) for _ in range(2))
    start, rows, notes = time.perf_counter(), {}, []
    for name, run in [("eager", lambda: bench_eager(data, sizes, bf16=False)),
                      ("eager-bf16", lambda: bench_eager(data, sizes, bf16=True)),
                      ("xpuruntime", lambda: bench_xpuruntime(data, sizes)),
                      ("compile", lambda: bench_compile(data, sizes, bf16=False)),
                      ("compile-bf16", lambda: bench_compile(data, sizes, bf16=True))]:
        if name.startswith("compile") and args.no_compile:
            continue
        if name == "compile-bf16" and time.perf_counter() - start > BUDGET_S:
            notes.append(f"compile-bf16 skipped: {BUDGET_S} s budget used")
            continue
        _free()
        rows[name] = run()
        print(f"{name}: {rows[name]['tokens_per_s']:,.0f} tokens/s", flush=True)
    print()
    print(_table(rows))
    goals = _goals(rows)
    print(f"\nxpuruntime vs eager: {goals['xpuruntime_vs_eager']}x (goal >= 2x); "
          + "; ".join(f"vs {k.removeprefix('xpuruntime_vs_')}: {v}x" for k, v in goals.items()
                      if k.startswith("xpuruntime_vs_") and k != "xpuruntime_vs_eager"))
    receipt = rows["xpuruntime"]["receipt"]
    print(f"receipt of a policy step: honoured={receipt['honored']}; "
          + ", ".join(f"{k} x{v['calls']}" for k, v in receipt["ops"].items()))
    for line in notes + receipt["violations"]:
        print(f"note: {line}")
    write_json(Path(args.json), {"environment": _environment(), "sizes": sizes, "results": rows, "goals": goals,
                                 "notes": notes, "total_s": round(time.perf_counter() - start, 1)})
    print(f"wrote {args.json} ({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
