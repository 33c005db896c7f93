"""One policy on many GPUs: torch.distributed (NCCL or gloo), DDP and FSDP2, launched by ``torchrun``.

Every rank loads the same policy file; before the first step the ranks *agree* on it::

    import xpuruntime.pytorch as xrt_torch
    from xpuruntime.pytorch import distributed as xdist

    policy = xrt.Policy.load("train.yaml")          # same file on every rank
    xdist.init_process_group(policy)                # NCCL variables set, process group up, hashes agreed
    model = xdist.wrap(model.cuda(), policy, strategy="ddp")     # or "fsdp2"
    with xrt_torch.policy(policy), xrt_torch.profile() as receipt:
        train_step(...)
    report = xdist.gather_reports([xdist.report_of(model), receipt])   # one receipt per rank, rank column
    report.save("receipt.json")                     # written by rank 0 only

- :func:`agree` all-gathers the policy hash and the fingerprint; ranks that differ make every rank raise
  :class:`~xpuruntime.errors.PolicyViolationError` naming the ranks and the fields (compared as locks compare
  them: GPU, driver, CUDA, cuDNN, NCCL, torch, ...; Python or OS differences are notes).
- The policy's ``communication`` section: the backend and NCCL variables are set in the environment before
  the process group starts (:func:`configure`); asked for after it, each one that differs is refused by name.
  DDP and FSDP2 settings become the wrappers' arguments (:func:`wrap`). Receipts record them as *configured*:
  NCCL reports no evidence of the algorithm or protocol it picked.
- :func:`measure_overlap` reads GPU kernel timestamps from ``torch.profiler``: how much of the NCCL kernels'
  time ran while compute kernels ran (the overlap of communication and compute, *observed*).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from xpuruntime._io import atomic_write_text
from xpuruntime.errors import InputError, PolicyError, PolicyViolationError, short_repr
from xpuruntime.policies import Policy, coerce_policy
from xpuruntime.policies.communication import NCCL_SETTINGS, CommunicationPolicy
from xpuruntime.policies.lock import Lock, as_lock, compare_fingerprints
from xpuruntime.receipts import ExecutionReport, PolicyViolationWarning, Violation
from xpuruntime.runtime.fingerprint import Fingerprint, fingerprint

__all__ = [
    "BEFORE_INIT",
    "CONFIGURED",
    "Agreement",
    "DistributedReport",
    "Overlap",
    "agree",
    "agreement",
    "compress_last_bucket_hook",
    "configure",
    "ddp_kwargs",
    "fsdp_kwargs",
    "gather_reports",
    "init_process_group",
    "measure_overlap",
    "nccl_environment",
    "overlap_of",
    "report_of",
    "wrap",
]

#: why communication settings are "configured", not "observed"
CONFIGURED = "configured: NCCL reports no evidence of the algorithm or protocol it picked"
#: settings that only take effect before the process group starts
BEFORE_INIT = ("backend", "timeout_s", *(f"nccl.{name}" for name in NCCL_SETTINGS))
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
_applied: dict[str, str] = {}  # variables configure() set in this process (for receipts)


# -- before init ---------------------------------------------------------------------------------------------
def nccl_environment(communication: CommunicationPolicy) -> dict[str, str]:
    """The NCCL variables of a communication section: ``{"NCCL_ALGO": "Ring", "NCCL_NVLS_ENABLE": "0"}``.

    >>> nccl_environment(CommunicationPolicy(nccl={"algo": "ring", "nvls_enable": False}))
    {'NCCL_ALGO': 'Ring', 'NCCL_NVLS_ENABLE': '0'}
    """
    return {NCCL_SETTINGS[name].env: _env_text(value) for name, value in communication.nccl.items()}


def _env_text(value: bool | int | str) -> str:
    return ("1" if value else "0") if isinstance(value, bool) else str(value)


def configure(policy: Any = None) -> dict[str, str]:
    """Set the policy's NCCL variables in this process's environment; call before the process group starts.

    After ``init_process_group`` a variable whose value would change is refused by name
    (:class:`PolicyViolationError`): NCCL read its environment when the communicator was created.

    >>> configure({"communication": {"nccl": {"algo": "Ring"}}})      # doctest: +SKIP
    {'NCCL_ALGO': 'Ring'}
    """
    comm = _policy(policy).communication
    env = nccl_environment(comm)
    if dist.is_available() and dist.is_initialized():
        late = {k: v for k, v in env.items() if os.environ.get(k) != v}
        if late:
            raise _too_late(late, "its NCCL communicators read the environment when they were created")
        _check_backend(comm)
        return env
    for key, value in env.items():
        os.environ[key] = value
        _applied[key] = value
    return env


def _too_late(settings: Mapping[str, str], why: str) -> PolicyViolationError:
    names = ", ".join(f"{k}={v}" for k, v in settings.items())
    violations = [Violation("option", k, v, os.environ.get(k, "unset"), "asked for after init_process_group")
                  for k, v in settings.items()]
    return PolicyViolationError(
        f"{names}: can only take effect before torch.distributed.init_process_group; the process group is "
        f"already up ({why})", violations=violations, expected="configure(policy) or init_process_group(policy) "
        "before the process group starts", received=f"asked for after it: {names}",
        hint="call xpuruntime.pytorch.distributed.init_process_group(policy) instead of torch's, or export the "
             "variables before torchrun")


def _check_backend(comm: CommunicationPolicy) -> None:
    current = str(dist.get_backend()).lower()
    if comm.backend != "auto" and comm.backend not in current.split(":"):
        raise _too_late({"backend": comm.backend}, f"it runs the {current} backend")


def resolve_backend(comm: CommunicationPolicy) -> str:
    """``auto`` -> ``nccl`` when CUDA is available, else ``gloo``."""
    if comm.backend != "auto":
        return comm.backend
    return "nccl" if torch.cuda.is_available() else "gloo"


def init_process_group(policy: Any = None, **kwargs: Any) -> str:
    """:func:`configure`, then ``torch.distributed.init_process_group`` with the policy's backend and timeout
    (each rank on its ``LOCAL_RANK`` GPU with NCCL), then :func:`agree`. Returns the agreed policy hash.

    >>> init_process_group("train.yaml")             # under torchrun, every rank   # doctest: +SKIP
    '5e0c...'
    """
    resolved = _policy(policy)
    configure(resolved)
    comm = resolved.communication
    if not dist.is_initialized():
        backend = kwargs.pop("backend", None) or resolve_backend(comm)
        if comm.timeout_s is not None:
            kwargs.setdefault("timeout", _dt.timedelta(seconds=comm.timeout_s))
        if backend == "nccl":
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            kwargs.setdefault("device_id", torch.device("cuda", local))
        dist.init_process_group(backend=backend, **kwargs)
    else:
        _check_backend(comm)
    return agree(resolved)


def _policy(policy: Any) -> Policy:
    lock = policy if isinstance(policy, Lock) else as_lock(policy)
    return lock.policy if lock is not None else coerce_policy(policy)


# -- agreement ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Agreement:
    """What the ranks agreed on: the policy hash, each rank's fingerprint hash, harmless differences as notes."""

    policy_hash: str
    world_size: int
    fingerprints: tuple[str, ...]
    notes: tuple[str, ...] = ()


