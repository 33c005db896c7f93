"""The engine base class and registry.

An engine is one module under ``inference/engines/`` that subclasses :class:`Engine`,
implements the ``*_impl`` hooks and decorates itself with :func:`register_engine`. The
public behaviour (feed checks, fallback rule, receipts, error wrapping) lives in
:class:`~xpuruntime.inference.session.InferenceSession`, never in an engine.

Other distributions add engines without any change here, through the entry point group
``xpuruntime.engines`` (``name = "module:EngineSubclass"``)::

    [project.entry-points."xpuruntime.engines"]
    echo = "xpuruntime_echo_engine:EchoEngine"

Plugins are loaded on the first registry lookup (``list_engines()``, ``InferenceSession``). One
that fails to import, is not an :class:`Engine`, or takes a built-in name is skipped with a
``RuntimeWarning`` naming its distribution; the built-in engines keep working.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

from xpuruntime.errors import EngineUnavailableError, UnsupportedOperationError, did_you_mean

if TYPE_CHECKING:
    from xpuruntime.inference.feeds import TensorInfo
    from xpuruntime.inference.models import ModelSource
    from xpuruntime.inference.report import ExecutionReport
    from xpuruntime.policies import Policy
    from xpuruntime.runtime.devices import DeviceSpec

__all__ = ["Engine", "EngineInfo", "register_engine", "get_engine_class", "engine_names", "list_engines",
           "registered_engine"]

# Built-in engines: canonical name -> module. Modules are light (they import their library lazily).
_BUILTIN_MODULES = ("xpuruntime.inference.engines.onnxruntime", "xpuruntime.inference.engines.openvino",
                    "xpuruntime.inference.engines.torch")
ENTRY_POINT_GROUP = "xpuruntime.engines"


class Engine(ABC):
    """One session's worth of an engine. Subclasses set the class attributes and the hooks."""

    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    package: ClassVar[str] = ""  # distribution that provides the engine's library
    module: ClassVar[str] = ""  # import name of that library
    extra: ClassVar[str] = ""  # xpuruntime extra that installs it
    devices: ClassVar[tuple[str, ...]] = ("cpu",)  # device kinds it can target
    #: tuning results to replay, by engine name (from a lock file); InferenceSession sets it before load_impl,
    #: and an engine that can replay its own tuning reads its entry there
    tuning: Mapping[str, Any] = MappingProxyType({})

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
    @classmethod
    def load_model(cls, model: Any) -> Any:
        """Check and wrap the user's ``model`` argument; ONNX engines take a path, bytes or a ModelProto.
        Engines that serve Python objects (an ``nn.Module``) override this."""
        from xpuruntime.inference.models import load_model_source

        return load_model_source(model)

    def check_feeds(self, feeds: Any, checker: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
        """Feeds checked against the inputs (``checker`` is the shared numpy path); engines with their own
        tensor type override this to keep it."""
        return checker(feeds)

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

    def run_many_impl(self, feeds_list: Sequence[dict[str, Any]], output_names: Sequence[str]) -> list[list[Any]]:
        """Run every feed set; engines with an asynchronous queue override this. Results in input order."""
        return [self.run_impl(feeds, output_names, None) for feeds in feeds_list]

    def profile_impl(self, feeds: dict[str, Any], output_names: Sequence[str]) -> ExecutionReport:
        """One profiled run and its receipt (per-node times). Engines without a profiler refuse."""
        raise UnsupportedOperationError(f"engine {self.name!r} cannot profile a run",
                                        hint="use session.report for placement without times")

    @property
    def providers(self) -> list[str]:
        """What was requested of the engine (providers or devices), in priority order."""
        return []

    def tuning_results(self) -> Any:
        """The engine's own tuning results, to store in a lock (None: this engine keeps none)."""
        return None

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
_load_lock = threading.RLock()  # re-entrant: a plugin may call list_engines() while it is imported


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
        _loaded = True  # set first: a plugin that lists engines while imported must not load plugins again
        try:
            for module in _BUILTIN_MODULES:
                importlib.import_module(module)
            _load_entry_points()
        except BaseException:
            _loaded = False
            raise


def _load_entry_points() -> None:
    """Engines of other distributions (entry point group ``xpuruntime.engines``); never replace one loaded before."""
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        before, before_aliases = dict(_registry), dict(_aliases)
        cls = _load_plugin(ep)
        _registry.clear()  # what the module registered while imported is undone: only the entry point counts
        _registry.update(before)
        _aliases.clear()
        _aliases.update(before_aliases)
        if cls is not None:
            _register_plugin(ep, cls)


def _register_plugin(ep: importlib.metadata.EntryPoint, cls: type[Engine]) -> None:
    name = cls.name.lower()
    if name in _registry or name in _aliases:
        owner = _sources.get(_aliases.get(name, name), "a built-in engine")
        _plugin_warning(ep, f"was skipped: the engine name {cls.name!r} is taken by {owner}")
        return
    taken = dict(_aliases)
    register_engine(cls)
    for alias in (a.lower() for a in cls.aliases):
        if alias in _registry or alias in taken:
            _aliases[alias] = taken.get(alias, alias)
            _plugin_warning(ep, f"keeps its engine {cls.name!r}, but its alias {alias!r} is taken and was ignored")
    _aliases.pop(name, None)
    _sources[name] = f"plugin {_dist_name(ep)} ({ep.value})"


def _load_plugin(ep: importlib.metadata.EntryPoint) -> type[Engine] | None:
    try:
        cls = ep.load()
    except Exception as exc:  # a broken plugin must not break the built-in engines
        _plugin_warning(ep, f"was skipped: it failed to load ({type(exc).__name__}: {exc})")
        return None
    if not (isinstance(cls, type) and issubclass(cls, Engine)) or getattr(cls, "name", None) is None:
        _plugin_warning(ep, f"was skipped: {ep.value} is not an xpuruntime.inference.Engine subclass with a name")
        return None
    return cls


def _dist_name(ep: importlib.metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else ep.value


def _plugin_warning(ep: importlib.metadata.EntryPoint, why: str) -> None:
    import warnings

    warnings.warn(f"xpuruntime engine plugin {ep.name!r} from {_dist_name(ep)} {why} "
                  f"(fix or uninstall that package; the built-in engines are unaffected)", RuntimeWarning,
                  stacklevel=6)


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
    """Every registered engine, built-in or plugin: installed or not, version, device kinds, why not.

    >>> [(e.name, e.installed) for e in list_engines()]  # doctest: +SKIP
    [('onnxrt+trt', True), ('onnxruntime', True)]
    """
    _load_all()
    out = []
    for name, cls in sorted(_registry.items()):
        reason = cls.unavailable_reason()
        aliases = tuple(a for a in cls.aliases if _aliases.get(a.lower()) == name)  # without refused ones
        out.append(EngineInfo(name, aliases, reason is None, cls.version() if reason is None else None,
                              cls.devices, reason, cls.extra, _sources.get(name, cls.__module__)))
    return out


class registered_engine:  # noqa: N801 - a context manager, named like contextlib's
    """Register an :class:`Engine` subclass for the duration of a ``with`` block, then restore the registry.

    For tests and notebooks: the engine's name and aliases resolve inside the block; on exit the registry's
    names, aliases and sources are exactly what they were before (an engine it shadowed is back).

    Example::

        >>> with registered_engine(MyEngine):  # doctest: +SKIP
        ...     InferenceSession(model, engine=MyEngine.name).run(feeds)
    """

    def __init__(self, cls: type[Engine]) -> None:
        if not (isinstance(cls, type) and issubclass(cls, Engine)) or not isinstance(getattr(cls, "name", None), str):
            from xpuruntime.errors import InputError

            raise InputError("registered_engine takes an engine class", expected="an Engine subclass with a name",
                             received=repr(cls))
        self.cls = cls
        self._saved: list[list[tuple[dict[str, Any], dict[str, Any]]]] = []  # one snapshot per open block

    def __enter__(self) -> type[Engine]:
        with _load_lock:
            _load_all()  # first: a registry loaded inside the block would be lost on restore
            self._saved.append([(d, dict(d)) for d in (_registry, _aliases, _sources)])
            register_engine(self.cls)
        return self.cls

    def __exit__(self, *exc: object) -> None:
        with _load_lock:
            for live, before in self._saved.pop():
                live.clear()
                live.update(before)
