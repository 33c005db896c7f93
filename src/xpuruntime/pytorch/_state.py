"""Which policy is active, in a ContextVar, and the process-wide torch switches that follow it.

Two kinds of state, kept apart on purpose:

- *What this context asked for* lives in a ``ContextVar``: ``policy()`` blocks nest, and each thread or
  asyncio task sees its own (``get_kernel_policy()``, the receipts of ``profile()``).
- *torch's switches* (SDPA flags, ``preferred_blas_library``, fp32 precision, cuDNN, determinism) are
  process-global in PyTorch (``torch.nn.attention.sdpa_kernel`` flips the same global flags). Every
  active application is a *frame* on one stack (the ``set_kernel_policy`` frame at the bottom, blocks in
  entry order); each frame remembers the switches just before it. When a frame ends, the switches *it
  set* go back to those values, and frames entered after it (another thread's) are written again, so
  they keep their effect whatever order threads leave in; switches no policy set (the user's own changes)
  are never touched. While two threads hold different policies at once, torch's switches are those of
  the frame entered last: run such threads one at a time (the torch engine does) or give them one policy.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from xpuruntime.errors import PolicyViolationError
from xpuruntime.policies import ExecutionPolicy, KernelPolicy, Policy, coerce_policy
from xpuruntime.pytorch import _flags, _kernels, _sdpa_check
from xpuruntime.pytorch._translate import TorchPlan, translate
from xpuruntime.receipts import ExecutionReport, Violation, enforce_fallback
from xpuruntime.runtime.profiler import nvtx_attached, nvtx_available, nvtx_range

__all__ = ["Active", "active", "policy", "set_kernel_policy", "get_kernel_policy", "clear_kernel_policy",
           "push_autocast", "reset", "applied", "note_violation", "apply_report", "no_kernel_error", "sink", "Sink"]


@dataclass(frozen=True)
class Active:
    """What the current context asked for."""

    policy: Policy
    autocast: str | None = None  # fp16 / bf16 while an autocast block is active
    violations: tuple[Violation, ...] = ()  # found while applying, for the receipts of profile()
    notes: tuple[str, ...] = ()

    @property
    def precision(self) -> str | None:
        """The precision receipts judge: autocast's, else one the policy names explicitly, else none."""
        ex = self.policy.execution
        return self.autocast or (ex.precision if "precision" in ex.model_fields_set else None)


_ACTIVE: contextvars.ContextVar[Active | None] = contextvars.ContextVar("xpuruntime_torch_policy", default=None)


@dataclass(eq=False)
class _Frame:
    """One application: its plan, torch's switches just before it, what torch refused the first time.

    ``before`` holds at least the switches the plan touches (every switch the first time a plan is written;
    afterwards those its first write touched or moved).
    """

    plan: TorchPlan
    persistent: bool = False
    before: dict[str, Any] = field(default_factory=dict)
    failures: list[Violation] | None = None
    program: Any = None  # the hot path's replayed writes (see _push_hot), when it pushed this frame

    @property
    def touched(self) -> set[str]:
        return _touched(self.plan)

    def write(self) -> None:
        self.program = None  # written again (a frame below it left): its remembered undo no longer holds
        if not self.plan.settings:  # nothing to set (an fp16/bf16 plan on CUDA, say): nothing to read either
            if self.failures is None:
                self.failures = []
            return
        replay = _replays.get(id(self.plan))
        if replay is not None and replay[0] is self.plan:
            self.before = _flags.snapshot(replay[1])
            if self.before == replay[1]:  # the same plan over the same switches: write only what it changes
                if replay[3]:
                    _flags.restore(replay[2], replay[3])
                if self.failures is None:
                    self.failures = []
                return
        self.before = _flags.snapshot()
        failures = _write(self.plan)
        if not failures:
            after = _flags.snapshot()
            keys = {k for k, v in after.items() if k in self.touched or self.before.get(k, _MISSING) != v}
            if keys & set(_flags.fp32_keys()):
                keys |= set(_flags.fp32_keys())  # a legacy fp32 write moves the new flags: keep them as one
            _remember(self.plan, {k: self.before[k] for k in keys if k in self.before},
                      {k: after[k] for k in keys if k in after})
        if self.failures is None:
            self.failures = failures


