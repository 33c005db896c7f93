"""Each SDPA call inside a ``policy()`` block, checked where torch's dispatcher can tell what it will run.

torch's SDPA dispatcher picks a backend per call from the enabled switches (and, on CUDA, their priority
order). :func:`checking` enters a ``TorchFunctionMode`` (thread-local, like autocast) while a policy that
names SDPA backends is active; it costs nothing when none is. For each
``torch.nn.functional.scaled_dot_product_attention`` call it:

- asks the dispatcher which backend it will run (``torch._fused_sdp_choice``, the function SDPA itself calls,
  so the answer is exact), and under ``fallback="warn"`` warns at that call when it is not the first listed
  backend the call's device has, with torch's own reasons on CUDA (``can_use_*_attention(params, debug)``);
- for a call on another device than the one the switches were chosen for (a CPU call on a CUDA machine)
  narrows the switches to that device's set for the call (see ``_translate.sdpa_order``) and puts them back
  (process-global for the call's duration, as ``sdpa_kernel`` would be).

It checks only while torch's SDPA switches are the ones the policy set: inside a user's own
``sdpa_kernel`` block (or xpuruntime.kernels' per-call scope, or another thread's policy) it leaves the call
alone. SDPA calls torch makes from C++ (``nn.MultiheadAttention``'s fast path) are not seen here; the switches
still apply to them and profiled receipts judge them.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import torch

from xpuruntime.pytorch import _flags
from xpuruntime.pytorch._translate import ATTENTION, CPU_SDPA, TorchPlan, sdpa_order
from xpuruntime.receipts import PolicyViolationWarning

__all__ = ["checking", "dispatcher_choice", "nothing_to_narrow"]

_NAMES = {int(getattr(torch.nn.attention.SDPBackend, v)): k for k, v in ATTENTION.items()}
_SDPA = torch.nn.functional.scaled_dot_product_attention
_CAN_USE = {"flash": "can_use_flash_attention", "efficient": "can_use_efficient_attention",
            "cudnn": "can_use_cudnn_attention"}
_CPU_FLASH = ("torch's CPU flash kernel needs 4-D (batch, heads, seq, head_dim) inputs, no dropout, equal q/k/v "
              "head dims and a last-dim stride of 1")


def _args(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
    defaults = (None, None, None, None, 0.0, False, None, False)
    out = dict(zip(names, defaults))
    out.update(zip(names, args))
    out.update({k: v for k, v in kwargs.items() if k in out})
    return out


def dispatcher_choice(call: dict[str, Any]) -> str | None:
    """The backend torch's SDPA dispatcher picks for ``call`` under the current switches (None: it cannot say)."""
    try:
        choice = torch._fused_sdp_choice(call["query"], call["key"], call["value"], call["attn_mask"],
                                         call["dropout_p"], call["is_causal"], scale=call["scale"],
                                         enable_gqa=call["enable_gqa"])
    except (RuntimeError, TypeError, ValueError, AttributeError):  # no kernel (SDPA raises it itself), odd inputs
        return None
    return _NAMES.get(int(choice))


def _enabled() -> tuple[str, ...]:
    snap = _flags.snapshot_sdpa()
    return tuple(n for n in ATTENTION if snap[f"sdpa.{n}"])


def _planned(plan: TorchPlan) -> tuple[str, ...]:
    return tuple(n for n in ATTENTION if plan.settings.get(f"sdpa.{n}"))


def _reasons(backend: str, call: dict[str, Any]) -> str:
    """torch's own reasons why ``backend`` cannot run the call (CUDA), or what the CPU kernel needs."""
    if call["query"].device.type == "cpu":
        return _CPU_FLASH if backend == "flash" else f"torch's CPU SDPA has no {backend} backend"
    check = getattr(torch.backends.cuda, _CAN_USE.get(backend, ""), None)
    if check is None:
        return "torch's dispatcher chose another backend"
    try:
        params = torch.backends.cuda.SDPAParams(call["query"], call["key"], call["value"], call["attn_mask"],
                                                float(call["dropout_p"]), bool(call["is_causal"]),
                                                bool(call["enable_gqa"]))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check(params, True)
    except (RuntimeError, TypeError, ValueError):
        return "torch's dispatcher chose another backend"
    said = [str(w.message).split(" (Triggered internally")[0].strip() for w in caught]
    return "; ".join(s for s in said if s and not s.endswith("because:")) or "torch's dispatcher chose another backend"


def _expected(plan: TorchPlan, device: str) -> str:
    """The first listed backend the call's device has (else the first listed one)."""
    have = CPU_SDPA if device == "cpu" else tuple(ATTENTION)
    return next((k for k in plan.attention if k in have), plan.attention[0])


def _warn(plan: TorchPlan, call: dict[str, Any], expected: str, ran: str) -> None:
    q = call["query"]
    listed = "/".join(plan.attention)
    warnings.warn(
        f"attention: {expected} cannot run this call (query {tuple(q.shape)} {str(q.dtype).removeprefix('torch.')} "
        f"on {q.device.type}): {_reasons(expected, call)}; torch runs {ran} instead (policy: {listed}, "
        "fallback='warn'). Cast the inputs or change the shapes, list the backend you accept, or set "
        "fallback='allow' to run quietly",
        PolicyViolationWarning, stacklevel=3)


@contextlib.contextmanager
def _narrowed(plan: TorchPlan, device: str) -> Iterator[None]:
    """The switches of ``device`` for one call, when they differ from those set for ``plan.device``."""
    wanted = sdpa_order(list(plan.attention), device, plan.fallback, plan.attention_open)
    if device == plan.device or set(wanted) == set(_planned(plan)):
        yield
        return
    before = _flags.snapshot_sdpa()
    try:
        for name in ATTENTION:
            _flags.write(f"sdpa.{name}", name in wanted)
        yield
    finally:
        _flags.restore(before)


class _Check(torch.overrides.TorchFunctionMode):
    def __init__(self, plan: TorchPlan) -> None:
        super().__init__()
        self.plan = plan
        self.planned = _planned(plan)

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func is not _SDPA or torch.compiler.is_compiling():  # a compiled graph keeps the switches as set
            return func(*args, **kwargs)
        call = _args(tuple(args), kwargs)
        q = call["query"]
        if not isinstance(q, torch.Tensor) or q.device.type not in ("cpu", "cuda") or _enabled() != self.planned:
            return func(*args, **kwargs)
        with _narrowed(self.plan, q.device.type):
            ran = dispatcher_choice(call)
            expected = _expected(self.plan, q.device.type)
            if self.plan.fallback == "warn" and ran is not None and ran != expected:
                _warn(self.plan, call, expected, ran)
            return func(*args, **kwargs)


def nothing_to_narrow(plan: TorchPlan) -> bool:
    """No warning to give and no call whose device needs other switches than the plan's.

    A CPU plan under ``error`` runs on CUDA what a CUDA plan would (the listed backends, math never passed
    over); under ``allow`` a CUDA call needs the CUDA set (fused kernels behind the listed ones).
    """
    if plan.fallback == "warn" or plan.device != "cpu":
        return False
    return plan.fallback == "error" or not torch.cuda.is_available()


@contextlib.contextmanager
def checking(plan: TorchPlan) -> Iterator[None]:
    """Check each SDPA call of the block against ``plan`` (nothing is entered when it names no SDPA backend)."""
    if not plan.attention or nothing_to_narrow(plan):
        yield
        return
    with _Check(plan):
        yield
