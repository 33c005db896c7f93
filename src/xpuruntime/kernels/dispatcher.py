"""The dispatcher: the policy's ordered kernel list for one call, walked against the registry.

``Dispatcher.select(op, ctx, policy)`` takes ``policy.kernels.resolve(op, dtype, **dims)`` in order. ``auto`` and
``default`` mean the registry's default kernel for the op; a kernel whose ``supports(ctx)`` gives a reason is
skipped with that reason. Params the deciding entry gives a kernel (``params: {nvmath: {...}}``) are checked by
the kernel (``supports(ctx, params)``) and travel with the :class:`Selection` to its forward. When nothing in the list applies, the policy's fallback rule decides: ``error`` raises
:class:`~xpuruntime.errors.PolicyViolationError` naming every skipped kernel and why, ``warn`` emits a
:class:`~xpuruntime.receipts.PolicyViolationWarning` and uses the default, ``allow`` uses the default.

>>> from xpuruntime.kernels import DispatchContext, get_dispatcher
>>> ctx = DispatchContext("layernorm", device="cpu", dtype="bf16", dims={"rows": 8, "hidden": 768})
>>> sel = get_dispatcher().select("layernorm", ctx, {"kernels": {"layernorm": ["triton", "native"]}})
>>> sel.kernel, [name for name, _ in sel.skipped]
('native', ['triton'])

Each decision can be logged (bounded, thread-safe) with :func:`enable_dispatch_logging`; with ``timing=True``
the ops add the GPU time of each call, measured with CUDA events (this synchronises after every call).
"""

from __future__ import annotations

import contextlib
import threading
import time
import warnings
from collections import deque
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from typing import Any

from xpuruntime.errors import PolicyError, PolicyViolationError, PolicyViolationWarning, UnsupportedOperationError
from xpuruntime.kernels.active import active_policy, as_policy
from xpuruntime.kernels.registry import DispatchContext, KernelImpl, KernelRegistry, get_registry
from xpuruntime.policies import KernelPolicy, Policy
from xpuruntime.policies import vocabulary as vocab

__all__ = [
    "Dispatcher",
    "Selection",
    "DispatchRecord",
    "get_dispatcher",
    "select",
    "enable_dispatch_logging",
    "disable_dispatch_logging",
    "dispatch_logging",
    "dispatch_logging_enabled",
    "dispatch_timing_enabled",
    "get_dispatch_logs",
    "clear_dispatch_logs",
    "log_dispatch",
]

_SPECIAL = (vocab.AUTO, vocab.DEFAULT)


@dataclass(frozen=True)
class Selection:
    """The dispatcher's answer: the kernel to run, why, and every candidate skipped before it (with why).

    ``requested`` is the policy's ordered list for this call; ``fallback`` is True when none of it applied
    and the fallback rule chose the op's default kernel.
    """

    kernel: str
    reason: str
    skipped: tuple[tuple[str, str], ...] = ()
    requested: tuple[str, ...] = ()
    fallback: bool = False
    impl: KernelImpl | None = field(default=None, compare=False, repr=False)  # the registered kernel chosen
    params: Mapping[str, Any] = field(default_factory=dict, hash=False)  # the policy's params for the kernel

    def forward(self) -> Any:
        """The chosen kernel's forward with the policy's params bound."""
        if self.impl is None:
            raise UnsupportedOperationError("this selection carries no kernel", expected="a Selection from select()",
                                            received=repr(self.kernel))
        return self.impl.bind(self.params)