_MISSING = object()


@functools.lru_cache(maxsize=256)
def _touched_names(names: tuple[str, ...]) -> frozenset[str]:
    return frozenset(key for name in names for key in _flags.raw_keys(name))


def _touched(plan: TorchPlan) -> frozenset[str]:
    return _touched_names(tuple(plan.settings))


# Plans written before, by id: (plan, the switches before it (those it touched or moved), the raw values its
# write left there, the switches whose value the write changed). Writing a plan is a fixed function of the
# switches it reads, so the same plan over the same switches (an engine's every run) is replayed by writing
# only the switches that differ, instead of calling each setter.
_replays: dict[int, tuple[TorchPlan, dict[str, Any], dict[str, Any], frozenset[str]]] = {}
_REPLAYS = 64


def _remember(plan: TorchPlan, start: dict[str, Any], after: dict[str, Any]) -> None:
    if len(_replays) >= _REPLAYS:
        _replays.pop(next(iter(_replays)))
    changed = frozenset(k for k, v in after.items() if start.get(k, _MISSING) != v)
    _replays[id(plan)] = (plan, start, after, changed)


_lock = threading.RLock()
_stack: list[_Frame] = []  # active applications: the set_kernel_policy frame first, then blocks in entry order
_persistent_policy: Policy | None = None
_shared_before: list[Any] = []  # xpuruntime.kernels' process default before set_kernel_policy


def active() -> Active | None:
    """The innermost ``policy()`` / ``autocast()`` state of this context, else the ``set_kernel_policy`` one."""
    current = _ACTIVE.get()
    if current is not None:
        return current
    with _lock:
        return Active(_persistent_policy) if _persistent_policy is not None else None


# -- frames --------------------------------------------------------------------------------
_SUBJECTS = {"blas": ("kernel", "matmul"), "sdpa": ("kernel", "attention"), "fp32": ("precision", "model"),
             "cudnn": ("kernel", "conv"), "deterministic": ("option", "deterministic"),
             "num_threads": ("option", "num_threads"), "env": ("option", "deterministic")}


def _write(plan: TorchPlan) -> list[Violation]:
    failures = []
    for name, value in plan.settings.items():
        try:
            _flags.write(name, value)
        except (RuntimeError, ValueError, TypeError) as exc:
            kind, subject = _SUBJECTS[name.split(".")[0]]
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            failures.append(Violation(kind, subject, _plain_value(value), f"torch refused {name}", reason))
    return failures


def _plain_value(value: Any) -> str:
    return str(value[0] if isinstance(value, tuple) else value)


def _insert(frame: _Frame, index: int) -> None:
    """Put ``frame`` at ``index``: unwind the frames above it, write it, write them again (lock held)."""
    above = _stack[index:]
    if above:
        _flags.restore(_before_all(above), set().union(*(f.touched for f in above)), changed_only=True)
    for f in [frame, *above]:
        f.write()
    _stack.insert(index, frame)


def _remove(frame: _Frame) -> None:
    """Take ``frame`` out; the switches it touched go back to what they were before it (lock held).

    Frames entered after it (another thread's) are written again over that, so they keep their effect.
    """
    if frame not in _stack:
        return
    index = _stack.index(frame)
    above = _stack[index + 1:]
    _flags.restore(_before_all([frame, *above]), set().union(frame.touched, *(f.touched for f in above)),
                   changed_only=True)
    _stack.remove(frame)
    for f in above:
        f.write()


