"""``bench_distributed_gpu.py --sweep``: the policy's DDP step under several communication settings in ONE launch.

Every variant is the policy DDP step of ``bench_distributed_gpu.py`` (bf16, flash, cublaslt, Triton LayerNorm, the
whole step as one CUDA graph) with one change to the policy's ``communication`` section. Variants are measured
*interleaved*: a control (today's settings, ``default``) stays captured for the whole launch; the others are built
``--alive`` at a time, and each round times ``--steps`` graph replays of every live variant in turn (order rotated
per round), so each variant is compared with the control measured minutes, not launches, apart. At 1 GPU the
no-wrapper step (``none``) is a second permanent control: the reference of scaling efficiency.

NCCL settings (``min_ctas``, ``max_ctas``, ``cta_policy``) cannot change within a process through the environment
(NCCL reads it once), so a variant that sets them gets its own process group whose ``ncclConfig_t`` carries the
same values (``ProcessGroupNCCL.Options().config``; NCCL documents the variables and the config fields as the same
setting). In a policy file they are the ``communication.nccl`` variables ``NCCL_MIN_CTAS`` ... set before init.

Variants beyond the communication section (``POLICY_CHANGES``): ``compile`` is the policy with ``execution.compile:
default`` (``xdist.wrap`` compiles the DDP module; dynamo's DDPOptimizer splits the graph at bucket boundaries so the
allreduce still overlaps backward) and LayerNorm left to inductor, as the 1-GPU ``policy+compile`` row of
``bench_torch_train_gpu.py``; the step around it is captured whole as for every variant. When torch cannot capture
the compiled step, ``capture_graph`` runs it eagerly under the policy (fallback ``warn``): the row says ``captured
false`` and why (``graph_violations``), and is then a compile-without-capture measurement. A combination
(``a+b``) takes the policy changes of each part.

Robustness: each variant is built in ``try``; the ranks then agree (all-reduce MIN of an ok flag) before anything
else is timed, so a variant that failed on any rank is dropped on all of them with its error recorded. Results are
written to the JSON after every group, so a launch that dies later still leaves what it measured. After the single
variants, the best setting of each kind that beat the control by more than ``NOISE`` is combined (rank 0 decides,
broadcasts) and the combination measured in a last group against the control and the best single variant.
"""

from __future__ import annotations

import gc
import time
import traceback
from typing import Any

NOISE = 0.003  # a variant must beat the control by more than this to count
GIB = 2**30
#: name -> (kind, communication overrides, process-group options). kind groups alternatives for the combination.
VARIANTS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "default": ("control", {}, {}),
    "bucket10": ("bucket", {"ddp": {"bucket_cap_mb": 10}}, {}),
    "bucket50": ("bucket", {"ddp": {"bucket_cap_mb": 50}}, {}),
    "bucket100": ("bucket", {"ddp": {"bucket_cap_mb": 100}}, {}),
    "bucket200": ("bucket", {"ddp": {"bucket_cap_mb": 200}}, {}),
    "static": ("flags", {"ddp": {"static_graph": True, "broadcast_buffers": False,
                                 "find_unused_parameters": False}}, {}),
    "cta-efficiency": ("nccl", {"nccl": {"cta_policy": 1}}, {}),
    "max-ctas-8": ("nccl", {"nccl": {"max_ctas": 8}}, {}),
    "max-ctas-16": ("nccl", {"nccl": {"max_ctas": 16}}, {}),
    "nccl-high-priority": ("nccl", {}, {"high_priority": True}),  # TORCH_NCCL_HIGH_PRIORITY=1: not a policy field
    "bf16-reduce": ("reduce", {"reduce_precision": "bf16"}, {}),  # late: a comm hook under graph capture
    # bf16 on the last bucket only (the tied embedding's gradient, ready last, overlapped by nothing)
    "bf16-last": ("reduce", {"reduce_precision": "bf16", "reduce_precision_buckets": "last"}, {}),
    "bf16-last-bucket50": ("reduce", {"reduce_precision": "bf16", "reduce_precision_buckets": "last",
                                      "ddp": {"bucket_cap_mb": 50}}, {}),
    "compile": ("compile", {}, {}),  # last: a cold inductor compile (about a minute), see POLICY_CHANGES
    # compile with larger buckets: DDP's graph splits at bucket boundaries under torch.compile, so fewer buckets
    # leave inductor larger regions to fuse (and NCCL fewer launches)
    "compile-bucket100": ("compile", {"ddp": {"bucket_cap_mb": 100}}, {}),
    "compile-bucket200": ("compile", {"ddp": {"bucket_cap_mb": 200}}, {}),
}
#: variants that change more than the communication section: execution fields, and kernel ops left to torch (None)
POLICY_CHANGES: dict[str, dict[str, Any]] = {
    "compile": {"execution": {"compile": "default"}, "kernels": {"layernorm": None}},  # inductor's own LayerNorm
    "compile-bucket100": {"execution": {"compile": "default"}, "kernels": {"layernorm": None}},
    "compile-bucket200": {"execution": {"compile": "default"}, "kernels": {"layernorm": None}},
}
#: --sweep accepts these names for the variants
ALIASES = {"control": "default"}
_CONFIG_FIELDS = {"min_ctas": "min_ctas", "max_ctas": "max_ctas", "cta_policy": "cta_policy"}


