"""CUDA graphs: capture a function once (inference or a whole training step) and replay it.

Follows torch's CUDA graph notes: warm-up iterations on a side stream, capture with
``torch.cuda.graph``, static input buffers that new inputs are copied into, static outputs that each
replay overwrites. Where capture is impossible (no GPU, inputs on the CPU, an op that syncs with the
host) the fallback rule decides: ``error`` raises, ``warn`` warns and runs eagerly, ``allow`` runs
eagerly; the violation is recorded for receipts in every case.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from xpuruntime.errors import InputError, PolicyError, PolicyViolationError, UnsupportedOperationError
from xpuruntime.policies import vocabulary as vocab
from xpuruntime.pytorch import _state
from xpuruntime.receipts import PolicyViolationWarning, Violation

__all__ = ["capture_graph", "CapturedGraph", "GraphCapture"]

_FALLBACKS = vocab.FALLBACKS


@dataclass
class _Saved:
    """Tensors whose values the warm-up must not change, and optimizer state it may create."""

    tensors: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    optimizers: list[tuple[torch.optim.Optimizer, set[int]]] = field(default_factory=list)

    def restore(self) -> None:
        with torch.no_grad():
            for live, saved in self.tensors:
                live.copy_(saved)
            for opt, before in self.optimizers:
                for value in _optimizer_tensors(opt):
                    if id(value) not in before:
                        value.zero_()  # state created by the warm-up: fresh state (Adam's moments and step are 0)


def _optimizer_tensors(opt: torch.optim.Optimizer) -> Iterable[torch.Tensor]:
    for per_param in opt.state.values():
        yield from (v for v in per_param.values() if isinstance(v, torch.Tensor))


def _save(state: Any) -> _Saved:
    saved = _Saved()
    items = state if isinstance(state, (list, tuple)) else [state] if state is not None else []
    for item in items:
        if isinstance(item, torch.nn.Module):
            saved.tensors += [(t, t.detach().clone()) for t in [*item.parameters(), *item.buffers()]]
        elif isinstance(item, torch.optim.Optimizer):
            _make_capturable(item)
            saved.tensors += [(t, t.detach().clone()) for t in _optimizer_tensors(item)]
            saved.optimizers.append((item, {id(t) for t in _optimizer_tensors(item)}))
        elif isinstance(item, torch.Tensor):
            saved.tensors.append((item, item.detach().clone()))
        else:
            raise PolicyError("capture_graph: state takes modules, optimizers and tensors",
                              expected="an nn.Module, a torch.optim.Optimizer or a Tensor (or a list of them)",
                              received=type(item).__name__)
    return saved


def _make_capturable(opt: torch.optim.Optimizer) -> None:
    """Optimizers with a ``capturable`` option (Adam, AdamW, ...) must have it on to be captured."""
    if not opt.state:
        for group in opt.param_groups:
            if group.get("capturable") is False:
                group["capturable"] = True


def _zero_grads(state: Any) -> None:
    items = state if isinstance(state, (list, tuple)) else [state] if state is not None else []
    for item in items:
        if isinstance(item, (torch.nn.Module, torch.optim.Optimizer)):
            item.zero_grad(set_to_none=True)  # backward inside the capture allocates grads in the graph's pool


class CapturedGraph:
    """A captured function: call it with new inputs (same shapes and dtypes) to replay it.

    ``captured`` is False where it runs eagerly (no CUDA); ``violations`` says why. Outputs of a replay are
    the graph's static tensors, overwritten by the next replay: clone what you keep.
    """

    def __init__(self, fn: Callable[..., Any], static_args: tuple[Any, ...], *, graph: Any = None,
                 outputs: Any = None, violations: Sequence[Violation] = ()) -> None:
        self.fn = fn
        self.static_args = static_args
        self.graph = graph
        self.outputs = outputs
        self.violations = list(violations)

    @property
    def captured(self) -> bool:
        return self.graph is not None

    def __call__(self, *args: Any) -> Any:
        if self.graph is None:
            return self.fn(*(args or self.static_args))
        if args:
            if len(args) != len(self.static_args):
                raise InputError(f"the captured function takes {len(self.static_args)} inputs",
                                 expected=f"{len(self.static_args)} positional inputs", received=str(len(args)))
            for i, (static, new) in enumerate(zip(self.static_args, args)):
                _copy_into(static, new, f"input {i}")
        return self.replay()

    def replay(self) -> Any:
        """Replay with whatever the static inputs hold now."""
        if getattr(torch.autograd.profiler, "_is_profiler_enabled", True):  # a named range for traces; nothing to pay otherwise
            with torch.profiler.record_function("xpuruntime::cuda_graph_replay"):
                self.graph.replay()
        else:
            self.graph.replay()
        return self.outputs

    def __repr__(self) -> str:
        how = "captured CUDA graph" if self.captured else "eager (not captured)"
        return f"CapturedGraph({getattr(self.fn, '__name__', 'fn')}, {how})"


def _copy_into(static: Any, new: Any, where: str) -> None:
    if isinstance(static, torch.Tensor):
        if new is static:
            return
        if not isinstance(new, torch.Tensor) or new.shape != static.shape:
            raise InputError(f"{where} does not fit the captured graph",
                             expected=f"a tensor of shape {list(static.shape)} ({static.dtype})",
                             received=f"{type(new).__name__} {list(getattr(new, 'shape', []))}",
                             hint="a CUDA graph replays fixed shapes; capture another graph for this shape")
        static.copy_(new, non_blocking=True)
    elif isinstance(static, (list, tuple)) and isinstance(new, (list, tuple)) and len(static) == len(new):
        for j, (s, n) in enumerate(zip(static, new)):
            _copy_into(s, n, f"{where}[{j}]")
    elif isinstance(static, dict) and isinstance(new, dict) and static.keys() == new.keys():
        for key in static:
            _copy_into(static[key], new[key], f"{where}[{key!r}]")
    elif new != static:
        raise InputError(f"{where} is a Python value the graph was captured with",
                         expected=repr(static), received=repr(new),
                         hint="a CUDA graph replays fixed Python values; capture another graph")


def _tensors(value: Any) -> Iterable[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _tensors(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v)


def _why_not(static_args: tuple[Any, ...]) -> str | None:
    if not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    on_host = [t for t in _tensors(static_args) if not t.is_cuda]
    if on_host:
        return f"a static input lives on {on_host[0].device}; a CUDA graph reads inputs from GPU memory"
    return None


def _resolve_fallback(fallback: str | None) -> str:
    if fallback is None:
        state = _state.active()
        return state.policy.execution.fallback if state else "warn"
    if fallback not in _FALLBACKS:
        raise PolicyError(f"unknown fallback {fallback!r}", expected="error, warn or allow", received=repr(fallback))
    return fallback


def _refuse(fn: Callable[..., Any], static_args: tuple[Any, ...], reason: str, fallback: str,
            cause: BaseException | None = None) -> CapturedGraph:
    violation = Violation("option", "cuda_graphs", "CUDA graph capture", "eager execution", reason)
    _state.note_violation(violation)
    if fallback == "error":
        raise PolicyViolationError(f"capture_graph: cannot capture a CUDA graph: {reason}", violations=[violation],
                                   hint="run on a CUDA device with inputs on it, or set fallback='warn' to run "
                                        "eagerly") from cause
    if fallback == "warn":
        warnings.warn(f"capture_graph runs {getattr(fn, '__name__', 'the function')} eagerly: {reason}",
                      PolicyViolationWarning, stacklevel=3)
    return CapturedGraph(fn, static_args, violations=[violation])


def capture_graph(fn: Callable[..., Any] | None = None, *static_args: Any, warmup: int = 3, state: Any = None,
                  pool: Any = None, fallback: str | None = None) -> Any:
    """Capture ``fn(*static_args)`` as a CUDA graph and return a callable that replays it.

    Without ``fn`` it is the original design's context form (an alias): ``with capture_graph() as g:`` captures
    the block once, runs it once, and ``g.replay()`` runs it again; see :class:`GraphCapture`.

    >>> def train_step(x, y):                                    # doctest: +SKIP
    ...     opt.zero_grad(set_to_none=True)
    ...     loss = loss_fn(model(x), y); loss.backward(); opt.step()
    ...     return loss
    >>> step = xrt_torch.capture_graph(train_step, x0, y0, state=(model, opt))   # doctest: +SKIP
    >>> for x, y in loader:                                      # doctest: +SKIP
    ...     loss = step(x, y)        # copies x, y into x0, y0 and replays forward, backward and step

    ``warmup`` iterations run first on a side stream (torch requires them: lazy init, cuDNN and cuBLAS
    workspaces). They are real calls: ``state`` (modules, optimizers, tensors) is put back afterwards, so
    the first replay is the first step; optimizer state the warm-up created is zeroed (fresh Adam/SGD state)
    and optimizers with a ``capturable`` option get it switched on. Kernels are chosen at capture: capture
    under the policy the replays should run with. ``fallback`` defaults to the active policy's.
    """
    if fn is None:
        return _context_form(static_args, warmup, state, pool, fallback)
    fallback = _resolve_fallback(fallback)
    reason = _why_not(static_args)
    if reason:
        return _refuse(fn, static_args, reason, fallback)
    saved = _save(state)
    try:
        _warm_up(fn, static_args, warmup)
        _zero_grads(state)
        graph = torch.cuda.CUDAGraph()
        with _capturing(graph, pool):
            outputs = fn(*static_args)
    except RuntimeError as exc:
        torch.cuda.synchronize()
        saved.restore()
        return _refuse(fn, static_args, f"torch could not capture it: {str(exc).strip().splitlines()[0]}",
                       fallback, exc)
    saved.restore()
    torch.cuda.synchronize()
    return CapturedGraph(fn, static_args, graph=graph, outputs=outputs)


def _warm_up(fn: Callable[..., Any], static_args: tuple[Any, ...], warmup: int) -> None:
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(max(1, warmup)):
            fn(*static_args)
    torch.cuda.current_stream().wait_stream(side)


@contextlib.contextmanager
def _capturing(graph: Any, pool: Any) -> Iterator[None]:
    """``torch.cuda.graph(graph, pool=pool)`` that leaves the process usable when the block or the capture fails.

    torch's own ``__exit__`` ends the capture with ``capture_end()``; when the capture was invalidated (a host sync
    such as ``.item()`` inside it), ``cudaStreamEndCapture`` fails and ``capture_end`` raises before two things:
    leaving the capture stream (``__exit__`` never reaches ``stream_ctx.__exit__``), and ending the default CUDA
    generator's capture (``capture_epilogue``: torch < 2.12 keeps one ``capturing_`` flag per generator, set by
    ``capture_begin``). With the flag left set every later random op in the process (``torch.randn(...,
    device="cuda")``, dropout) raised "Offset increment outside graph capture encountered unexpectedly". Here the
    stream is always left, and after a failed ``capture_end`` the generator is released by :func:`_release_rng`.
    """
    ctx = torch.cuda.graph(graph, pool=pool)
    ctx.__enter__()
    try:
        yield
    except BaseException as exc:
        _end_capture(ctx, exc)
        raise
    failure = _end_capture(ctx, None)
    if failure is not None:
        raise failure


def _end_capture(ctx: Any, exc: BaseException | None) -> BaseException | None:
    """End the capture of ``ctx`` whatever happened in the block; capture_end's error, or None."""
    try:
        ctx.__exit__(type(exc) if exc else None, exc, exc.__traceback__ if exc else None)
        return None
    except Exception as err:  # capture_end of a broken capture: it raised before leaving the capture stream
        with contextlib.suppress(Exception):
            ctx.stream_ctx.__exit__(None, None, None)
        _release_rng()
        return err