def _before_all(frames: list[_Frame]) -> dict[str, Any]:
    """The switches before the first of ``frames``: each from the lowest frame that read it (a frame reads at
    least what it touches or moves, so a switch missing from a lower frame was not moved by it)."""
    merged: dict[str, Any] = {}
    for f in reversed(frames):
        merged.update(f.before)
    return merged


def _push(plan: TorchPlan) -> _Frame:
    with _lock:
        frame = _Frame(plan)
        _insert(frame, len(_stack))
        return frame


def _pop(frame: _Frame) -> None:
    with _lock:
        _remove(frame)


# The hot path's frame: a plan written before over the same switches (an engine's every run) replays its
# remembered writes as plain setter calls, and the top frame puts its switches back the same way, instead of
# snapshot/restore's general bookkeeping (~25-40 us a run for an fp32 plan, most of a small model's overhead).
# Anything else (another frame above, switches moved before the run, a frame written again) takes
# the general path. Entries: id(plan) -> (plan, its replay entry, program or None).
_programs: dict[int, tuple[TorchPlan, Any, Any]] = {}


def _program(plan: TorchPlan) -> Any:
    """The plan's replay as ``(reads, start values, start as a dict, writes, undo writes)``, or None (lock held).

    ``undo`` writes the start value of every switch the plan touches or its write moved, so it leaves what
    :func:`_remove` leaves whatever the run did to them."""
    replay = _replays.get(id(plan))
    if replay is None or replay[0] is not plan:
        return None
    hit = _programs.get(id(plan))
    if hit is not None and hit[0] is plan and hit[1] is replay:
        return hit[2]
    _, start, after, changed = replay
    reads = _flags.reads_of(start)
    do = _flags.writes_of({k: after[k] for k in start if k in changed and k in after})
    undo = _flags.writes_of({k: start[k] for k in start if k in changed or k in _touched(plan)})
    prog = None
    if reads is not None and do is not None and undo is not None and set(after) <= set(start):
        prog = (reads, tuple(start[k] for k in reads.names), dict(start), do, undo)
    if len(_programs) >= _REPLAYS and id(plan) not in _programs:
        _programs.pop(next(iter(_programs)))
    _programs[id(plan)] = (plan, replay, prog)
    return prog


def _push_hot(plan: TorchPlan) -> _Frame:
    """:func:`_push` for an engine's run: the remembered writes of the plan when the switches are as before."""
    with _lock:
        prog = _program(plan)
        if prog is not None:
            reads, start, before, do, _ = prog
            try:
                now = reads()
            except (RuntimeError, AttributeError):
                now = None
            if now == start:
                do()
                frame = _Frame(plan, before=before, failures=[])  # shared: frames replace .before, never change it
                frame.program = prog
                _stack.append(frame)
                return frame
        frame = _Frame(plan)
        _insert(frame, len(_stack))
        return frame


def _pop_hot(frame: _Frame) -> None:
    """:func:`_pop` for an engine's run: the frame on top writes back, unconditionally, the values before it of
    every switch it touched or its writes moved (what :func:`_remove` leaves, without reading them first)."""
    with _lock:
        if frame.program is not None and _stack and _stack[-1] is frame:
            frame.program[4]()
            _stack.pop()
            return
        _remove(frame)


def reset() -> None:
    """Drop every frame and the persistent policy, restoring torch's switches (tests, forked workers)."""
    global _persistent_policy
    with _lock:
        for frame in reversed(list(_stack)):
            _remove(frame)
        _persistent_policy = None
        _share_default(None)
        _replays.clear()
        _programs.clear()
    _ACTIVE.set(None)


# -- receipts of an application ------------------------------------------------------------
def apply_report(policy_: Policy, plan: TorchPlan, failures: list[Violation]) -> ExecutionReport:
    """The receipt of applying a policy: the native settings asked for, what torch refused, notes."""
    from xpuruntime.runtime.fingerprint import fingerprint

    report = ExecutionReport(engine="torch", device=plan.device,
                             policy_hash=policy_.hash, fingerprint_hash=fingerprint().hash,
                             requested=plan.requested, notes=list(plan.notes), engine_version=torch.__version__,
                             evidence=["xpuruntime.pytorch translation table (switches as set)"])
    for v in [*plan.violations, *failures]:
        report.add(v)
    return report


