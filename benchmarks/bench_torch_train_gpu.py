"""GPT-style decoder training step on one GPU: eager, torch.compile + bf16, and xpuruntime policies, interleaved.

Model: GPT-2 small shape (12 layers, d_model 768, 12 heads, vocab 50304), sequence 1024, batch 8; one step
is forward, cross-entropy loss, backward and a fused AdamW step. Every configuration is built first (same
initial weights, same batch), then all are timed **interleaved** in this process (per window, ``iters`` steps
of each in turn), so clock and thermal drift hit all alike:

- ``eager``: torch's defaults (fp32; SDPA and cuBLAS as torch picks them);
- ``compile-bf16``: ``torch.compile(model)`` with bf16 autocast (the strongest like-for-like alternative);
- ``policy``: one xpuruntime policy (bf16, ``attention=flash``, ``matmul=cublaslt``, ``layernorm=triton`` when
  xpuruntime.kernels registers it) and the whole step captured as one CUDA graph (``xrt_torch.capture_graph``);
- ``policy+compile``: the policy with ``execution.compile: default`` (``xrt_torch.compile_step(model, policy)``:
  inductor's own Triton for LayerNorm and the pointwise ops) and the whole compiled step captured as one CUDA
  graph;
- ``tuned``: the ``policy`` row's policy tuned on this step (``xpuruntime.kernels`` tuner, matmul cublaslt/triton,
  the LayerNorm stays Triton) and passed through the whole-step check (``xrt_torch.check_end_to_end``: only rules that do not
  slow the step are kept; the base policy when the tuned step is slower), captured as one CUDA graph;
- with ``--extra``: ``eager-bf16`` (autocast only), ``compile`` (fp32), ``policy+compile-ro``
  (``compile: reduce-overhead``: torch's CUDA graph trees instead of xpuruntime's whole-step graph).

Tokens per second are the median of the timed windows; compilation, tuning and capture are reported apart.
Goals: the best policy row >= 2x eager and >= compile-bf16; the tuned row never slower than the policy row.

    python benchmarks/bench_torch_train_gpu.py [--json PATH] [--quick] [--extra] [--no-tuned]

The JSON goes to ``--json``, else ``$OUT/torch_train_gpu.json`` when ``$OUT`` is set, else benchmarks/results/.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import math
import os
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
BUDGET_S = 330  # start a configuration only before this many seconds (a cold compile takes ~1-1.5 min): < 8 min


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


def _free() -> None:
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()


Data = tuple[torch.Tensor, torch.Tensor]


def _policy(compile_mode: str | None = None, triton_ln: bool = True) -> xrt.Policy:
    import xpuruntime.kernels as xk

    kernels: dict[str, Any] = {"attention": "flash", "matmul": "cublaslt"}
    if triton_ln and "triton" in xk.get_registry().kernels("layernorm"):
        kernels["layernorm"] = "triton"
    execution: dict[str, Any] = {"precision": "bf16", "fallback": "warn", "static_shape": True, "cuda_graphs": True}
    if compile_mode:
        execution["compile"] = compile_mode
    return xrt.Policy(kernels=kernels, execution=execution)


def build_eager(data: Data, bf16: bool) -> tuple[Callable[[], Any], dict[str, Any]]:
    model, opt = _setup()
    step = _step_fn(model, opt, bf16=bf16)
    return (lambda: step(*data)), {}


def build_compile(data: Data, bf16: bool) -> tuple[Callable[[], Any], dict[str, Any]]:
    model, opt = _setup()
    step = _step_fn(torch.compile(model), opt, bf16=bf16)
    t0 = time.perf_counter()
    for _ in range(3):  # compilation of forward and backward, then recompiles if any
        step(*data)
    torch.cuda.synchronize()
    return (lambda: step(*data)), {"compile_warmup_s": round(time.perf_counter() - t0, 1)}


def _graphed(policy: xrt.Policy, model: Any, opt: Any, forward: Any, data: Data,
             receipt: bool = True) -> tuple[Callable[[], Any], dict[str, Any]]:
    """The step under ``policy``, captured whole as a CUDA graph (a profiled eager step first: the receipt)."""
    step = _step_fn(forward, opt)  # precision comes from the policy (autocast entered by policy())
    info: dict[str, Any] = {"policy": policy.to_dict(), "policy_hash": policy.short_hash}
    with xrt_torch.policy(policy) as applied:
        if receipt:
            with xrt_torch.profile() as rep:
                step(*data)
            info["receipt"] = _receipt_summary(rep)
        t0 = time.perf_counter()
        graphed = xrt_torch.capture_graph(step, *data, state=(model, opt), warmup=3)
        torch.cuda.synchronize()
    info.update({"captured": graphed.captured, "capture_s": round(time.perf_counter() - t0, 2),
                 "applied": applied.requested, "graph_violations": [str(v) for v in graphed.violations]})
    return graphed.replay, info


def build_policy(data: Data) -> tuple[Callable[[], Any], dict[str, Any]]:
    model, opt = _setup(capturable=True)
    return _graphed(_policy(), model, opt, model, data)


def build_policy_compile(data: Data, mode: str = "default") -> tuple[Callable[[], Any], dict[str, Any]]:
    """execution.compile as part of the policy: compile_step(model, policy), then the whole step as one graph
    (mode default); reduce-overhead leaves graphs to torch.compile's CUDA graph trees."""
    model, opt = _setup(capturable=True)
    policy = _policy(mode, triton_ln=False)  # inductor writes its own Triton LayerNorm
    compiled = xrt_torch.compile_step(model, policy)
    if mode == "reduce-overhead":
        step = _step_fn(compiled, opt)
        t0 = time.perf_counter()
        with xrt_torch.policy(policy):
            for _ in range(3):
                step(*data)
        torch.cuda.synchronize()
        return (lambda: step(*data)), {"compile_warmup_s": round(time.perf_counter() - t0, 1),
                                       "policy": policy.to_dict(), "mode": compiled.mode}
    t0 = time.perf_counter()
    run, info = _graphed(policy, model, opt, compiled, data, receipt=False)
    info.update({"compile_warmup_s": round(time.perf_counter() - t0, 1), "mode": compiled.mode})
    return run, info