def _here() -> Fingerprint:
    fp = fingerprint()
    if fp.nccl is None and torch.cuda.is_available() and hasattr(torch.cuda, "nccl"):
        try:
            return dataclasses.replace(fp, nccl=".".join(map(str, torch.cuda.nccl.version())))
        except Exception:  # noqa: BLE001 - a build without NCCL: no version
            return fp
    return fp


def _gather(value: Any, group: Any) -> list[Any]:
    if not (dist.is_available() and dist.is_initialized()):
        return [value]
    out: list[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(out, value, group=group)
    return out


def agreement(policy: Any, group: Any = None, *, fingerprint: Fingerprint | None = None) -> Agreement:
    """Like :func:`agree`, returning the whole :class:`Agreement` (notes included).

    ``fingerprint`` replaces this rank's (tests; a fingerprint read elsewhere).
    """
    fp = fingerprint or _here()
    mine = {"policy": _policy(policy).hash, "fingerprint": fp.to_dict()}
    gathered = _gather(mine, group)
    prints = [Fingerprint.from_dict(g["fingerprint"], verify=False) for g in gathered]
    problems, notes = _policy_lines([g["policy"] for g in gathered]), []
    for rank, other in enumerate(prints[1:], start=1):
        drift = compare_fingerprints(prints[0], other)
        problems += [f"fingerprint: rank {rank} vs rank 0: {c}" for c in drift.changes]
        notes += [f"rank {rank} vs rank 0: {c}" for c in drift.notes]
    if problems:
        raise PolicyViolationError(
            f"the {len(gathered)} ranks do not agree on the policy and environment:\n"
            + "\n".join(f"  - {line}" for line in problems), violations=problems,
            expected="one policy hash and one fingerprint (GPU, driver, CUDA, cuDNN, NCCL, torch) on every rank",
            received="; ".join(problems[:4]) + (" ..." if len(problems) > 4 else ""),
            hint="give every rank the same policy file and the same software image")
    return Agreement(gathered[0]["policy"], len(gathered), tuple(p.hash for p in prints), tuple(notes))


def _policy_lines(hashes: list[str]) -> list[str]:
    groups: dict[str, list[int]] = {}
    for rank, value in enumerate(hashes):
        groups.setdefault(value, []).append(rank)
    if len(groups) == 1:
        return []
    return [f"policy: {_ranks(ranks)} {'holds' if len(ranks) == 1 else 'hold'} {h[:12]}"
            for h, ranks in sorted(groups.items(), key=lambda kv: kv[1][0])]


def _ranks(ranks: list[int]) -> str:
    return f"rank {ranks[0]}" if len(ranks) == 1 else f"ranks {', '.join(map(str, ranks))}"


def agree(policy: Any, group: Any = None) -> str:
    """All-gather the policy hash and the fingerprint over ``group``; the agreed policy hash.

    Every rank raises :class:`PolicyViolationError` when ranks differ, naming the ranks and the fields.
    Without an initialised process group it is this process's hash.

    >>> agree(policy)                                  # every rank, before the first step   # doctest: +SKIP
    '5e0c4d...'
    """
    return agreement(policy, group).policy_hash


# -- wrappers -------------------------------------------------------------------------------------------------
def ddp_kwargs(communication: CommunicationPolicy) -> dict[str, Any]:
    """``DistributedDataParallel`` keyword arguments the section sets (None fields leave torch's defaults)."""
    return communication.ddp.model_dump(exclude_none=True)


def fsdp_kwargs(policy: Policy) -> dict[str, Any]:
    """``fully_shard`` keyword arguments: ``mp_policy`` from the policy's precision and ``reduce_precision``,
    ``reshard_after_forward`` from the section (None leaves torch's default)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    comm, precision = policy.communication, policy.execution.precision
    param = _DTYPES.get(precision) if precision in ("bf16", "fp16") else None
    reduce = _DTYPES[comm.reduce_precision] if comm.reduce_precision else None
    kwargs: dict[str, Any] = {"mp_policy": MixedPrecisionPolicy(param_dtype=param, reduce_dtype=reduce)}
    if comm.fsdp.reshard_after_forward is not None:
        kwargs["reshard_after_forward"] = comm.fsdp.reshard_after_forward
    return kwargs


def wrap(model: torch.nn.Module, policy: Any = None, strategy: str = "ddp", *,
         units: Sequence[type[torch.nn.Module]] | Callable[[torch.nn.Module], bool] | None = None,
         process_group: Any = None) -> torch.nn.Module:
    """Wrap ``model`` for data parallelism under ``policy``: ``strategy`` ``"ddp"`` or ``"fsdp2"``.

    - DDP: the section's bucket size and flags; ``reduce_precision`` bf16/fp16 registers torch's
      ``bf16_compress_hook``/``fp16_compress_hook`` (with ``reduce_precision_buckets: last``,
      :func:`compress_last_bucket_hook`: the last bucket only); with ``execution.cuda_graphs`` DDP is built on a side
      stream, as torch requires for capturing a whole step (``xpuruntime.pytorch.capture_graph``, 11 warm-up
      steps). The policy's precision is autocast, entered by ``xpuruntime.pytorch.policy()``.
    - FSDP2: ``fully_shard`` on each unit (default: every module held in an ``nn.ModuleList``, e.g. transformer
      blocks), then the root, with the precision as ``MixedPrecisionPolicy(param_dtype=...)``; ``fsdp.prefetch``
      sets explicit forward/backward prefetching. CUDA graphs are refused by name (a violation, judged by the
      policy's fallback): torch documents whole-step capture for DDP only. ``reduce_precision_buckets: last`` is
      refused the same way (FSDP2 reduces every unit in ``reduce_dtype``).
    - ``execution.compile`` (``default``, ``reduce-overhead``, ``max-autotune``) compiles the wrapped model.

    The receipt of what was configured is :func:`report_of` the returned module.

    >>> model = wrap(model.cuda(), policy, strategy="fsdp2")      # doctest: +SKIP
    >>> report_of(model).requested["fully_shard"]                 # doctest: +SKIP
    {'units': 12, 'mp_policy': {'param_dtype': 'bf16', 'reduce_dtype': None}, ...}
    """
    resolved = _policy(policy)
    if strategy not in ("ddp", "fsdp2"):
        raise InputError(f"unknown strategy {strategy!r}", expected="'ddp' or 'fsdp2'", received=short_repr(strategy),
                         hint="DistributedDataParallel is 'ddp'; fully_shard (FSDP2) is 'fsdp2'")
    if not (dist.is_available() and dist.is_initialized()):
        raise InputError("wrap needs a process group", expected="torch.distributed initialised",
                         received="no process group", hint="call init_process_group(policy) first (under torchrun)")
    report = communication_report(resolved, strategy)
    wrapped = (_wrap_ddp if strategy == "ddp" else _wrap_fsdp)(model, resolved, report, units, process_group)
    mode = resolved.execution.compile
    if mode != "off":
        wrapped = torch.compile(wrapped, mode=None if mode == "default" else mode)
        _configured(report, "torch.compile", mode, "the wrapped model is compiled")
    _enforce(report, resolved.execution.fallback)
    wrapped.xpuruntime_report = report
    return wrapped


def report_of(model: torch.nn.Module) -> ExecutionReport:
    """The receipt :func:`wrap` attached to the module it returned."""
    report = getattr(model, "xpuruntime_report", None)
    if not isinstance(report, ExecutionReport):
        raise InputError("this module was not wrapped by xpuruntime", expected="a module returned by wrap()",
                         received=type(model).__name__)
    return report


def _device_ids(model: torch.nn.Module) -> list[int] | None:
    param = next(model.parameters(), None)
    return [param.device.index] if param is not None and param.is_cuda else None


def _wrap_ddp(model: torch.nn.Module, policy: Policy, report: ExecutionReport, units: Any,
              group: Any) -> torch.nn.Module:
    from torch.nn.parallel import DistributedDataParallel as DDP

    kwargs = ddp_kwargs(policy.communication)
    graphs = policy.execution.cuda_graphs and torch.cuda.is_available() and _device_ids(model) is not None
    side = torch.cuda.Stream() if graphs else None
    if side is not None:
        side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side) if side is not None else contextlib.nullcontext():
        ddp = DDP(model, device_ids=_device_ids(model), process_group=group, **kwargs)
    if side is not None:
        torch.cuda.current_stream().wait_stream(side)
    _configured(report, "DistributedDataParallel", {**kwargs, "built_on_side_stream": bool(graphs)},
                "DDP arguments as passed")
    _register_hook(ddp, policy.communication, report, group)
    if policy.execution.precision in ("bf16", "fp16"):
        report.notes.append(f"precision {policy.execution.precision}: autocast inside xpuruntime.pytorch.policy(); "
                            "DDP keeps fp32 parameters and gradients")
    return ddp


def compress_last_bucket_hook(precision: str) -> Callable[[Any, Any], Any]:
    """A DDP communication hook: torch's ``bf16_compress_hook`` (``precision="bf16"``) or ``fp16_compress_hook`` on
    the step's last gradient bucket (``GradBucket.is_last()``: the bucket ready last, holding the first layers, e.g.
    a tied embedding), torch's ``allreduce_hook`` (the gradients' own dtype) on every other bucket.

    The last bucket's allreduce is the one nothing overlaps; halving its bytes shortens the step without paying a
    cast on every bucket. ``wrap`` registers it for ``communication.reduce_precision_buckets: last``. On DDP's first
    step, before it rebuilds its buckets in the order gradients became ready, all gradients may share one bucket (then
    the last one): that step is compressed whole.

    >>> ddp.register_comm_hook(None, compress_last_bucket_hook("bf16"))      # doctest: +SKIP
    """
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    compress = {"bf16": default_hooks.bf16_compress_hook, "fp16": default_hooks.fp16_compress_hook}.get(precision)
    if compress is None:
        raise InputError(f"no compression hook for {precision!r}", expected="'bf16' or 'fp16'",
                         received=short_repr(precision))
    allreduce = default_hooks.allreduce_hook

    def hook(state, bucket):  # type: ignore[no-untyped-def]  # no annotations: DDP compares them with its own types
        return (compress if bucket.is_last() else allreduce)(state, bucket)

    hook.__name__ = hook.__qualname__ = f"{precision}_compress_last_bucket_hook"
    return hook


def _comm_hook(precision: str | None, buckets: str) -> Callable[[Any, Any], Any] | None:
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    if precision not in ("bf16", "fp16"):
        return None
    if buckets == "last":
        return compress_last_bucket_hook(precision)
    return default_hooks.bf16_compress_hook if precision == "bf16" else default_hooks.fp16_compress_hook


def _register_hook(ddp: Any, comm: CommunicationPolicy, report: ExecutionReport, group: Any) -> None:
    precision, buckets = comm.reduce_precision, comm.reduce_precision_buckets
    hook = _comm_hook(precision, buckets)
    backend = str(dist.get_backend(group))
    if precision == "bf16" and "nccl" not in backend:  # torch checks its build, not the group that runs the hook
        report.add(Violation("option", "reduce_precision", precision, "the gradients' dtype",
                             f"torch's bf16_compress_hook needs the NCCL backend; this group runs {backend}"))
        return
    if hook is not None:
        try:
            ddp.register_comm_hook(group, hook)
        except (TypeError, RuntimeError, ValueError) as exc:  # e.g. bf16 needs NCCL and CUDA
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            report.add(Violation("option", "reduce_precision", precision or "", "the gradients' dtype",
                                 f"torch refused {hook.__name__}: {reason}"))
            return
    name = hook.__name__ if hook is not None else "allreduce in the gradients' dtype (torch's default)"
    _configured(report, "ddp_comm_hook", name, f"gradient reduction precision {precision or 'unchanged'}")
    if hook is not None:
        _configured(report, "reduce_precision_buckets", buckets,
                    f"{precision} on every gradient bucket" if buckets == "all" else
                    f"{precision} on the step's last gradient bucket (GradBucket.is_last()), allreduce_hook in the "
                    "gradients' dtype on the others")


def _wrap_fsdp(model: torch.nn.Module, policy: Policy, report: ExecutionReport, units: Any,
               group: Any) -> torch.nn.Module:
    from torch.distributed.fsdp import fully_shard

    kwargs = fsdp_kwargs(policy)
    device = _mesh_device(model)
    if group is not None or device == "cpu":  # without a mesh, fully_shard moves a CPU model to CUDA when it can
        from torch.distributed.device_mesh import DeviceMesh

        kwargs["mesh"] = DeviceMesh.from_group(group if group is not None else dist.group.WORLD, device)
    blocks = _units(model, units)
    for block in blocks:
        fully_shard(block, **kwargs)
    fully_shard(model, **kwargs)
    prefetch = policy.communication.fsdp.prefetch
    if prefetch:
        for i, block in enumerate(blocks):
            block.set_modules_to_forward_prefetch(blocks[i + 1:i + 1 + prefetch])
            block.set_modules_to_backward_prefetch(blocks[max(0, i - prefetch):i][::-1])
    mp = kwargs["mp_policy"]
    _configured(report, "fully_shard", {"units": len(blocks), "reshard_after_forward":
                                        kwargs.get("reshard_after_forward", "torch default"),
                                        "mp_policy": {"param_dtype": _dtype_name(mp.param_dtype),
                                                      "reduce_dtype": _dtype_name(mp.reduce_dtype)},
                                        "prefetch": prefetch if prefetch else "torch default (implicit, one ahead)"},
                "fully_shard arguments as passed")
    if policy.communication.reduce_precision_buckets != "all":
        report.add(Violation("option", "reduce_precision_buckets", policy.communication.reduce_precision_buckets,
                             "every gradient (FSDP2's reduce_dtype)", "a last-bucket hook is DDP's (GradBucket); "
                             "FSDP2 reduces every unit in MixedPrecisionPolicy.reduce_dtype"))
    if policy.execution.cuda_graphs:
        report.add(Violation("option", "cuda_graphs", "CUDA graph capture", "eager (FSDP2)",
                             "torch documents whole-step CUDA graph capture for DDP only; FSDP2 steps run eagerly"))
    return model


def _mesh_device(model: torch.nn.Module) -> str:
    param = next(model.parameters(), None)
    return "cuda" if param is not None and param.is_cuda else "cpu"


def _units(model: torch.nn.Module, units: Any) -> list[torch.nn.Module]:
    if units is None:
        return [m for holder in model.modules() if isinstance(holder, torch.nn.ModuleList) for m in holder]
    test = units if callable(units) and not isinstance(units, (list, tuple, type)) else \
        (lambda m: isinstance(m, tuple(units) if not isinstance(units, type) else units))
    return [m for m in model.modules() if m is not model and test(m)]


def _dtype_name(dtype: torch.dtype | None) -> str | None:
    return {v: k for k, v in _DTYPES.items()}.get(dtype) if dtype is not None else None


# -- receipts -------------------------------------------------------------------------------------------------
def _configured(report: ExecutionReport, key: str, value: Any, why: str) -> None:
    """Record a setting xpuruntime set and the engine does not report back (evidence: configured).

    One place, so the ``evidence`` field of receipt items can replace the note's wording later.
    """
    report.requested[key] = value
    report.notes.append(f"configured: {key}={_plain(value)} ({why})")


def _plain(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str) if isinstance(value, (dict, list)) else str(value)


def communication_report(policy: Any, strategy: str | None = None) -> ExecutionReport:
    """The receipt of a policy's communication settings on this rank (backend, NCCL variables: configured)."""
    resolved = _policy(policy)
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    device = f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"
    report = ExecutionReport(engine="torch.distributed", device=f"{device} (rank {rank})", policy_hash=resolved.hash,
                             fingerprint_hash=_here().hash, engine_version=torch.__version__,
                             evidence=["xpuruntime.pytorch.distributed translation table (settings as passed)"])
    if dist.is_available() and dist.is_initialized():
        _configured(report, "backend", str(dist.get_backend()), "the process group's backend")
    for key, value in nccl_environment(resolved.communication).items():
        _configured(report, key, os.environ.get(key, value), CONFIGURED.removeprefix("configured: "))
    if strategy:
        report.requested["strategy"] = strategy
    return report