# -- the public API ------------------------------------------------------------------------
@contextlib.contextmanager
def policy(policy: Any = None, *, kernel_policy: KernelPolicy | Mapping[str, Any] | None = None,
           exec_policy: ExecutionPolicy | Mapping[str, Any] | None = None,
           device: Any = None) -> Iterator[ExecutionReport]:
    """Apply a policy to PyTorch inside the block, then restore exactly the previous settings.

    >>> import xpuruntime.pytorch as xrt_torch
    >>> with xrt_torch.policy(kernel_policy={"attention": "flash", "matmul": "cublaslt"},
    ...                       exec_policy={"precision": "bf16", "fallback": "error"}) as applied:  # doctest: +SKIP
    ...     loss = model(x).sum(); loss.backward()
    >>> applied.requested["torch.nn.attention.sdpa_kernel"]                                     # doctest: +SKIP
    ['FLASH_ATTENTION']

    Blocks nest (the inner one wins op by op) and are per thread or task for ``get_kernel_policy()`` and
    receipts; torch's switches themselves are process-global (see the module notes). With an
    ``exec_policy`` all of it applies, its default ``precision="fp32"`` included (IEEE fp32, TF32 off);
    ``precision`` fp16/bf16 enters ``torch.autocast``. The block yields the receipt of the application.

    ``device`` (``"cpu"``, ``"cuda"``, a torch.device) is where the block's tensors live: the switches, notes
    and autocast are chosen for it. By default CUDA when torch sees one: SDPA calls on CPU tensors are then
    narrowed to the CPU's backends per call, and autocast covers both CUDA and CPU tensors.
    """
    given = coerce_policy(policy, kernel_policy, exec_policy)
    execution = exec_policy is not None or bool(given.execution.model_fields_set)
    outer = active()
    effective = (outer.policy if outer else Policy()).merge(given)
    plan = translate(Policy(given.kernels, effective.execution), execution=execution,
                     custom_kernels=_kernels.available, device=device)
    with applied(effective, plan, outer=outer, device_type=None if device is None else plan.device) as report:
        enforce_fallback(report, effective.execution.fallback, stacklevel=4)
        yield report


def applied(effective: Policy, plan: TorchPlan, *, outer: Active | None = None,
            device_type: str | None = None, receipt: bool = True) -> Any:
    """Apply a translated plan for the block (no fallback rule: callers enforce it); yields its receipt, or None
    with ``receipt=False`` (an engine's hot path: the same switches and context, no receipt built, in a
    context manager class that does only what the plan needs)."""
    if receipt:
        return _applied(effective, plan, outer=outer, device_type=device_type)
    return _Applied(effective, plan, outer, device_type)


