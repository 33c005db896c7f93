"""The active policy: what :mod:`xpuruntime.kernels` (and ``xpuruntime.pytorch``) dispatch by.

Two layers, so policies nest and stay thread-safe (a ``ContextVar``) while a training script can still
set one policy for the whole process:

- :func:`use_policy` scopes a policy to a ``with`` block in the current thread or task; it nests and restores
  the outer one on exit, even on error.
- :func:`set_active_policy` sets the process default, seen wherever no ``use_policy`` scope is open
  (other threads included).

>>> from xpuruntime.kernels import active_policy, use_policy
>>> with use_policy({"kernels": {"layernorm": "triton"}}):
...     active_policy().kernels.get("layernorm")
'triton'
>>> active_policy().kernels.get("layernorm") is None
True
"""

from __future__ import annotations

import threading
from contextvars import ContextVar
from typing import Any

from xpuruntime.policies import Policy
from xpuruntime.policies.policy import as_policy

__all__ = ["active_policy", "use_policy", "set_active_policy", "as_policy"]

_scoped: ContextVar[Policy | None] = ContextVar("xpuruntime_active_policy", default=None)
_lock = threading.Lock()
_process_default: Policy | None = None
_EMPTY = Policy()  # shared and read-only by convention: change policies through use_policy / set_active_policy


def active_policy() -> Policy:
    """The policy in force here: the innermost ``use_policy`` scope, else the process default, else ``Policy()``."""
    scoped = _scoped.get()
    if scoped is not None:
        return scoped
    default = _process_default
    return default if default is not None else _EMPTY


def set_active_policy(policy: Any) -> Policy | None:
    """Make ``policy`` the process default (None clears it); returns the previous default.

    >>> previous = set_active_policy({"kernels": {"matmul": "triton"}})  # doctest: +SKIP
    >>> set_active_policy(previous)                                        # doctest: +SKIP
    """
    global _process_default
    new = None if policy is None else as_policy(policy)
    with _lock:
        previous, _process_default = _process_default, new
    return previous


class use_policy:  # noqa: N801 - a context manager, named like contextlib's
    """Scope ``policy`` to a ``with`` block (this thread or task only); yields the coerced Policy. A class, not a
    generator: the torch engine enters one on every run."""

    __slots__ = ("policy", "_token")

    def __init__(self, policy: Any) -> None:
        self.policy = as_policy(policy)

    def __enter__(self) -> Policy:
        self._token = _scoped.set(self.policy)
        return self.policy

    def __exit__(self, *exc: object) -> None:
        _scoped.reset(self._token)