def _release_rng() -> None:
    """Take the current device's default CUDA generator out of the capture a failed ``capture_end`` left it in.

    A capture that ends cleanly runs the generator's capture epilogue; a throwaway one (one kernel, never replayed,
    freed at once) does that for the generator the failed capture registered, without drawing any random numbers,
    so the eager random stream goes on where it was. On torch versions that keep capture state per capture this is
    a harmless extra capture.
    """
    with contextlib.suppress(Exception), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scratch = torch.zeros(1, device="cuda")
        throwaway = torch.cuda.CUDAGraph()
        with torch.cuda.graph(throwaway):
            scratch.add_(1)
        del throwaway


# -- the context form (the original design's spelling) ------------------------------------------------------
_FUNCTION_FORM = "capture_graph(step_fn, *static_inputs, warmup=3, state=(model, opt))"


def _context_form(static_args: tuple[Any, ...], warmup: int, state: Any, pool: Any,
                  fallback: str | None) -> GraphCapture:
    if static_args or state is not None or warmup != 3:
        raise PolicyError("capture_graph() as a context takes no function, inputs, warmup or state",
                          expected="with capture_graph(pool=..., fallback=...) as g: ...",
                          received="static inputs, warmup or state", hint=f"for warm-up and state use {_FUNCTION_FORM}")
    return GraphCapture(pool=pool, fallback=_resolve_fallback(fallback))


