"""One rank of the distributed tests, launched by ``torchrun`` (CPU: gloo; GPU: nccl).

    torchrun --standalone --nproc_per_node 2 tests/pytorch/_dist_worker.py OUT_DIR [gloo|nccl]

Each rank runs every scenario and writes what it saw to ``OUT_DIR/rank{N}.json``; the tests read those files.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import traceback
import warnings
from pathlib import Path

import torch
import torch.distributed as dist

import xpuruntime as xrt
import xpuruntime.pytorch as xrt_torch
from xpuruntime.errors import PolicyViolationError
from xpuruntime.pytorch import distributed as xdist

OUT = Path(sys.argv[1])
BACKEND = sys.argv[2] if len(sys.argv) > 2 else "gloo"
RANK = int(os.environ["RANK"])
CUDA = BACKEND == "nccl"
COMM = {"backend": BACKEND, "timeout_s": 120, "nccl": {"algo": "Ring", "proto": "Simple", "nvls_enable": False}}
seen: dict = {"rank": RANK}


def scenario(fn):
    try:
        seen[fn.__name__] = fn()
    except Exception as exc:  # noqa: BLE001 - the test reads the traceback
        seen[fn.__name__] = {"crashed": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    return fn


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ModuleList([torch.nn.Linear(32, 32)]),
                                torch.nn.Linear(32, 4))
    model.forward = lambda x: model[2](model[1][0](torch.relu(model[0](x))))  # type: ignore[method-assign]
    return model.cuda() if CUDA else model


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(100 + RANK)  # each rank its own batch, as in data parallelism
    x, y = torch.randn(8, 16, generator=gen), torch.randn(8, 4, generator=gen)
    return (x.cuda(), y.cuda()) if CUDA else (x, y)


policy = xrt.Policy(execution={"precision": "bf16" if CUDA else "fp32", "fallback": "warn"}, communication=COMM)


@scenario
def init() -> dict:
    agreed = xdist.init_process_group(policy)
    return {"agreed": agreed, "policy_hash": policy.hash, "world": dist.get_world_size(),
            "backend": str(dist.get_backend()), "env": {k: os.environ.get(k) for k in ("NCCL_ALGO", "NCCL_PROTO",
                                                                                         "NCCL_NVLS_ENABLE")}}


@scenario
def policy_mismatch() -> dict:
    mine = policy if RANK == 0 else policy.replace(execution=policy.execution.with_precision("fp16"))
    try:
        xdist.agree(mine)
    except PolicyViolationError as exc:
        return {"raised": str(exc), "violations": [str(v) for v in exc.violations]}
    return {"raised": None}


@scenario
def fingerprint_mismatch() -> dict:
    fp = xdist._here()
    if RANK == 1:
        fp = dataclasses.replace(fp, driver="999.99", python="0.0.1")
    try:
        xdist.agreement(policy, fingerprint=fp)
    except PolicyViolationError as exc:
        return {"raised": str(exc)}
    return {"raised": None}


@scenario
def harmless_difference() -> dict:
    fp = xdist._here()
    if RANK == 1:
        fp = dataclasses.replace(fp, python="0.0.1", os="Linux 0.0")
    got = xdist.agreement(policy, fingerprint=fp)
    return {"hash": got.policy_hash, "notes": list(got.notes), "fingerprints": list(got.fingerprints)}


@scenario
def late_setting() -> dict:
    try:
        xdist.configure(policy.replace(communication=xrt.Policy(communication={"nccl": {"algo": "Tree"}})
                                       .communication))
    except PolicyViolationError as exc:
        return {"raised": str(exc)}
    return {"raised": None}


@scenario
def ddp() -> dict:
    # torch's bf16 hook needs NCCL; the fp16 one runs on gloo as well
    comm = {**COMM, "ddp": {"bucket_cap_mb": 1, "static_graph": True}, "reduce_precision": "bf16" if CUDA else "fp16"}
    p = policy.replace(communication=xrt.Policy(communication=comm).communication)
    model = xdist.wrap(_model(), p, strategy="ddp")
    x, y = _data()
    with xrt_torch.policy(p):
        torch.nn.functional.mse_loss(model(x), y).backward()
    grad = model.module[0].weight.grad.float().sum().item()
    grads = [None] * dist.get_world_size()
    dist.all_gather_object(grads, grad)
    receipt = xdist.report_of(model)
    xdist.measure_overlap(lambda: model(x).sum().backward(), report=receipt)
    return {"grads": grads, "requested": receipt.requested, "notes": receipt.notes, "honored": receipt.honored}


@scenario
def ddp_refused_hook() -> dict:
    comm = {**COMM, "reduce_precision": "bf16"}
    p = xrt.Policy(execution={"fallback": "allow"}, communication=comm)
    receipt = xdist.report_of(xdist.wrap(_model(), p, strategy="ddp"))
    return {"violations": [str(v) for v in receipt.violations]}


def _train_wide(comm: dict | None = None, hook=None, steps: int = 4) -> dict:
    """A few SGD steps of a 1 MiB-per-layer MLP under DDP. From the second step on DDP has rebuilt its 1 MiB buckets
    (the first step reduces everything in one bucket); that step's gradients of the first layer (the last bucket)
    and of the last layer (the first bucket) say which buckets were compressed: a compressed bucket's gradient is
    exactly representable in the reduced dtype."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(*[torch.nn.Linear(512, 512) for _ in range(3)], torch.nn.Linear(512, 4))
    net = net.cuda() if CUDA else net
    if hook is None:
        p = xrt.Policy(execution={"fallback": "allow"},
                       communication={**COMM, "ddp": {"bucket_cap_mb": 1}, **(comm or {})})
        model = xdist.wrap(net, p, strategy="ddp")
    else:
        model = torch.nn.parallel.DistributedDataParallel(net, bucket_cap_mb=1)
        model.register_comm_hook(None, hook)
    gen = torch.Generator().manual_seed(200 + RANK)
    x, y = torch.randn(16, 512, generator=gen), torch.randn(16, 4, generator=gen)
    x, y = (x.cuda(), y.cuda()) if CUDA else (x, y)
    opt, losses, exact = torch.optim.SGD(model.parameters(), lr=0.05), [], {}
    for i in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        if i == 1:
            for name, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
                exact[name] = {layer: torch.equal(g, g.to(dtype).float()) for layer, g in
                               (("first", net[0].weight.grad), ("last", net[3].weight.grad))}
        opt.step()
        losses.append(loss.item())
    weights = [None] * dist.get_world_size()
    dist.all_gather_object(weights, net[0].weight.detach().double().sum().item())
    out = {"losses": losses, "exact": exact, "weights": weights}
    if hook is None:
        receipt = xdist.report_of(model)
        out.update(requested={k: receipt.requested.get(k) for k in ("ddp_comm_hook", "reduce_precision_buckets")},
                   violations=[str(v) for v in receipt.violations], notes=receipt.notes)
    return out