@dataclass
class DispatchRecord:
    """One logged decision: what was called, what ran, why, what was skipped, and its GPU time when timed."""

    op: str
    kernel: str
    reason: str
    skipped: list[tuple[str, str]]
    shapes: list[list[int]]
    dtype: str | None
    device: str
    dims: dict[str, int] = field(default_factory=dict)
    requested: list[str] = field(default_factory=list)
    fallback: bool = False
    phase: str = "forward"
    requires_grad: bool = False
    training: bool = False
    gpu_time_ms: float | None = None
    timestamp: float = field(default_factory=time.time)
    params: dict[str, Any] = field(default_factory=dict)  # the policy's params the kernel ran with

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON receipts."""
        return asdict(self)


class Dispatcher:
    """Chooses a kernel for each call from a policy and a :class:`KernelRegistry`.

    >>> Dispatcher().select("matmul", DispatchContext("matmul", device="cpu", dtype="fp32")).kernel
    'default'
    """

    def __init__(self, registry: KernelRegistry | None = None) -> None:
        self.registry = registry if registry is not None else get_registry()

    def select(self, op: str, ctx: DispatchContext, policy: Any = None, *, fallback: str | None = None,
               log: bool = True) -> Selection:
        """The kernel for ``ctx`` under ``policy`` (default: the active policy); see the module docs.

        ``fallback`` overrides the policy's fallback rule; ``log=False`` leaves logging to the caller
        (:func:`log_dispatch`, for example once the GPU time is known).
        """
        op = vocab.canonical_op(op)
        if ctx.op != op:
            raise UnsupportedOperationError("the dispatch context is for another op", expected=op, received=ctx.op)
        if fallback is not None and fallback not in vocab.FALLBACKS:
            raise PolicyError(f"unknown fallback {fallback!r}", expected=f"one of {', '.join(vocab.FALLBACKS)}",
                              received=repr(fallback))
        kernels, rule = _kernel_policy(policy)
        requested, params, source = _resolve(kernels, op, ctx)
        chosen, skipped = self._walk(op, ctx, requested, source, params)
        selection = chosen or self._fallback(op, ctx, requested, source, skipped, fallback or rule)
        if log:
            log_dispatch(ctx, selection)
        return selection

    def impl(self, op: str, selection: Selection | str) -> KernelImpl:
        """The registered kernel a selection (or a kernel name) refers to."""
        if isinstance(selection, Selection) and selection.impl is not None:
            return selection.impl
        return self.registry.get(op, selection.kernel if isinstance(selection, Selection) else selection)

    def _walk(self, op: str, ctx: DispatchContext, requested: tuple[str, ...], source: str,
              params: Mapping[str, Mapping[str, Any]]) -> tuple[Selection | None, list[tuple[str, str]]]:
        skipped: list[tuple[str, str]] = []
        for name in requested:
            impl = self.registry.default(op) if name in _SPECIAL else self.registry.find(op, name)
            given = params.get(name) if name not in _SPECIAL else None
            reason = _unregistered(self.registry, op) if impl is None else impl.supports(ctx, given)
            if impl is not None and reason is None:
                why = f"{source}: " + _chosen(name, impl, skipped) + (" with the policy's params" if given else "")
                return Selection(impl.name, why, tuple(skipped), requested, impl=impl,
                                 params=dict(given) if given else {}), skipped
            skipped.append((name, reason or "unsupported"))
        return None, skipped

    def _fallback(self, op: str, ctx: DispatchContext, requested: tuple[str, ...], source: str,
                  skipped: list[tuple[str, str]], rule: str) -> Selection:
        details = "; ".join(f"{name}: {reason}" for name, reason in skipped)
        if rule == "error":
            raise PolicyViolationError(
                f"no kernel the policy allows for {ctx.describe()} can run", violations=skipped,
                expected=f"a kernel of {source} that supports this call", received=details,
                hint="install or fix what the reasons name, end the list with 'default', "
                     "or set fallback='warn' or 'allow' to accept the default kernel")
        default = self.registry.default(op)
        if default.supports(ctx) is not None:
            raise UnsupportedOperationError(f"no kernel can run {ctx.describe()}", received=details,
                                            expected=f"a kernel of {op} that supports this call")
        why = f"fallback={rule}: nothing in {source} applies; using the op's default kernel ({default.name})"
        if rule == "warn":
            warnings.warn(f"{why} for {ctx.describe()} ({details})", PolicyViolationWarning, stacklevel=4)
        return Selection(default.name, why, tuple(skipped), requested, fallback=True, impl=default)


def _kernel_policy(policy: Any) -> tuple[KernelPolicy, str]:
    if policy is None:
        policy = active_policy()
    if isinstance(policy, Policy):
        return policy.kernels, policy.execution.fallback
    if isinstance(policy, KernelPolicy):
        return policy, "warn"
    coerced = as_policy(policy)
    return coerced.kernels, coerced.execution.fallback


def _resolve(kernels: KernelPolicy, op: str,
             ctx: DispatchContext) -> tuple[tuple[str, ...], Mapping[str, Mapping[str, Any]], str]:
    pref = kernels.preference(op)
    if pref is None:
        return (vocab.DEFAULT,), {}, f"no {op} preference in the policy"
    use, params, index = pref.match(_rule_dtype(ctx.dtype), ctx.dims)
    where = f"kernels.{op}" if index is None else f"kernels.{op}.rules[{index}]"
    return use, params, f"{where} = {_fmt(use)}"


def _rule_dtype(dtype: str | None) -> str | None:
    if dtype is None:
        return None
    try:
        return vocab.canonical_dtype(dtype)
    except PolicyError:
        return None  # a dtype the vocabulary has no name for (int64, ...): dtype rules do not match it


def _chosen(name: str, impl: KernelImpl, skipped: list[tuple[str, str]]) -> str:
    head = f"{', '.join(n for n, _ in skipped)} skipped; " if skipped else ""
    if name in _SPECIAL:
        return f"{head}{name} -> {impl.name} (the registry's default)"
    return f"{head}{impl.name} applies"


def _unregistered(registry: KernelRegistry, op: str) -> str:
    return f"no implementation is registered in xpuruntime.kernels (registered: {', '.join(registry.kernels(op))})"


def _fmt(kernels: tuple[str, ...]) -> str:
    return kernels[0] if len(kernels) == 1 else "[" + ", ".join(kernels) + "]"


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


_DISPATCHER = Dispatcher()


def get_dispatcher() -> Dispatcher:
    """The process-wide dispatcher over :func:`~xpuruntime.kernels.registry.get_registry`."""
    return _DISPATCHER


def select(op: str, ctx: DispatchContext, policy: Any = None, **kwargs: Any) -> Selection:
    """``get_dispatcher().select(...)``."""
    return _DISPATCHER.select(op, ctx, policy, **kwargs)


# -- the dispatch log ----------------------------------------------------------------------------------------
# Two layers, like the active policy: a process-wide log switched by enable/disable_dispatch_logging, and
# per-block collectors (dispatch_logging) kept in a ContextVar, so blocks nest, end in any order and never
# switch each other off across threads. A decision made where no block is open in the current context (a
# torch autograd worker thread running a backward) goes to every open block: it belongs to one of them.
_log_lock = threading.Lock()
_log: deque[DispatchRecord] = deque(maxlen=10_000)
_enabled = False
_timing = False


@dataclass(eq=False)
class _Block:
    records: list[DispatchRecord]
    timing: bool
    maxlen: int


_blocks: ContextVar[tuple[_Block, ...]] = ContextVar("xpuruntime_dispatch_blocks", default=())
_open: list[_Block] = []  # every open block, in any context (under _log_lock)


def enable_dispatch_logging(*, timing: bool = False, maxlen: int = 10_000) -> None:
    """Record every decision, process-wide (at most ``maxlen``, oldest dropped); ``timing`` adds CUDA-event GPU
    times.

    >>> enable_dispatch_logging()
    >>> # ... run xpuruntime.kernels.layer_norm / matmul ...
    >>> [(r.op, r.kernel) for r in get_dispatch_logs()]   # doctest: +SKIP
    [('layernorm', 'triton')]
    """
    global _enabled, _timing, _log
    _check_maxlen(maxlen)
    with _log_lock:
        if _log.maxlen != maxlen:
            _log = deque(_log, maxlen=maxlen)
        _enabled, _timing = True, bool(timing)


def disable_dispatch_logging() -> None:
    """Stop process-wide recording (records kept until :func:`clear_dispatch_logs`); open blocks go on."""
    global _enabled, _timing
    with _log_lock:
        _enabled, _timing = False, False


@contextlib.contextmanager
def dispatch_logging(*, timing: bool = False, maxlen: int = 10_000) -> Iterator[list[DispatchRecord]]:
    """Collect the decisions made inside a ``with`` block (this thread or task, and torch's autograd threads)
    in the yielded list (at most ``maxlen``, oldest dropped). Blocks nest and may overlap across threads: each
    collects its own, and ending one never stops another.

    >>> with dispatch_logging() as records:      # doctest: +SKIP
    ...     y = xpuruntime.kernels.layer_norm(x, w, b)
    >>> records[0].kernel                         # doctest: +SKIP
    'triton'
    """
    _check_maxlen(maxlen)
    block = _Block([], bool(timing), maxlen)
    token = _blocks.set((*_blocks.get(), block))
    with _log_lock:
        _open.append(block)
    try:
        yield block.records
    finally:
        _blocks.reset(token)
        with _log_lock:
            _open[:] = [b for b in _open if b is not block]


def _check_maxlen(maxlen: Any) -> None:
    if not isinstance(maxlen, int) or isinstance(maxlen, bool) or maxlen < 1:
        raise UnsupportedOperationError("invalid dispatch log size", expected="an int >= 1", received=repr(maxlen))


def dispatch_logging_enabled() -> bool:
    """Whether decisions are being recorded (process-wide, or by a block that is open)."""
    return _enabled or bool(_open)


def dispatch_timing_enabled() -> bool:
    """Whether ops should measure GPU time for the records."""
    blocks = _blocks.get() or _open
    return _enabled and _timing or any(b.timing for b in blocks)


def get_dispatch_logs(op: str | None = None) -> list[DispatchRecord]:
    """The recorded decisions, oldest first (optionally for one op)."""
    with _log_lock:
        records = list(_log)
    return records if op is None else [r for r in records if r.op == vocab.canonical_op(op)]


def clear_dispatch_logs() -> None:
    """Drop every record."""
    with _log_lock:
        _log.clear()


def log_dispatch(ctx: DispatchContext, selection: Selection, *, phase: str = "forward",
                 gpu_time_ms: float | None = None) -> DispatchRecord | None:
    """Append one record when logging is on; returns it (or None when logging is off)."""
    if not (_enabled or _open):
        return None
    record = DispatchRecord(
        op=ctx.op, kernel=selection.kernel, reason=selection.reason, skipped=list(selection.skipped),
        shapes=[list(s) for s in ctx.shapes], dtype=ctx.dtype, device=ctx.device, dims=dict(ctx.dims),
        requested=list(selection.requested), fallback=selection.fallback, phase=phase,
        requires_grad=ctx.requires_grad, training=ctx.training, gpu_time_ms=gpu_time_ms,
        params=_plain(selection.params))
    mine = _blocks.get()
    with _log_lock:
        if _enabled:
            _log.append(record)
        for block in mine or _open:
            block.records.append(record)
            if len(block.records) > block.maxlen:
                del block.records[0]
    return record