class _Applied:
    """``applied(receipt=False)``: :func:`_applied`'s switches and context, per engine run, with less Python.

    Per run: the switch frame (only when the plan sets switches), the two ContextVars (this module's state and
    xpuruntime.kernels' policy) set directly, and only the contexts the plan needs. Each line here runs right after
    the engine's previous run has evicted the caches, at several times its warm price
    (``benchmarks/profile_in_situ.py``), so the common case (an fp16/bf16 plan on CUDA) touches as little as it can.
    """

    __slots__ = ("effective", "plan", "outer", "device_type", "frame", "token", "ktoken", "state", "entered")

    def __init__(self, effective: Policy, plan: TorchPlan, outer: Active | None, device_type: str | None) -> None:
        self.effective, self.plan, self.outer, self.device_type = effective, plan, outer, device_type

    def __enter__(self) -> None:
        # a plan with no switches to set has nothing to put back or to rewrite for other frames: no frame at all
        frame = self.frame = _push_hot(self.plan) if self.plan.settings else None
        self.entered: Any = ()
        try:
            failures = tuple(frame.failures or ()) if frame is not None else ()
            state, kernels, makers = _hot(self.effective, self.plan, self.outer, self.device_type, failures)
            self.state = state
            self.token = _ACTIVE.set(state)
            self.ktoken = kernels[0].set(kernels[1]) if kernels is not None else None
            if makers:
                self.entered = []
                for make in makers:
                    cm = make()
                    cm.__enter__()
                    self.entered.append(cm)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return None

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> bool:
        try:
            for cm in reversed(self.entered):
                if cm.__exit__(kind, exc, tb):
                    kind = exc = tb = None  # a context swallowed it (none of these do)
        finally:
            ktoken = getattr(self, "ktoken", None)
            if ktoken is not None:
                ktoken.var.reset(ktoken)
            if hasattr(self, "token"):
                _ACTIVE.reset(self.token)
            if self.frame is not None:
                _pop_hot(self.frame)
        if isinstance(exc, RuntimeError):
            violation = no_kernel_error(exc, self.state)
            if violation is not None:
                raise violation from exc
        return False


_HOT: dict[tuple[int, int, int | None, str | None, tuple[Violation, ...]], tuple[Any, ...]] = {}


def _hot(effective: Policy, plan: TorchPlan, outer: Active | None, device_type: str | None,
         failures: tuple[Violation, ...]) -> tuple[Active, Any, tuple[Any, ...]]:
    """The Active state of a hot-path application, xpuruntime.kernels' ``(ContextVar, policy)`` and makers of the
    other contexts it needs (each only when it does something), built once per (policy, plan, outer, device,
    failures)."""
    key = (id(effective), id(plan), id(outer) if outer else None, device_type, failures)
    hit = _HOT.get(key)
    if hit is not None and hit[0] is effective and hit[1] is plan and hit[2] is outer:
        return hit[3], hit[4], hit[5]
    state = Active(effective, plan.autocast or (outer.autocast if outer else None),
                   (*(outer.violations if outer else ()), *_unique([*plan.violations, *failures])),
                   (*(outer.notes if outer else ()), *plan.notes))
    makers: list[Any] = []
    if nvtx_attached():  # a range per run only where a tool records it
        name = _nvtx_name(effective)
        makers.append(lambda: nvtx_range(name))
    if plan.autocast is not None:
        makers.append(lambda: _autocast_for(plan, device_type))
    kernels = _kernels.shared_policy_var(effective)
    if plan.custom:
        makers.append(lambda: _kernels.routing(plan.custom))
    if plan.attention and not _sdpa_check.nothing_to_narrow(plan):
        makers.append(lambda: _sdpa_check.checking(plan))
    _cache_hot(key, (effective, plan, outer, state, kernels, tuple(makers)))
    return state, kernels, tuple(makers)


def prepared(effective: Policy, plan: TorchPlan, device_type: str | None) -> tuple[Any, ...] | None:
    """What ``applied(effective, plan, receipt=False)`` does per run, when that is only setting two ContextVars (no
    switch to write, no other context to enter): ``(ACTIVE var, state, kernels var or None, kernels policy)``, for
    an engine's prepared path to set and reset inline (with :func:`no_kernel_error` on a RuntimeError). None when
    the plan needs more (then use :func:`applied`)."""
    if plan.settings:
        return None
    state, kernels, makers = _hot(effective, plan, None, device_type, ())
    if makers:
        return None
    return (_ACTIVE, state, *(kernels if kernels is not None else (None, None)))


def _cache_hot(key: Any, value: tuple[Any, ...]) -> None:
    with _lock:  # engines of several threads may fill it at once
        if len(_HOT) >= 256:
            _HOT.pop(next(iter(_HOT)), None)
        _HOT[key] = value