def _enforce(report: ExecutionReport, fallback: str) -> None:
    if not report.violations or fallback == "allow":
        return
    lines = "; ".join(str(v) for v in report.violations)
    if fallback == "error":
        raise PolicyViolationError(f"wrap cannot honour the policy: {lines}", violations=report.violations,
                                   hint="drop what the reasons name from the policy, or set fallback='warn'")
    warnings.warn(f"wrap: {lines}", PolicyViolationWarning, stacklevel=3)


@dataclass
class DistributedReport:
    """Every rank's receipts in one: a rank column, violations per rank; honoured only if every rank is.

    >>> report = gather_reports(receipt)          # every rank calls it   # doctest: +SKIP
    >>> report.honored, report.violations_by_rank                          # doctest: +SKIP
    (False, {1: [Violation(kind='kernel', ...)]})
    >>> report.save("receipt.json")               # written by rank 0      # doctest: +SKIP
    """

    policy_hash: str
    world_size: int
    backend: str | None
    receipts: list[tuple[int, ExecutionReport]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def honored(self) -> bool:
        return all(r.honored for _, r in self.receipts)

    @property
    def violations_by_rank(self) -> dict[int, list[Violation]]:
        out: dict[int, list[Violation]] = {}
        for rank, receipt in self.receipts:
            if receipt.violations:
                out.setdefault(rank, []).extend(receipt.violations)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"policy_hash": self.policy_hash, "world_size": self.world_size, "backend": self.backend,
                "honored": self.honored, "notes": list(self.notes),
                "violations_by_rank": {str(r): [str(v) for v in vs] for r, vs in self.violations_by_rank.items()},
                "receipts": [{"rank": rank, **receipt.to_dict()} for rank, receipt in self.receipts]}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, default=str)

    def table(self) -> str:
        """One line per (rank, receipt): engine, device, nodes, verdict."""
        lines = [f"policy {self.policy_hash[:12]} on {self.world_size} ranks ({self.backend}): "
                 + ("honoured" if self.honored else "NOT honoured"),
                 f"{'rank':>4}  {'engine':<18}{'device':<22}{'nodes':>6}  verdict"]
        for rank, r in self.receipts:
            verdict = "honoured" if r.honored else "; ".join(str(v) for v in r.violations)
            lines.append(f"{rank:>4}  {r.engine:<18}{r.device:<22}{len(r.nodes):>6}  {verdict}")
        return "\n".join(lines + [f"note: {n}" for n in self.notes])

    def save(self, path: str | os.PathLike[str]) -> Path | None:
        """Write the JSON atomically on rank 0 (other ranks write nothing and get None)."""
        if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
            return None
        target = Path(path)
        if target.is_dir() or not target.parent.is_dir():
            raise PolicyError("cannot write the distributed receipt there", file=str(target),
                              expected="a file path in an existing folder",
                              received="a directory" if target.is_dir() else f"no folder {target.parent}")
        return atomic_write_text(target, self.to_json() + "\n")

    def __str__(self) -> str:
        return self.table()