def merged_comm(base: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``change`` applied one level deep (``ddp`` and ``nccl`` key by key)."""
    out = {**base, **change}
    for key in ("ddp", "nccl", "fsdp"):
        if key in base and key in change:
            out[key] = {**base[key], **change[key]}
    return out


def policy_changes(name: str) -> dict[str, dict[str, Any]]:
    """The execution and kernel changes of a variant; a combination ``a+b`` takes those of each part."""
    out: dict[str, dict[str, Any]] = {"execution": {}, "kernels": {}}
    for part in name.split("+"):
        for key, change in POLICY_CHANGES.get(part, {}).items():
            out[key].update(change)
    return out


def changed_policy(xrt: Any, base: Any, comm: dict[str, Any], name: str) -> Any:
    """``base`` (a Policy) with the variant's communication overrides and policy changes."""
    changes = policy_changes(name)
    kernels = {op: k for op, k in {**base.kernels.to_dict(), **changes["kernels"]}.items() if k is not None}
    return xrt.Policy(kernels=kernels,
                      execution={**base.execution.to_dict(exclude_defaults=True), **changes["execution"]},
                      communication=merged_comm(base.communication.to_dict(exclude_defaults=True), comm))


def combination(rows: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any], dict[str, Any]] | None:
    """The best captured variant of each kind that beat its control by more than NOISE, merged; None if < 2."""
    best: dict[str, tuple[float, str]] = {}
    for name, row in rows.items():
        kind = VARIANTS.get(name, ("combo",))[0]
        ratio = row.get("vs_control")
        if kind in ("control", "combo") or not row.get("captured") or not ratio or ratio <= 1 + NOISE:
            continue
        if kind not in best or ratio > best[kind][0]:
            best[kind] = (ratio, name)
    if len(best) < 2:
        return None
    comm: dict[str, Any] = {}
    pg: dict[str, Any] = {}
    for _, name in sorted(best.values(), reverse=True):
        comm = merged_comm(comm, VARIANTS[name][1])
        pg.update(VARIANTS[name][2])
    return "+".join(name for _, name in sorted(best.values(), reverse=True)), comm, pg


