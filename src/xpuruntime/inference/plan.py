"""Plan: what an engine's ``translate()`` decided for one policy on one device. Immutable once made.

Every engine produces exactly one Plan per session, in ``translate(policy, device, options)``, and then only
applies it: the native settings it passes to its library, what it could not honour (violations, with the
reason) and notes. ``requested`` has one meaning everywhere: what was asked of the engine, as a mapping of
settings a user would write (it becomes the receipt's ``requested``); ``targets`` are the providers or devices
asked for, in priority order.

>>> plan = Plan(native=None, requested={"providers": ["CPUExecutionProvider"]}, targets=("CPUExecutionProvider",))
>>> plan.targets
('CPUExecutionProvider',)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from xpuruntime.receipts import Violation

__all__ = ["Plan"]


@dataclass(frozen=True)
class Plan:
    """One engine's translation of a policy: native settings, what was asked, violations and notes."""

    native: Any  # the engine's own settings object, read by the engine, never edited after translate()
    requested: Mapping[str, Any] = field(default_factory=dict)
    targets: tuple[str, ...] = ()
    violations: tuple[Violation, ...] = ()
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "requested", MappingProxyType(dict(self.requested)))
        object.__setattr__(self, "targets", tuple(self.targets))
        object.__setattr__(self, "violations", tuple(self.violations))
        object.__setattr__(self, "notes", tuple(self.notes))

    def __getattr__(self, name: str) -> Any:
        """Read-through to the native settings (``plan.providers`` on ONNX Runtime, ``plan.config`` on OpenVINO)."""
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.native, name)

    def __reduce__(self) -> Any:  # deepcopy/pickle: MappingProxyType is not picklable
        return (_rebuild, (self.native, dict(self.requested), self.targets, self.violations, self.notes))


def _rebuild(*args: Any) -> Plan:
    return Plan(*args)