def gather_reports(reports: ExecutionReport | Iterable[ExecutionReport], group: Any = None, *,
                   agreed: Agreement | None = None) -> DistributedReport:
    """Gather every rank's receipts (``all_gather_object``) into one :class:`DistributedReport`; every rank
    gets it, so every rank can judge ``honored``. Call it on all ranks of ``group``."""
    mine = [reports] if isinstance(reports, ExecutionReport) else list(reports)
    if not all(isinstance(r, ExecutionReport) for r in mine):
        raise InputError("gather_reports takes receipts", expected="ExecutionReport objects",
                         received=", ".join(type(r).__name__ for r in mine))
    gathered = _gather(mine, group)
    backend = str(dist.get_backend(group)) if dist.is_available() and dist.is_initialized() else None
    hashes = {r.policy_hash for rs in gathered for r in rs}
    notes = list(agreed.notes) if agreed else []
    if len(hashes) > 1:
        notes.append(f"receipts name {len(hashes)} policy hashes: {', '.join(sorted(h[:12] for h in hashes))}")
    policy_hash = agreed.policy_hash if agreed else (mine[0].policy_hash if mine else "")
    return DistributedReport(policy_hash, len(gathered), backend,
                             [(rank, r) for rank, rs in enumerate(gathered) for r in rs], notes)


