"""The engine base class and registry.

An engine is one module under ``inference/engines/`` that subclasses :class:`Engine`,
implements the ``*_impl`` hooks and decorates itself with :func:`register_engine`. The
public behaviour (feed checks, fallback rule, receipts, error wrapping) lives in
:class:`~xpuruntime.inference.session.InferenceSession`, never in an engine.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from xpuruntime.errors import EngineUnavailableError, UnsupportedOperationError, did_you_mean

if TYPE_CHECKING:
    from xpuruntime.inference.feeds import TensorInfo
    from xpuruntime.inference.models import ModelSource
    from xpuruntime.inference.report import ExecutionReport
    from xpuruntime.policies import Policy
    from xpuruntime.runtime.devices import DeviceSpec

__all__ = ["Engine", "EngineInfo", "register_engine", "get_engine_class", "engine_names", "list_engines"]

# Built-in engines: canonical name -> module. Modules are light (they import their library lazily).
_BUILTIN_MODULES = ("xpuruntime.inference.engines.onnxruntime",)
ENTRY_POINT_GROUP = "xpuruntime.engines"


class Engine(ABC):
    """One session's worth of an engine. Subclasses set the class attributes and the hooks."""

    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    package: ClassVar[str] = ""  # distribution that provides the engine's library
    module: ClassVar[str] = ""  # import name of that library
    extra: ClassVar[str] = ""  # xpuruntime extra that installs it
    devices: ClassVar[tuple[str, ...]] = ("cpu",)  # device kinds it can target

    def __init__(self, model: ModelSource, device: DeviceSpec, policy: Policy, options: dict[str, Any],
                 fingerprint_hash: str) -> None:
        self.model = model
        self.device = device
        self.policy = policy
        self.options = dict(options)
        self.fingerprint_hash = fingerprint_hash
        self.lock = threading.Lock()

    # -- availability --------------------------------------------------------------------
    @classmethod
    def unavailable_reason(cls) -> str | None:
        """None when the engine's library can be imported, else why not."""
        if cls.module and importlib.util.find_spec(cls.module) is None:
            return f"the Python package {cls.package or cls.module!r} is not installed"
        return None

    @classmethod
    def version(cls) -> str | None:
        for dist in (cls.package, f"{cls.package}-gpu"):
            try:
                return importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                continue
        return None

    @classmethod
    def require(cls) -> None:
        reason = cls.unavailable_reason()
        if reason:
            raise EngineUnavailableError(
                f"engine {cls.name!r} is not available: {reason}", expected=f"{cls.package or cls.module} installed",
                received="not installed", hint=f"pip install 'xpuruntime[{cls.extra}]'" if cls.extra else None)

    # -- hooks ---------------------------------------------------------------------------
    @abstractmethod
    def load_impl(self) -> None:
        """Build the engine session; raise XpuRuntimeError subclasses for bad models or options."""

    @abstractmethod
    def inputs_impl(self) -> list[TensorInfo]: ...

    @abstractmethod
    def outputs_impl(self) -> list[TensorInfo]: ...

    @abstractmethod
    def run_impl(self, feeds: dict[str, Any], output_names: Sequence[str], outputs: dict[str, Any] | None) -> list[Any]:
        """Run once; ``outputs`` maps names to caller-owned buffers to write into, where supported."""

    @abstractmethod
    def report_impl(self) -> ExecutionReport:
        """The receipt after construction: where every node was placed, from the engine's evidence."""

    def profile_impl(self, feeds: dict[str, Any], output_names: Sequence[str]) -> ExecutionReport:
        """One profiled run and its receipt (per-node times). Engines without a profiler refuse."""
        raise UnsupportedOperationError(f"engine {self.name!r} cannot profile a run",
                                        hint="use session.report for placement without times")

    @property
    def providers(self) -> list[str]:
        """What was requested of the engine (providers or devices), in priority order."""
        return []

    def close(self) -> None:
        """Release the engine's resources."""


@dataclass(frozen=True)
class EngineInfo:
    """One line of ``list_engines()``."""

    name: str
    aliases: tuple[str, ...]
    installed: bool
    version: str | None
    devices: tuple[str, ...]
    reason: str | None
    extra: str
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}


_registry: dict[str, type[Engine]] = {}
_aliases: dict[str, str] = {}
_sources: dict[str, str] = {}
_loaded = False
_load_lock = threading.Lock()


def register_engine(cls: type[Engine]) -> type[Engine]:
    """Class decorator: make an engine findable by its name and aliases."""
    name = cls.name.lower()
    _registry[name] = cls
    _sources.setdefault(name, cls.__module__)
    _aliases.update({a.lower(): name for a in cls.aliases})
    return cls


def _load_all() -> None:
    global _loaded
    with _load_lock:
        if _loaded:
            return
        for module in _BUILTIN_MODULES:
            importlib.import_module(module)
        _load_entry_points()
        _loaded = True


def _load_entry_points() -> None:
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = ep.load()
        except Exception as exc:  # a broken plugin must not break the built-in engines
            import warnings

            warnings.warn(f"xpuruntime engine plugin {ep.name!r} failed to load: {exc}", RuntimeWarning, stacklevel=2)
            continue
        if isinstance(cls, type) and issubclass(cls, Engine):
            register_engine(cls)
            _sources[cls.name.lower()] = f"plugin {ep.value}"


def engine_names() -> list[str]:
    _load_all()
    return sorted(_registry)


def get_engine_class(name: str) -> type[Engine]:
    """The engine class for a name or alias; unknown names raise with the closest name."""
    _load_all()
    key = str(name).strip().lower()
    key = _aliases.get(key, key)
    if key in _registry:
        return _registry[key]
    choices = [*_registry, *_aliases]
    raise EngineUnavailableError(f"unknown engine {name!r}", expected=f"one of {', '.join(sorted(_registry))}",
                                 received=repr(name), hint=did_you_mean(str(name), choices))


def list_engines() -> list[EngineInfo]:
    """Every registered engine: installed or not, version, device kinds, and why not when unavailable."""
    _load_all()
    out = []
    for name, cls in sorted(_registry.items()):
        reason = cls.unavailable_reason()
        out.append(EngineInfo(name, cls.aliases, reason is None, cls.version() if reason is None else None,
                              cls.devices, reason, cls.extra, _sources.get(name, cls.__module__)))
    return out