class Sweep:
    """The sweep of one launch; ``run`` is the rank's ``bench_distributed_gpu._Run``."""

    def __init__(self, run: Any, names: list[str], extra: dict[str, tuple[dict[str, Any], dict[str, Any]]]) -> None:
        self.run, self.torch, self.dist = run, run.torch, run.torch.distributed
        self.specs = {n: (VARIANTS[n][1], VARIANTS[n][2]) for n in names if n != "default"}
        self.specs.update(extra)
        self.rows: dict[str, dict[str, Any]] = {}
        self.live: dict[str, dict[str, Any]] = {}
        self.groups: list[Any] = []
        self.device = "cuda"

    # -- building a variant ----------------------------------------------------------------------------------
    def process_group(self, nccl: dict[str, Any], pg: dict[str, Any]) -> Any:
        """A new NCCL process group whose ncclConfig_t carries the variant's NCCL settings (None: the world)."""
        if not nccl and not pg:
            return None
        opts = self.dist.ProcessGroupNCCL.Options()
        if pg.get("high_priority"):
            opts.is_high_priority_stream = True
        for key, value in nccl.items():
            field = _CONFIG_FIELDS.get(key)
            if field is None or not hasattr(opts.config, field):
                raise RuntimeError(f"ncclConfig_t field for {key!r} not exposed by torch {self.torch.__version__}")
            setattr(opts.config, field, value)
        group = self.dist.new_group(backend="nccl", pg_options=opts)
        self.groups.append(group)
        return group

    def build(self, name: str, comm: dict[str, Any], pg: dict[str, Any]) -> dict[str, Any]:
        """Model, wrapper, capturable AdamW and the captured step of one variant (``none``: no wrapper)."""
        run = self.run
        strategy = "none" if name == "none" else "ddp"
        policy = changed_policy(run.xrt, run.policy(strategy), comm, name)
        # the variant's NCCL settings go to its own group's ncclConfig_t, not to the (already read) environment
        group = self.process_group(dict(comm.get("nccl", {})), pg) if strategy == "ddp" else None
        model = run.model()
        net = run.xdist.wrap(model, policy, "ddp", process_group=group) if strategy == "ddp" else model
        opt = run.optimizer(net, strategy, capturable=True)
        step = run.step_fn(net, opt, bf16=False)  # precision: the policy's autocast, entered below

        def eager() -> Any:  # a step capture_graph refused runs under the policy all the same
            with run.xrt_torch.policy(policy):
                return step(*run.data)

        t0 = time.perf_counter()
        with run.xrt_torch.policy(policy):
            graphed = run.xrt_torch.capture_graph(step, *run.data, state=(net, opt), warmup=11)
        replay = graphed.replay if graphed.captured else eager
        losses = [float(replay().detach()) for _ in range(3)]  # steps 1-3 from the same weights: numerics check
        row = {"strategy": strategy, "communication": comm, "process_group": pg or None,
               "policy_changes": {k: v for k, v in policy_changes(name).items() if v} or None,
               "captured": bool(graphed.captured), "capture_s": round(time.perf_counter() - t0, 2),
               "graph_violations": [str(v) for v in graphed.violations],
               "policy_hash": policy.short_hash, "first_losses": losses, "rates": []}
        if strategy == "ddp":
            row["requested"] = {k: v for k, v in run.xdist.report_of(net).requested.items()
                                if k in ("DistributedDataParallel", "ddp_comm_hook", "reduce_precision_buckets",
                                         "torch.compile")}
        return {"row": row, "replay": replay, "keep": (model, net, opt, graphed, step)}

    def try_build(self, name: str, comm: dict[str, Any], pg: dict[str, Any]) -> None:
        """Build on every rank; keep it only if every rank succeeded (the ranks agree before timing)."""
        torch = self.torch
        free = torch.tensor([torch.cuda.mem_get_info()[0] / GIB], device=self.device, dtype=torch.float64)
        self.dist.all_reduce(free, op=self.dist.ReduceOp.MIN)
        built, error = None, None
        if float(free) < self.run.args.min_free_gib:
            error = f"skipped: {float(free):.1f} GiB free on some rank (< --min-free-gib {self.run.args.min_free_gib})"
        else:
            try:
                built = self.build(name, comm, pg)
            except Exception as exc:  # noqa: BLE001 - recorded, the sweep goes on
                error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
                self.rows.setdefault(name, {})["traceback"] = traceback.format_exc()[-4000:]
        ok = torch.tensor([0 if error else 1], device=self.device)
        self.dist.all_reduce(ok, op=self.dist.ReduceOp.MIN)
        if int(ok) == 1 and built is not None:
            self.live[name] = built
            self.rows[name] = {**self.rows.get(name, {}), **built["row"]}
            return
        self.rows.setdefault(name, {})["error"] = error or "failed on another rank"
        del built
        self.free()

    def free(self) -> None:
        gc.collect()
        self.torch.cuda.synchronize()
        self.torch.cuda.empty_cache()

    # -- timing ---------------------------------------------------------------------------------------------
    def time_rounds(self, names: list[str]) -> None:
        """``rounds`` rounds; in each, ``steps`` replays of every live variant in turn, order rotated per round."""
        run, torch, dist = self.run, self.torch, self.dist
        tokens = run.world * run.single.BATCH * run.single.SEQ
        for name in names:  # warm-up replays, same count for every variant
            for _ in range(3):
                self.live[name]["replay"]()
            torch.cuda.synchronize()  # never two communicators' graphs in flight at once (NCCL: may deadlock)
        for r in range(run.args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                dist.barrier()
                t0 = time.perf_counter()
                for _ in range(run.args.steps):
                    self.live[name]["replay"]()
                torch.cuda.synchronize()
                elapsed = torch.tensor([time.perf_counter() - t0], device=self.device, dtype=torch.float64)
                dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)  # the slowest rank sets the pace
                self.rows[name]["rates"].append(run.args.steps * tokens / float(elapsed))

    def finish_rows(self, names: list[str], controls: list[str]) -> None:
        for name in names:
            row = self.rows[name]
            rates = sorted(row["rates"])
            row["tokens_per_s"] = rates[len(rates) // 2] if rates else None
            row["last_loss"] = float(self.live[name]["keep"][3].outputs) if self.live[name]["row"]["captured"] \
                else None
        for name in names:
            row = self.rows[name]
            ctrl = self.rows.get("default", {})
            if name not in controls and row.get("tokens_per_s") and ctrl.get("rates"):
                # the control's rounds of this group only: the last len(row["rates"]) entries
                mine = sorted(ctrl["rates"][-len(row["rates"]):])
                row["vs_control"] = round(row["tokens_per_s"] / mine[len(mine) // 2], 4)
                row["control_tokens_per_s_same_group"] = mine[len(mine) // 2]

    def overlap(self, name: str) -> None:
        try:
            got = self.run.xdist.measure_overlap(self.live[name]["replay"])
            self.rows[name]["overlap"] = got.to_dict()
        except Exception as exc:  # noqa: BLE001 - the profiler is a nice-to-have here
            self.rows[name]["overlap"] = {"error": f"{type(exc).__name__}: {exc}"}

    # -- the launch ----------------------------------------------------------------------------------------
    def group(self, names: list[str], controls: list[str], save: Any) -> None:
        for name in names:
            comm, pg = self.specs[name]
            self.try_build(name, comm, pg)
            self.log(name)
        timed = controls + [n for n in names if n in self.live]
        self.time_rounds(timed)
        self.finish_rows(timed, controls)
        for name in names:
            if name in self.live:
                self.overlap(name)
                self.log(name, timed=True)
                del self.live[name]
        self.free()
        save(self.rows)

    def main(self, save: Any) -> dict[str, dict[str, Any]]:
        controls = (["none"] if self.run.world == 1 else []) + ["default"]
        for name in controls:
            self.try_build(name, *(({}, {}) if name == "none" else VARIANTS["default"][1:]))
            if name not in self.live:
                raise RuntimeError(f"the control {name!r} could not be built: {self.rows[name].get('error')}")
        names = list(self.specs)
        alive = max(1, self.run.args.alive)
        for i in range(0, len(names), alive):
            self.group(names[i:i + alive], controls, save)
        combo = self.decide_combination()
        if combo is not None:
            name, comm, pg = combo
            self.specs[name] = (comm, pg)
            self.group([name], controls, save)
        for name in controls:
            self.finish_rows([name], controls)
            self.overlap(name)
        save(self.rows)
        return self.rows

    def decide_combination(self) -> tuple[str, dict[str, Any], dict[str, Any]] | None:
        box = [combination(self.rows) if self.run.rank == 0 else None]
        self.dist.broadcast_object_list(box, src=0)
        if box[0] is not None and box[0][0] in self.specs:
            return None
        return box[0]

    def log(self, name: str, timed: bool = False) -> None:
        if self.run.rank != 0:
            return
        row = self.rows.get(name, {})
        if "error" in row:
            print(f"  {name:<28} ERROR {row['error']}", flush=True)
        elif timed and row.get("tokens_per_s"):
            vs = f"{row['vs_control']:.4f}" if row.get("vs_control") else "-"
            print(f"  {name:<28}{row['tokens_per_s']:>12,.0f} tokens/s  vs control {vs}  captured "
                  f"{row['captured']}  loss@3 {row['first_losses'][-1]:.5f}", flush=True)


def table(runs: list[dict[str, Any]], goal: float) -> tuple[list[dict[str, Any]], str]:
    """Rows and the printed table of sweep runs (1 GPU and N GPUs): efficiency vs 1 GPU without a wrapper (the
    stricter, as in BENCHMARKS.md) and vs 1 GPU with the same DDP variant."""
    one = next((r for r in runs if r["world_size"] == 1), None)
    ref = (one or {}).get("sweep", {}).get("none", {}).get("tokens_per_s")
    rows = []
    for run in sorted(runs, key=lambda r: r["world_size"]):
        n = run["world_size"]
        for name, row in run["sweep"].items():
            rate = row.get("tokens_per_s")
            same = (one or {}).get("sweep", {}).get(name, {}).get("tokens_per_s")
            rows.append({"gpus": n, "variant": name, "tokens_per_s": rate, "vs_control": row.get("vs_control"),
                         "eff_vs_1gpu_none": round(rate / (n * ref), 4) if rate and ref else None,
                         "eff_vs_1gpu_same": round(rate / (n * same), 4) if rate and same else None,
                         "captured": row.get("captured"), "error": row.get("error"),
                         "graph_violation": (row.get("graph_violations") or [None])[0],
                         "spread": round((max(row["rates"]) - min(row["rates"])) / rate, 4)
                         if rate and row.get("rates") else None,
                         "loss_step3": (row.get("first_losses") or [None])[-1], "last_loss": row.get("last_loss")})
    def pct(v: Any) -> str:
        return f"{v:.1%}" if v else "-"

    header = (f"{'gpus':>4} {'variant':<34}{'tokens/s':>12}{'vs ctrl':>9}{'eff/none1':>10}{'eff/same1':>10}"
              f"{'spread':>8}{'loss@3':>10}  note")
    lines = [header]
    for r in rows:
        rate = f"{r['tokens_per_s']:,.0f}" if r["tokens_per_s"] else "-"
        loss = f"{r['loss_step3']:.5f}" if r["loss_step3"] else "-"
        note = r["error"] or ("" if r["captured"] in (True, None) else
                              f"NOT captured (eager): {(r['graph_violation'] or '').split('(', 1)[-1].rstrip(')')}")
        vs = f"{r['vs_control']:.4f}" if r["vs_control"] else "control" if r["tokens_per_s"] else "-"
        lines.append(f"{r['gpus']:>4} {r['variant']:<34}{rate:>12}{vs:>9}{pct(r['eff_vs_1gpu_none']):>10}"
                     f"{pct(r['eff_vs_1gpu_same']):>10}{pct(r['spread']):>8}{loss:>10}  {note[:60]}")
    top = max((r["gpus"] for r in rows), default=0)
    best = max((r for r in rows if r["gpus"] == top and r["variant"] != "none" and r["tokens_per_s"]
                and r["captured"]), key=lambda r: r["tokens_per_s"], default=None)
    if best:
        met = (best["eff_vs_1gpu_none"] or 0) >= goal
        lines.append(f"\nbest at {top} GPUs: {best['variant']} {best['tokens_per_s']:,.0f} tokens/s, "
                     f"efficiency {pct(best['eff_vs_1gpu_none'])} vs 1 GPU without a wrapper, "
                     f"{pct(best['eff_vs_1gpu_same'])} vs 1 GPU same DDP settings: goal >= {goal:.0%} "
                     f"{'met' if met else 'NOT met'}")
        spec = next((run["sweep"][best["variant"]] for run in runs if run["world_size"] == top), {})
        lines.append(f"recipe: communication += {spec.get('communication')} process-group options "
                     f"{spec.get('process_group')}" + (f" policy changes {spec['policy_changes']}"
                                                       if spec.get("policy_changes") else ""))
    return rows, "\n".join(lines)
