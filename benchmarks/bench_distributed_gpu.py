"""GPT-2-small training step on 1..N GPUs under torchrun: DDP and FSDP2, eager defaults against the policy.

Run one launch per GPU count (``benchmarks/gpu_distributed.sh`` does 1 and N, then merges)::

    torchrun --standalone --nproc_per_node N benchmarks/bench_distributed_gpu.py --json OUT/dist_N.json
    python benchmarks/bench_distributed_gpu.py --merge OUT/dist_1.json OUT/dist_N.json --json OUT/distributed.json

Model and step: those of ``bench_torch_train_gpu.py`` (12 layers, d_model 768, sequence 1024, batch 8 per GPU,
fused AdamW); ``--model hf`` uses Hugging Face's ``GPT2LMHeadModel`` built from a config (random weights, no
download). Configurations, each on its own fresh model, all in one launch:

- ``eager``: torch's defaults (fp32), wrapped by torch's own ``DistributedDataParallel`` / ``fully_shard``;
- ``eager-bf16``: the same plus ``torch.autocast(bf16)`` (the usual "plain DDP" baseline);
- ``policy``: ``xpuruntime.pytorch.distributed.wrap`` under one policy file (bf16, flash, cublaslt, the
  communication section); DDP: the whole step (forward, backward with its bucketed allreduce, AdamW) captured
  as one CUDA graph after 11 eager warm-up steps, as torch requires for DDP; FSDP2: eager, with the policy's
  precision as ``MixedPrecisionPolicy`` (torch documents whole-step capture for DDP only).

At 1 GPU a ``none`` strategy (no wrapper at all) gives the reference for scaling efficiency:
``tokens/s(N) / (N x tokens/s(1 GPU, none, same configuration))``. Each rank's receipts (the configured
communication settings, the kernels of one profiled step, and the overlap of NCCL kernels with compute kernels
read from torch.profiler) are gathered into the JSON. NVLink multicast stays off (``NCCL_NVLS_ENABLE=0``).

``--sweep`` (``benchmarks/gpu_distributed_sweep.sh``) measures the policy DDP step under communication variants
(bucket sizes, DDP flags, NCCL CTA settings, bf16 reduction of every bucket or of the last one only, the policy with
``execution.compile``, and the best combination), interleaved in one launch per GPU count; ``--sweep NAMES`` (or
``--variants``) picks a subset: see ``_dist_sweep.py``. ``BEST_COMM`` below is the policy's communication section here.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
os.environ.setdefault("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_json

GOAL_EFFICIENCY = 0.95
#: the policy's communication section in this benchmark: the best settings measured so far (``--sweep`` measures
#: the alternatives; ``--comm-json`` overrides it for one run)
BEST_COMM: dict[str, Any] = {"backend": "nccl", "timeout_s": 300, "nccl": {"nvls_enable": False},
                             "ddp": {"bucket_cap_mb": 25, "gradient_as_bucket_view": True},
                             "fsdp": {"reshard_after_forward": True, "prefetch": 1}}


def _merge(paths: list[str], out: str) -> int:
    runs = [json.loads(Path(p).read_text()) for p in paths]
    if any("sweep" in r for r in runs):
        return _merge_sweep([r for r in runs if "sweep" in r], out)
    one = next((r for r in runs if r["world_size"] == 1), None)
    if one is None:
        print("--merge needs the 1-GPU run", file=sys.stderr)
        return 2
    rows = []
    for run in sorted(runs, key=lambda r: r["world_size"]):
        for key, row in run["results"].items():
            strategy, config = key.split("/")
            ref = one["results"].get(f"none/{config}") or one["results"].get(key)
            same = one["results"].get(key)
            n = run["world_size"]
            rows.append({"gpus": n, "strategy": strategy, "config": config, "tokens_per_s": row["tokens_per_s"],
                         "per_gpu": row["tokens_per_s"] / n, "captured": row.get("captured"),
                         "efficiency_vs_1gpu": round(row["tokens_per_s"] / (n * ref["tokens_per_s"]), 4) if ref else None,
                         "efficiency_vs_same_strategy_1gpu": round(row["tokens_per_s"] / (n * same["tokens_per_s"]), 4)
                         if same else None, "overlap": row.get("overlap_fraction")})
    print(f"{'gpus':>4} {'strategy':<9}{'config':<12}{'tokens/s':>12}{'per GPU':>10}{'eff vs 1':>9}{'overlap':>9}"
          "  graph")
    for r in rows:
        eff = f"{r['efficiency_vs_1gpu']:.1%}" if r["efficiency_vs_1gpu"] is not None else "-"
        ov = f"{r['overlap']:.0%}" if isinstance(r["overlap"], float) else "-"
        print(f"{r['gpus']:>4} {r['strategy']:<9}{r['config']:<12}{r['tokens_per_s']:>12,.0f}{r['per_gpu']:>10,.0f}"
              f"{eff:>9}{ov:>9}  {r['captured'] if r['captured'] is not None else ''}")
    top = max(r["gpus"] for r in rows)
    goal = [r for r in rows if r["gpus"] == top and r["strategy"] == "ddp" and r["config"] == "policy"]
    summary = {"goal": f"policy DDP step keeps >= {GOAL_EFFICIENCY:.0%} of linear scaling at {top} GPUs",
               "met": bool(goal and (goal[0]["efficiency_vs_1gpu"] or 0) >= GOAL_EFFICIENCY),
               "policy_ddp": goal[0] if goal else None}
    print(f"\ngoal: {summary['goal']}: {'met' if summary['met'] else 'NOT met'}")
    write_json(Path(out), {"rows": rows, "summary": summary, "runs": runs})
    print(f"wrote {out}")
    return 0


def _merge_sweep(runs: list[dict[str, Any]], out: str) -> int:
    import _dist_sweep

    rows, text = _dist_sweep.table(runs, GOAL_EFFICIENCY)
    print(text)
    write_json(Path(out), {"rows": rows, "table": text.splitlines(), "runs": runs})
    print(f"wrote {out}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default="benchmarks/results/distributed_gpu.json")
    parser.add_argument("--merge", nargs="+", help="merge per-GPU-count JSON files into one table")
    parser.add_argument("--strategies", default="ddp,fsdp2")
    parser.add_argument("--configs", default="eager,eager-bf16,policy")
    parser.add_argument("--model", choices=("bench", "hf"), default="bench")
    parser.add_argument("--iters", type=int, default=7, help="steps per timed window (3 windows)")
    parser.add_argument("--sweep", "--variants", nargs="?", const="all", help="policy DDP step under communication "
                        "variants, interleaved (comma-separated names of _dist_sweep.VARIANTS, control = default; "
                        "or all)")
    parser.add_argument("--rounds", type=int, default=4, help="--sweep: timed rounds (each --steps replays)")
    parser.add_argument("--steps", type=int, default=5, help="--sweep: graph replays per variant per round")
    parser.add_argument("--alive", type=int, default=3, help="--sweep: variants captured at once besides controls")
    parser.add_argument("--min-free-gib", type=float, default=16.0, help="--sweep: skip a variant below this")
    parser.add_argument("--combo-from", help="--sweep: also measure the combination found in this N-GPU JSON")
    parser.add_argument("--comm-json", help="replace the policy's communication section (JSON text)")
    parser.add_argument("--pg-timeout-s", type=int, default=None, help="process-group timeout (default: policy)")
    args = parser.parse_args()
    if args.merge:
        return _merge(args.merge, args.json)
    return _Run(args).main()


class _Run:
    """One rank of a launch."""

    def __init__(self, args: argparse.Namespace) -> None:
        import bench_torch_train_gpu as single
        import torch

        import xpuruntime as xrt
        import xpuruntime.pytorch as xrt_torch
        from xpuruntime.pytorch import distributed as xdist

        self.args, self.torch, self.single, self.xrt, self.xrt_torch, self.xdist = args, torch, single, xrt, \
            xrt_torch, xdist
        self.sizes = {"warmup": 3, "iters": args.iters, "windows": 3}

    # -- setup -------------------------------------------------------------------------------------------------
    def policy(self, strategy: str) -> Any:
        """One policy file per strategy: DDP gets the whole-step CUDA graph, FSDP2 runs eagerly."""
        comm = json.loads(self.args.comm_json) if self.args.comm_json else dict(BEST_COMM)
        if self.args.pg_timeout_s:
            comm["timeout_s"] = self.args.pg_timeout_s
        execution = {"precision": "bf16", "fallback": "warn"}
        kernels: dict[str, Any] = {"attention": "flash", "matmul": "cublaslt"}
        if strategy in ("ddp", "none"):
            execution.update(static_shape=True, cuda_graphs=True)
            kernels = self.single._policy().kernels.to_dict()  # Triton LayerNorm as well, inside the graph
        return self.xrt.Policy(kernels=kernels, execution=execution, communication=comm)

    def model(self) -> Any:
        torch = self.torch
        torch.manual_seed(0)
        if self.args.model == "hf":
            from transformers import GPT2Config, GPT2LMHeadModel

            cfg = GPT2Config(vocab_size=self.single.VOCAB, n_positions=self.single.SEQ, n_embd=768, n_layer=12,
                             n_head=12)
            return GPT2LMHeadModel(cfg, attn_implementation="sdpa").cuda()
        return self.single.GPT().cuda()

    def step_fn(self, model: Any, opt: Any, bf16: bool) -> Callable[..., Any]:
        torch, vocab = self.torch, self.single.VOCAB
        hf = self.args.model == "hf"

        def step(idx: Any, tgt: Any) -> Any:
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
                out = model(idx)
                logits = out.logits if hf else out
            loss = torch.nn.functional.cross_entropy(logits.float().view(-1, vocab), tgt.view(-1))
            loss.backward()
            opt.step()
            return loss

        return step

    def plain_wrap(self, model: Any, strategy: str, bf16: bool) -> Any:
        """torch's own wrappers with their defaults: the eager baselines."""
        if strategy == "ddp":
            from torch.nn.parallel import DistributedDataParallel as DDP

            return DDP(model, device_ids=[self.torch.cuda.current_device()])
        if strategy == "fsdp2":
            from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

            mp = MixedPrecisionPolicy(param_dtype=self.torch.bfloat16 if bf16 else None)
            for block in [m for h in model.modules() if isinstance(h, self.torch.nn.ModuleList) for m in h]:
                fully_shard(block, mp_policy=mp)
            return fully_shard(model, mp_policy=mp)
        return model

    def optimizer(self, net: Any, strategy: str, capturable: bool = False) -> Any:
        """Fused AdamW on plain tensors; FSDP2's sharded DTensor parameters take the foreach implementation."""
        fused = {"foreach": True} if strategy == "fsdp2" else {"fused": True}
        return self.torch.optim.AdamW(net.parameters(), lr=3e-4, capturable=capturable, **fused)

    # -- timing ------------------------------------------------------------------------------------------------
    def measure(self, run: Callable[[], Any]) -> dict[str, Any]:
        torch, dist = self.torch, self.torch.distributed
        for _ in range(self.sizes["warmup"]):
            run()
        torch.cuda.synchronize()
        rates = []
        for _ in range(self.sizes["windows"]):
            dist.barrier()
            t0 = time.perf_counter()
            for _ in range(self.sizes["iters"]):
                run()
            torch.cuda.synchronize()
            elapsed = torch.tensor([time.perf_counter() - t0], device="cuda")
            dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)  # the slowest rank sets the pace
            rates.append(self.world * self.sizes["iters"] * self.single.BATCH * self.single.SEQ / float(elapsed))
        rates.sort()
        return {"tokens_per_s": rates[len(rates) // 2], "windows_tokens_per_s": rates,
                "ms_per_step": self.world * self.single.BATCH * self.single.SEQ / rates[len(rates) // 2] * 1e3}

    def bench(self, strategy: str, config: str) -> dict[str, Any]:
        self.single._free()
        model = self.model()
        if config == "policy":
            return self.bench_policy(model, strategy)
        net = self.plain_wrap(model, strategy, bf16=config == "eager-bf16")
        opt = self.optimizer(net, strategy)
        step = self.step_fn(net, opt, bf16=config == "eager-bf16")
        row = self.measure(lambda: step(*self.data))
        overlap = self.xdist.measure_overlap(step, *self.data)
        row.update({"peak_gib": self.single._peak_gib(), "overlap_fraction": overlap.fraction,
                    "ranks": self.gather({"overlap": overlap.to_dict()})})
        return row

    def bench_policy(self, model: Any, strategy: str) -> dict[str, Any]:
        xrt_torch, xdist = self.xrt_torch, self.xdist
        policy = self.policy(strategy)
        net = xdist.wrap(model, policy, strategy) if strategy != "none" else model
        graphs = policy.execution.cuda_graphs
        opt = self.optimizer(net, strategy, capturable=graphs)
        step = self.step_fn(net, opt, bf16=False)  # precision from the policy block
        with xrt_torch.policy(policy):
            with xrt_torch.profile() as receipt:  # one eager step: the kernels the policy ran
                step(*self.data)
            captured, capture_s, run = None, None, (lambda: step(*self.data))
            if graphs:
                t0 = time.perf_counter()
                graphed = xrt_torch.capture_graph(step, *self.data, state=(net, opt), warmup=11)
                capture_s, captured = round(time.perf_counter() - t0, 2), graphed.captured
                run = graphed.replay if graphed.captured else run
            row = self.measure(run)
            comm = xdist.report_of(net) if strategy != "none" else xdist.communication_report(policy)
            overlap = xdist.measure_overlap(run, report=comm)
        summary = self.single._receipt_summary(receipt)
        gathered = xdist.gather_reports([comm, receipt])
        row.update({"peak_gib": self.single._peak_gib(), "captured": captured, "capture_s": capture_s,
                    "overlap_fraction": overlap.fraction, "policy": policy.to_dict(), "policy_hash": policy.short_hash,
                    "honored": gathered.honored, "violations_by_rank": {str(k): [str(v) for v in vs] for k, vs in
                                                                        gathered.violations_by_rank.items()},
                    "ranks": self.gather({"communication": comm.to_dict(), "kernels": summary,
                                          "overlap": overlap.to_dict()})})
        return row

    def gather(self, mine: dict[str, Any]) -> list[dict[str, Any]]:
        out: list[Any] = [None] * self.world
        self.torch.distributed.all_gather_object(out, mine)
        return [{"rank": r, **v} for r, v in enumerate(out)]

    # -- launch ------------------------------------------------------------------------------------------------
    def main(self) -> int:
        torch = self.torch
        if not torch.cuda.is_available():
            print("needs CUDA GPUs (run under torchrun on a GPU machine)", file=sys.stderr)
            return 2
        agreed = self.xdist.init_process_group(self.policy("ddp"))  # NCCL variables set, ranks agree first
        self.world, self.rank = torch.distributed.get_world_size(), torch.distributed.get_rank()
        gen = torch.Generator(device="cuda").manual_seed(1000 + self.rank)  # each rank its own batch
        vocab, batch, seq = self.single.VOCAB, self.single.BATCH, self.single.SEQ
        self.data = tuple(torch.randint(0, vocab, (batch, seq), device="cuda", generator=gen) for _ in range(2))
        if self.args.sweep:
            return self.sweep(agreed)
        strategies = self.args.strategies.split(",") + (["none"] if self.world == 1 else [])
        start, results = time.perf_counter(), {}
        for strategy in strategies:
            for config in self.args.configs.split(","):
                results[f"{strategy}/{config}"] = row = self.bench(strategy, config)
                if self.rank == 0:
                    print(f"{self.world} GPU {strategy:<6}{config:<11}{row['tokens_per_s']:>12,.0f} tokens/s "
                          f"({row['tokens_per_s'] / self.world:,.0f} per GPU)"
                          + (f", graph captured: {row['captured']}" if row.get("captured") is not None else ""),
                          flush=True)
        if self.rank == 0:
            write_json(Path(self.args.json), {"environment": self.environment(agreed), "world_size": self.world,
                                              "sizes": self.sizes, "model": self.args.model, "results": results,
                                              "total_s": round(time.perf_counter() - start, 1)})
            print(f"wrote {self.args.json}")
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
        return 0

    def sweep(self, agreed: str) -> int:
        """``--sweep``: communication variants of the policy DDP step, interleaved, in this one launch."""
        import _dist_sweep

        names = list(_dist_sweep.VARIANTS) if self.args.sweep == "all" else \
            [_dist_sweep.ALIASES.get(n.strip(), n.strip()) for n in self.args.sweep.split(",") if n.strip()]
        unknown = [n for n in names if n not in _dist_sweep.VARIANTS]
        if unknown:
            print(f"unknown variants {unknown}; known: {', '.join(_dist_sweep.VARIANTS)}", file=sys.stderr)
            return 2
        extra = {}
        if self.args.combo_from and Path(self.args.combo_from).is_file():
            other = json.loads(Path(self.args.combo_from).read_text()).get("sweep", {})
            extra = {n: (r.get("communication") or {}, r.get("process_group") or {}) for n, r in other.items()
                     if n not in _dist_sweep.VARIANTS and n != "none" and r.get("communication") is not None}
        start = time.perf_counter()
        head = {"environment": self.environment(agreed), "world_size": self.world, "model": self.args.model,
                "sizes": {"rounds": self.args.rounds, "steps": self.args.steps, "alive": self.args.alive},
                "base_communication": self.policy("ddp").communication.to_dict(exclude_defaults=True)}

        def save(rows: dict[str, Any]) -> None:
            if self.rank == 0:
                write_json(Path(self.args.json), {**head, "sweep": rows,
                                                  "total_s": round(time.perf_counter() - start, 1)})

        if self.rank == 0:
            print(f"{self.world} GPU sweep: {', '.join(names)}{' + ' + ', '.join(extra) if extra else ''}",
                  flush=True)
        _dist_sweep.Sweep(self, names, extra).main(save)
        if self.rank == 0:
            print(f"wrote {self.args.json} ({time.perf_counter() - start:.0f} s)", flush=True)
        torch = self.torch
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
        return 0

    def environment(self, agreed: str) -> dict[str, Any]:
        torch = self.torch
        env = self.single._environment()
        env.update({"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    "nccl": ".".join(map(str, torch.cuda.nccl.version())), "agreed_policy_hash": agreed[:12],
                    "env": {k: v for k, v in os.environ.items() if k.startswith(("NCCL_", "TORCH_NCCL_"))
                            or k in ("TORCH_SYMM_MEM_DISABLE_MULTICAST", "CUDA_VISIBLE_DEVICES")}})
        return env


if __name__ == "__main__":
    raise SystemExit(main())