@contextlib.contextmanager
def _applied(effective: Policy, plan: TorchPlan, *, outer: Active | None = None,
             device_type: str | None = None) -> Iterator[ExecutionReport]:
    frame = _push(plan)
    try:
        report = apply_report(effective, plan, frame.failures or [])
        state = Active(effective, plan.autocast or (outer.autocast if outer else None),
                       (*(outer.violations if outer else ()), *report.violations),
                       (*(outer.notes if outer else ()), *report.notes))
        token = _ACTIVE.set(state)
    except BaseException:
        _pop(frame)
        raise
    try:
        with nvtx_range(_nvtx_name(effective) if nvtx_available() else ""), _autocast_for(plan, device_type), \
                _kernels.shared_policy(effective), _kernels.routing(plan.custom), _sdpa_check.checking(plan):
            yield report
    except RuntimeError as exc:
        violation = no_kernel_error(exc, state)
        if violation is None:
            raise
        raise violation from exc
    finally:
        _ACTIVE.reset(token)
        _pop(frame)


def _unique(violations: list[Violation]) -> list[Violation]:
    """Violations in order, each once (as ``ExecutionReport.add`` keeps them)."""
    kept: list[Violation] = []
    for v in violations:
        if v not in kept:
            kept.append(v)
    return kept


def _nvtx_name(effective: Policy) -> str:
    """The NVTX range of a policy block, named after its ops: ``xpuruntime policy attention=flash ...``."""
    ops = " ".join(f"{op}={effective.kernels.preference(op).describe()}" for op in effective.kernels.ops)
    return f"xpuruntime policy {ops or 'default'} precision={effective.execution.precision}"


def _autocast_for(plan: TorchPlan, device_type: str | None) -> Any:
    """autocast for ``device_type``; without one, for the plan's device and the CPU (tensors may be on either)."""
    if plan.autocast is None:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if plan.autocast == "bf16" else torch.float16
    stack = contextlib.ExitStack()
    for device in dict.fromkeys([device_type] if device_type else [plan.device, "cpu"]):
        # no weight-cast cache: a policy block may hold a whole training loop or a CUDA graph capture, where
        # cached bf16 copies would outlive the optimizer's updates of the fp32 weights
        stack.enter_context(torch.autocast(device, dtype=dtype, cache_enabled=False))
    return stack


def set_kernel_policy(policy: Any = None, **ops: Any) -> ExecutionReport:
    """Apply a kernel policy to PyTorch until :func:`clear_kernel_policy` (process-wide, like torch's switches).

    >>> import xpuruntime.pytorch as xrt_torch
    >>> xrt_torch.set_kernel_policy(attention="flash_v2", matmul="cublasLt")   # doctest: +SKIP
    >>> xrt_torch.get_kernel_policy()                                           # doctest: +SKIP
    KernelPolicy(attention=flash, matmul=cublaslt)

    ``policy`` is a KernelPolicy, a mapping, or a Policy (or policy file) whose kernels are used and whose
    ``fallback`` decides what a kernel torch cannot select does; ``ops`` are merged over it. Returns the
    receipt of the application. Blocks of :func:`policy` apply over it.
    """
    full = _as_policy(policy, ops)
    plan = translate(full, execution=False, custom_kernels=_kernels.available)
    with _lock:
        previous = _persistent_frame()
        frame = _set_persistent(full, _Frame(plan, persistent=True))
    report = apply_report(full, plan, frame.failures or [])
    try:
        enforce_fallback(report, full.execution.fallback, stacklevel=3)
    except BaseException:
        with _lock:
            _set_persistent(previous[0] if previous else None, previous[1] if previous else None)
        raise
    return report


def _persistent_frame() -> tuple[Policy, _Frame] | None:
    frame = next((f for f in _stack if f.persistent), None)
    return (_persistent_policy, frame) if frame is not None and _persistent_policy is not None else None