def _the_block() -> None:
    """Stands for the ``with`` block in messages."""


_the_block.__name__ = "the block"


class GraphCapture:
    """``with capture_graph() as g:`` -- capture the block once as a CUDA graph, run it, ``g.replay()`` again.

    >>> for _ in range(3):                                   # doctest: +SKIP
    ...     y = model(x); loss = loss_fn(y, t); loss.backward()     # warm-up, eagerly (torch needs it)
    >>> with xrt_torch.capture_graph() as g:                 # doctest: +SKIP
    ...     y = model(x); loss = loss_fn(y, t); loss.backward()
    >>> x.copy_(next_batch); g.replay()                      # doctest: +SKIP

    The block's tensors (``y``, ``loss`` and the gradients) are the graph's static memory: each replay
    overwrites them, reading whatever ``x`` holds. At the end of the block the graph is replayed once, so the
    block's results exist as if it had run eagerly. A block cannot be warmed up or re-run by xpuruntime: run it
    eagerly first (or use the function form, ``capture_graph(fn, *inputs)``, which warms up and restores
    state). Without CUDA the block runs eagerly under ``fallback`` warn or allow (``g.captured`` is False and
    ``g.replay()`` raises); ``error`` raises before the block. A capture torch refuses inside the block raises
    :class:`~xpuruntime.PolicyViolationError` under every fallback: the block cannot be re-run eagerly.
    """

    def __init__(self, pool: Any = None, fallback: str = "warn") -> None:
        self.pool, self.fallback = pool, fallback
        self.graph: Any = None
        self.violations: list[Violation] = []
        self._ctx: Any = None

    @property
    def captured(self) -> bool:
        return self.graph is not None

    def __enter__(self) -> GraphCapture:
        reason = None if torch.cuda.is_available() else "no CUDA device (torch.cuda.is_available() is False)"
        if reason:
            self.violations = _refuse(_the_block, (), reason, self.fallback).violations
            return self
        graph = torch.cuda.CUDAGraph()
        self._ctx = torch.cuda.graph(graph, pool=self.pool)
        self._ctx.__enter__()
        self.graph = graph
        return self

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> bool:
        if self._ctx is None:
            return False
        ctx, self._ctx = self._ctx, None
        failure = _end_capture(ctx, exc)  # the capture stream left and the generator released, whatever happened
        if exc is None and failure is None:
            self.graph.replay()
            return False
        self.graph = None
        if exc is None or isinstance(exc, RuntimeError):
            self._failed(exc or failure)  # type: ignore[arg-type]
        return False  # the block's own error (not torch's) goes on as it is

    def _failed(self, exc: BaseException) -> None:
        reason = f"torch could not capture the block: {str(exc).strip().splitlines()[0] if str(exc) else exc}"
        violation = Violation("option", "cuda_graphs", "CUDA graph capture", "failed capture", reason)
        _state.note_violation(violation)
        raise PolicyViolationError(f"capture_graph: {reason}", violations=[violation],
                                   hint=f"warm the block up eagerly before capturing it, or use {_FUNCTION_FORM}, "
                                        "which warms up and falls back to eager runs") from exc

    def replay(self) -> None:
        """Run the captured block again (on the inputs' current values)."""
        if self.graph is None:
            raise UnsupportedOperationError(
                "nothing was captured, so there is nothing to replay: " + "; ".join(v.reason for v in self.violations),
                expected="a block captured on a CUDA device", received="an eager block",
                hint=f"call the block's code again, or use the function form {_FUNCTION_FORM}, whose eager fallback "
                     "re-runs the function")
        with torch.profiler.record_function("xpuruntime::cuda_graph_replay"):
            self.graph.replay()

    def __repr__(self) -> str:
        return f"GraphCapture({'captured CUDA graph' if self.captured else 'eager (not captured)'})"