@scenario
def ddp_last_bucket() -> dict:
    """reduce_precision_buckets: last -- the last bucket compressed, the others reduced in fp32, same training."""
    precision = "bf16" if CUDA else "fp16"  # wrap refuses torch's bf16 hook off NCCL; the hook itself runs on gloo
    return {"precision": precision, "plain": _train_wide(),
            "last": _train_wide({"reduce_precision": precision, "reduce_precision_buckets": "last"}),
            "all": _train_wide({"reduce_precision": precision}),
            "bf16_hook": _train_wide(hook=xdist.compress_last_bucket_hook("bf16")),
            "bf16_policy": _train_wide({"reduce_precision": "bf16", "reduce_precision_buckets": "last"}, steps=1)}


@scenario
def fsdp2_last_bucket() -> dict:
    comm = {**COMM, "reduce_precision": "bf16", "reduce_precision_buckets": "last"}
    try:
        xdist.wrap(_model(), xrt.Policy(execution={"fallback": "error"}, communication=comm), strategy="fsdp2")
    except PolicyViolationError as exc:
        return {"raised": str(exc)}
    return {"raised": None}


@scenario
def ddp_graph() -> dict:
    """The whole DDP step (forward, backward with its allreduce, optimizer) as one CUDA graph."""
    if not CUDA:
        return {"skipped": "no CUDA"}
    p = xrt.Policy(execution={"precision": "bf16", "static_shape": True, "cuda_graphs": True, "fallback": "error"},
                   communication=COMM)
    model = xdist.wrap(_model(), p, strategy="ddp")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, capturable=True)
    x, y = _data()

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(model(x).float(), y)
        loss.backward()
        opt.step()
        return loss

    with xrt_torch.policy(p):
        graphed = xrt_torch.capture_graph(step, x, y, state=(model, opt), warmup=11)
        losses = [float(graphed.replay()) for _ in range(3)]
        overlap = xdist.measure_overlap(graphed.replay, report=xdist.report_of(model))
    weights = [None] * dist.get_world_size()
    dist.all_gather_object(weights, model.module[0].weight.detach().double().sum().item())
    return {"captured": graphed.captured, "losses": losses, "weights": weights, "overlap": overlap.to_dict(),
            "side_stream": xdist.report_of(model).requested["DistributedDataParallel"]["built_on_side_stream"]}


@scenario
def fsdp2() -> dict:
    comm = {**COMM, "fsdp": {"reshard_after_forward": True, "prefetch": 1}, "reduce_precision": "fp32"}
    p = xrt.Policy(execution={"precision": "bf16", "cuda_graphs": True, "static_shape": True, "fallback": "allow"},
                   communication=comm)
    model = xdist.wrap(_model(), p, strategy="fsdp2")
    x, y = _data()
    loss = torch.nn.functional.mse_loss(model(x).float(), y)
    loss.backward()
    receipt = xdist.report_of(model)
    return {"loss": loss.item(), "dtype": str(model[0].weight.dtype), "requested": receipt.requested, "violations": [str(v) for v in receipt.violations]}


@scenario
def gathered() -> dict:
    x, _ = _data()

    def step(x: torch.Tensor) -> torch.Tensor:
        return (x * 2).sum()

    with warnings.catch_warnings(), xrt_torch.profile(exec_policy={"fallback": "allow"}) as receipt:
        warnings.simplefilter("ignore")
        if RANK == 1 and not CUDA:  # a real violation on one rank only: no CUDA graph on the CPU
            xrt_torch.capture_graph(step, x, fallback="allow")
        step(x)
    comm = xdist.communication_report(policy, "ddp")
    report = xdist.gather_reports([comm, receipt], agreed=xdist.agreement(policy))
    path = report.save(OUT / "receipt.json")
    return {"honored": report.honored, "by_rank": {str(k): [str(v) for v in vs]
                                                   for k, vs in report.violations_by_rank.items()},
            "ranks": [r for r, _ in report.receipts], "saved": str(path) if path else None, "table": report.table()}


(OUT / f"rank{RANK}.json").write_text(json.dumps(seen, indent=1, default=str))
dist.barrier()
dist.destroy_process_group()
# Leave without C++ static teardown: once in a full CI run a rank aborted after its work was done ("terminate called
# without an active exception": a torch profiler or gloo thread still joinable while statics are destroyed). What
# this worker checks is written above; the process's own teardown is torch's, not xpuruntime's.
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)