def build_tuned(data: Data) -> tuple[Callable[[], Any], dict[str, Any]]:
    """Tune the policy row's policy on this step, keep what the whole-step check keeps, capture it."""
    import xpuruntime.kernels as xk
    from xpuruntime.kernels import tuner as T

    model, opt = _setup(capturable=True)
    base = _policy()
    step = _step_fn(model, opt)
    t0 = time.perf_counter()
    with xk.recording() as rec, xrt_torch.policy(base):
        step(*data)
    kernels = {"matmul": [k for k in ("cublaslt", "triton") if k in xk.get_registry().kernels("matmul")]}
    targets = [t for t in rec.targets if t.op == "matmul"]  # the LayerNorm stays the policy's Triton kernel
    records = T.Tuner(warmup=3, repeats=10, kernels=kernels, policy=base).tune(targets)
    tuned = T.build_policy(records, base)
    tune_s = time.perf_counter() - t0
    outcome = xrt_torch.check_end_to_end(lambda: step(*data), base, tuned, warmup=2, repeats=5, rounds=3)
    run, info = _graphed(outcome.policy, model, opt, model, data, receipt=False)
    info.update({"tune_s": round(tune_s, 1), "records": len(records), "end_to_end": outcome.data,
                 "written": outcome.written, "why": outcome.why,
                 "rules": sum(len(p.rules) for op in tuned.kernels.ops if (p := tuned.kernels.preference(op)))})
    return run, info