def _set_persistent(policy_: Policy | None, frame: _Frame | None) -> _Frame | None:
    """Replace the set_kernel_policy frame (None clears it); it goes under every block (lock held)."""
    global _persistent_policy
    current = _persistent_frame()
    if current is not None:
        _remove(current[1])
    _persistent_policy = policy_
    if frame is not None:
        frame.failures = None
        _insert(frame, 0)
    _share_default(policy_)
    return frame


def _share_default(policy_: Policy | None) -> None:
    """xpuruntime.kernels dispatches by the same process-wide policy (lock held)."""
    if policy_ is not None and not _shared_before:
        _shared_before.append(_kernels.set_shared_default(policy_))
    elif policy_ is not None:
        _kernels.set_shared_default(policy_)
    elif _shared_before:
        _kernels.set_shared_default(_shared_before.pop())


def _as_policy(policy: Any, ops: Mapping[str, Any]) -> Policy:
    if policy is None or isinstance(policy, (KernelPolicy, Mapping)):
        kernels = KernelPolicy(policy.to_dict() if isinstance(policy, KernelPolicy) else (policy or {}), **ops)
        return Policy(kernels=kernels)
    full = coerce_policy(policy)
    if ops:
        full = full.replace(kernels=full.kernels.merge(KernelPolicy(ops)))
    return full


def get_kernel_policy() -> KernelPolicy | None:
    """The kernel policy in force for this context (innermost ``policy()`` block, else ``set_kernel_policy``)."""
    state = active()
    return state.policy.kernels.copy() if state is not None and state.policy.kernels else None


def clear_kernel_policy() -> None:
    """Forget the ``set_kernel_policy`` policy; the switches it set go back to what they were before it."""
    with _lock:
        _set_persistent(None, None)


# -- autocast and violations noticed later --------------------------------------------------
@dataclass
class Sink:
    """What happened inside a ``profile()`` block that its receipt must know (autocast entered, violations)."""

    precisions: list[str] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)


_SINK: contextvars.ContextVar[Sink | None] = contextvars.ContextVar("xpuruntime_torch_sink", default=None)


@contextlib.contextmanager
def sink() -> Iterator[Sink]:
    found = Sink()
    token = _SINK.set(found)
    try:
        yield found
    finally:
        _SINK.reset(token)


def push_autocast(precision: str | None) -> contextvars.Token[Active | None]:
    state = active() or Active(Policy())
    current = _SINK.get()
    if current is not None and precision:
        current.precisions.append(precision)
    return _ACTIVE.set(replace(state, autocast=precision))


def note_violation(violation: Violation) -> None:
    """Record a violation found while running (capture_graph on a CPU) for receipts of this context."""
    current = _SINK.get()
    if current is not None:
        current.violations.append(violation)
    state = _ACTIVE.get()
    if state is not None:
        _ACTIVE.set(replace(state, violations=(*state.violations, violation)))


# torch 2.13 says "No available kernel"; torch 2.11 on CUDA raised "Invalid backend" for flash-only on fp32 (H100)
_NO_KERNEL = ("No available kernel", "No viable backend for scaled_dot_product_attention", "Invalid backend")


def no_kernel_error(exc: BaseException, state: Active | None) -> PolicyViolationError | None:
    """torch's "no SDPA kernel" error under a strict attention policy, as a PolicyViolationError."""
    text = str(exc)
    if state is None or "attention" not in state.policy.kernels or not any(s in text for s in _NO_KERNEL):
        return None
    wanted = "/".join(state.policy.kernels.resolve("attention"))
    violation = Violation("kernel", "attention", wanted, "no kernel ran",
                          "torch could not run the requested SDPA backend for these inputs (see torch's warnings for "
                          "why; flash, for example, needs fp16/bf16 on a CUDA device)")
    return PolicyViolationError(f"attention: torch could run none of the requested SDPA backends ({wanted})",
                                violations=[violation], expected=f"attention ran with {wanted}",
                                received=text.strip().splitlines()[0],
                                hint="cast the inputs (bf16/fp16) or use autocast, or allow more backends "
                                     "(an ordered list, or fallback='warn')")