# -- overlap of communication and compute ---------------------------------------------------------------------
@dataclass(frozen=True)
class Overlap:
    """GPU time of NCCL kernels, of compute kernels, and how much NCCL time ran while compute ran."""

    comm_us: float
    compute_us: float
    overlapped_us: float
    evidence: str

    @property
    def fraction(self) -> float | None:
        return self.overlapped_us / self.comm_us if self.comm_us > 0 else None

    def to_dict(self) -> dict[str, Any]:
        frac = self.fraction
        return {**dataclasses.asdict(self), "fraction": None if frac is None else round(frac, 4)}

    def note(self) -> str:
        frac = self.fraction
        if frac is None:
            return f"overlap of communication and compute: unverified ({self.evidence})"
        return (f"observed: {frac:.0%} of NCCL kernel time ({self.comm_us / 1e3:.2f} ms) ran while compute kernels "
                f"ran ({self.evidence})")


def _union(intervals: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[list[float]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(a, b) for a, b in merged]


def overlap_of(comm: Iterable[tuple[float, float]], compute: Iterable[tuple[float, float]],
               evidence: str = "kernel intervals") -> Overlap:
    """:class:`Overlap` of two sets of (start, end) kernel intervals in microseconds.

    >>> overlap_of([(0, 10)], [(5, 20)]).fraction
    0.5
    """
    comm_u, comp_u = _union(comm), _union(compute)
    both, j = 0.0, 0
    for start, end in comm_u:
        while j < len(comp_u) and comp_u[j][1] <= start:
            j += 1
        k = j
        while k < len(comp_u) and comp_u[k][0] < end:
            both += min(end, comp_u[k][1]) - max(start, comp_u[k][0])
            k += 1
    return Overlap(sum(b - a for a, b in comm_u), sum(b - a for a, b in comp_u), both, evidence)


def measure_overlap(fn: Callable[..., Any], *args: Any, report: ExecutionReport | None = None) -> Overlap:
    """Run ``fn(*args)`` once under ``torch.profiler`` and measure, from GPU kernel timestamps, how much NCCL
    kernel time overlapped compute kernels; with ``report`` the result goes into it (requested + a note).

    >>> measure_overlap(step, x, y, report=report_of(model)).fraction     # doctest: +SKIP
    0.87
    """
    if not torch.cuda.is_available():
        result = Overlap(0.0, 0.0, 0.0, "no CUDA device: no GPU kernels to time")
    else:
        activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=activities) as prof:
            fn(*args)
            torch.cuda.synchronize()
        kernels = [(e.name, e.time_range.start, e.time_range.end) for e in prof.events()
                   if not str(getattr(e, "device_type", "")).endswith("CPU")]
        comm = [(a, b) for name, a, b in kernels if "nccl" in name.lower()]
        compute = [(a, b) for name, a, b in kernels if "nccl" not in name.lower() and "memcpy" not in name.lower()
                   and "memset" not in name.lower()]
        result = overlap_of(comm, compute, "torch.profiler GPU kernel timestamps")
    if report is not None:
        report.requested["communication_overlap"] = result.to_dict()
        report.notes.append(result.note())
    return result