def measure_interleaved(runs: dict[str, Callable[[], Any]], warmup: int, iters: int,
                        windows: int) -> dict[str, dict[str, Any]]:
    for run in runs.values():
        for _ in range(warmup):
            run()
    torch.cuda.synchronize()
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(windows):
        for name, run in runs.items():
            t0 = time.perf_counter()
            for _ in range(iters):
                run()
            torch.cuda.synchronize()
            rates[name].append(iters * BATCH * SEQ / (time.perf_counter() - t0))
    out = {}
    for name, r in rates.items():
        r.sort()
        out[name] = {"tokens_per_s": r[len(r) // 2], "windows_tokens_per_s": r,
                     "ms_per_step": BATCH * SEQ / r[len(r) // 2] * 1e3}
    return out


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


def _environment() -> dict[str, Any]:
    props = torch.cuda.get_device_properties(0)
    return {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "device": props.name,
            "capability": f"{props.major}.{props.minor}", "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(), "python": platform.python_version(),
            "model": {"layers": LAYERS, "d_model": DIM, "heads": HEADS, "vocab": VOCAB, "seq": SEQ, "batch": BATCH}}


def _table(rows: dict[str, dict[str, Any]]) -> str:
    base = rows["eager"]["tokens_per_s"]
    ref = rows.get("compile-bf16", {}).get("tokens_per_s")
    lines = [f"{'config':<20}{'tokens/s':>12}{'ms/step':>10}{'vs eager':>10}{'vs c-bf16':>11}  build"]
    for name, row in rows.items():
        warm = ", ".join(f"{k.removesuffix('_s')} {row[k]} s" for k in ("compile_warmup_s", "tune_s", "capture_s")
                         if k in row)
        vs = f"{row['tokens_per_s'] / ref:>10.2f}x" if ref else f"{'-':>11}"
        lines.append(f"{name:<20}{row['tokens_per_s']:>12,.0f}{row['ms_per_step']:>10.1f}"
                     f"{row['tokens_per_s'] / base:>9.2f}x{vs}  {warm}")
    return "\n".join(lines)


def _goals(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    ours = {k: v["tokens_per_s"] for k, v in rows.items() if k.startswith(("policy", "tuned"))}
    best = max(ours, key=ours.get) if ours else None
    goals: dict[str, Any] = {"best_policy_row": best}
    if best:
        goals["best_vs_eager"] = round(ours[best] / rows["eager"]["tokens_per_s"], 3)
        if "compile-bf16" in rows:
            goals["best_vs_compile_bf16"] = round(ours[best] / rows["compile-bf16"]["tokens_per_s"], 3)
    if "tuned" in rows and "policy" in rows:
        goals["tuned_vs_policy"] = round(rows["tuned"]["tokens_per_s"] / rows["policy"]["tokens_per_s"], 3)
    goals["met"] = bool(best) and goals.get("best_vs_eager", 0) >= 2.0 and goals.get("best_vs_compile_bf16", 1) >= 1.0 \
        and goals.get("tuned_vs_policy", 1.0) >= 0.98  # 2 %: window-to-window noise of interleaved medians
    return goals


def _configs(data: Data, args: argparse.Namespace) -> list[tuple[str, Callable[[], tuple[Any, dict[str, Any]]]]]:
    configs = [("eager", lambda: build_eager(data, bf16=False))]
    if args.extra:
        configs.append(("eager-bf16", lambda: build_eager(data, bf16=True)))
    configs.append(("policy", lambda: build_policy(data)))
    if not args.no_tuned:
        configs.append(("tuned", lambda: build_tuned(data)))
    configs.append(("compile-bf16", lambda: build_compile(data, bf16=True)))
    configs.append(("policy+compile", lambda: build_policy_compile(data)))
    if args.extra:
        configs += [("compile", lambda: build_compile(data, bf16=False)),
                    ("policy+compile-ro", lambda: build_policy_compile(data, "reduce-overhead"))]
    return configs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    parser.add_argument("--quick", action="store_true", help="fewer timed steps")
    parser.add_argument("--extra", action="store_true", help="also eager-bf16, compile (fp32), policy+compile-ro")
    parser.add_argument("--no-tuned", action="store_true", help="skip the tuned row (tuning takes a minute or so)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("needs a CUDA build of torch and a GPU", file=sys.stderr)
        return 2
    out = Path(args.json) if args.json else Path(os.environ["OUT"]) / "torch_train_gpu.json" if os.environ.get("OUT") \
        else Path("benchmarks/results/torch_train_gpu.json")
    sizes = {"warmup": 2, "iters": 5, "windows": 3} if args.quick else {"warmup": 3, "iters": 10, "windows": 5}
    gen = torch.Generator(device="cuda").manual_seed(0)
    data = tuple(torch.randint(0, VOCAB, (BATCH, SEQ), device="cuda", generator=gen) for _ in range(2))
    start, runs, infos, notes = time.perf_counter(), {}, {}, []
    for name, build in _configs(data, args):
        if time.perf_counter() - start > BUDGET_S:
            notes.append(f"{name} skipped: {BUDGET_S} s budget used before it started")
            continue
        _free()
        t0 = time.perf_counter()
        try:
            runs[name], infos[name] = build()
        except Exception as exc:  # one configuration failing must not lose the others' figures
            notes.append(f"{name} failed: {type(exc).__name__}: {' '.join(str(exc).split())[:400]}")
            continue
        infos[name]["build_s"] = round(time.perf_counter() - t0, 1)
        print(f"built {name} in {infos[name]['build_s']} s (peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB)",
              flush=True)
    measured = measure_interleaved(runs, **sizes)
    rows = {name: {**measured[name], **infos[name]} for name in runs}
    print()
    print(_table(rows))
    goals = _goals(rows)
    print("\ngoals: " + ", ".join(f"{k}={v}" for k, v in goals.items()))
    if "tuned" in rows:
        print(f"tuned: {rows['tuned']['written']} ({rows['tuned']['rules']} rules from {rows['tuned']['records']} "
              f"shapes): {rows['tuned']['why']}")
    for name in ("policy", "policy+compile", "tuned"):
        if name in rows and not rows[name].get("captured", True):
            notes.append(f"{name}: the CUDA graph capture failed, it ran eagerly: {rows[name]['graph_violations']}")
    if "policy" in rows:
        receipt = rows["policy"]["receipt"]
        print(f"receipt of a policy step: honoured={receipt['honored']}; "
              + ", ".join(f"{k} x{v['calls']}" for k, v in receipt["ops"].items()))
        notes += receipt["violations"]
    for line in notes:
        print(f"note: {line}")
    write_json(out, {"environment": _environment(), "sizes": sizes, "order": "interleaved windows",
                     "results": rows, "goals": goals, "notes": notes, "total_s": round(time.perf_counter() - start, 1)})
    print(f"wrote {out} ({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
