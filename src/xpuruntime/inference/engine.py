"""The engine base class (the public contract) and the engine registry.

An engine is one module ``inference/engines/<name>.py`` that subclasses :class:`Engine`, implements
``translate()`` and the small ``*_impl`` hooks, and decorates its class with :func:`register_engine`. The
built-in engines are found by listing that folder (no central list, as tinygrad's ``ops_<name>.py``).

The base class owns every public method (``load``, ``run``, ``run_many``, ``explain``, ``close``): it checks
options and feeds, wraps engine exceptions into :class:`~xpuruntime.errors.XpuRuntimeError` subclasses, builds
the receipt header from the :class:`~xpuruntime.inference.plan.Plan` and enforces the fallback rule. An engine
never edits its plan after ``translate()``; what happens while loading (a model converted, tuning replayed) is a
load note.

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
import pkgutil
import re
import threading
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from xpuruntime.errors import (
    DeviceError,
    EngineUnavailableError,
    InputError,
    ModelLoadError,
    PolicyError,
    UnsupportedOperationError,
    XpuRuntimeError,
    did_you_mean,
    short_repr,
)
from xpuruntime.inference.feeds import tensor_key  # light (numpy): run's hot path reads it on every call
from xpuruntime.inference.prepared import MISS, PreparedRun, closed_call, repeater
from xpuruntime.receipts import ExecutionReport, enforce_fallback
from xpuruntime.runtime import profiler as _profiler
from xpuruntime.runtime.profiler import SpanLog

#: how many configurations of numpy feeds an engine keeps a repeat for (Engine._remember)
_REPEATS_KEPT = 4

if TYPE_CHECKING:
    from xpuruntime.inference.feeds import TensorInfo
    from xpuruntime.inference.plan import Plan
    from xpuruntime.policies import Policy
    from xpuruntime.runtime.devices import DeviceSpec

__all__ = ["Engine", "EngineInfo", "register_engine", "registered_engine", "get_engine_class", "engine_names",
           "list_engines"]

ENGINES_PACKAGE = "xpuruntime.inference.engines"
ENTRY_POINT_GROUP = "xpuruntime.engines"
#: the size of a symbolic non-leading dim in seeded inputs (Engine.seeded_feeds)
SEEDED_DIM = 64


class _Wrapped:
    """The engine library's own exceptions raised in the block, as ``wrap(exc)`` (xpuruntime's pass through); a
    class, not a generator: every run enters one."""

    __slots__ = ("wrap",)

    def __init__(self, wrap: Callable[[Exception], XpuRuntimeError]) -> None:
        self.wrap = wrap

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> bool:
        if isinstance(exc, Exception) and not isinstance(exc, XpuRuntimeError):
            raise self.wrap(exc) from None
        return False


class _Again:
    """A run of torch tensors into caller-owned torch tensors that :meth:`Engine.run` can repeat with no other work
    while the caller passes the same tensors again: the same objects (held here, so an id is never reused), at
    the same addresses, with the same shapes and dtypes, still contiguous, in dicts of the same names, with the
    default outputs. The checks that run passed (feeds, output buffers, the engine's binding) depend on nothing
    else, so they still hold. A serving loop refilling one set of device tensors in place pays these attribute
    reads and the engine's call, as a hand-written IO-binding loop does."""

    __slots__ = ("call", "feeds", "outputs", "profile", "results")

    def __init__(self, feeds: tuple[Any, ...], outputs: tuple[Any, ...], call: Callable[[], None],
                 results: dict[str, Any], profile: Callable[[], Any]) -> None:
        self.feeds, self.outputs, self.call, self.results, self.profile = feeds, outputs, call, results, profile

    @classmethod
    def of(cls, engine: Engine, feeds: Any, outputs: Mapping[str, Any], checked: dict[str, Any],
           names: list[str]) -> _Again | None:
        """The record of the run just made (each tensor with its :func:`~xpuruntime.inference.feeds.tensor_key`),
        or None when it cannot be repeated this way."""
        if type(feeds) is not dict or type(outputs) is not dict or set(outputs) != set(names):
            return None
        entries = []
        for given in (feeds, outputs):
            part = []
            for name, value in given.items():
                key = tensor_key(value)
                if key is None:  # not a torch tensor, or not contiguous
                    return None
                part.append((name, value, key))  # the tensor held: its id in the key is never reused meanwhile
            entries.append(tuple(part))
        call = engine.again_impl(checked, names, dict(outputs))
        if call is None:
            return None
        results = {n: outputs[n] for n in names}
        return cls(entries[0], entries[1], call, results, lambda: engine._profile(checked, names))

    def same(self, feeds: Any, outputs: Any) -> bool:
        if type(feeds) is not dict or type(outputs) is not dict or len(feeds) != len(self.feeds) \
                or len(outputs) != len(self.outputs):
            return False
        for given, entries in ((feeds, self.feeds), (outputs, self.outputs)):
            for name, _tensor, key in entries:
                if tensor_key(given.get(name)) != key:
                    return False
        return True


class Engine(ABC):
    """One session's worth of an engine: the public contract here, the engine's work in the hooks.

    Subclasses set the class attributes, implement :meth:`translate` and the ``*_impl`` hooks, and are
    created through :meth:`create` (``InferenceSession`` does that).
    """

    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    package: ClassVar[str] = ""  # distribution that provides the engine's library
    module: ClassVar[str] = ""  # import name of that library
    extra: ClassVar[str] = ""  # xpuruntime extra that installs it
    devices: ClassVar[tuple[str, ...]] = ("cpu",)  # device kinds it can target
    option_keys: ClassVar[tuple[str, ...]] = ()  # accepted ``engine_options`` keys
    #: kinds of caller-owned output buffers ``run(outputs=...)`` takes (``feeds.OUTPUT_BUFFER_KINDS``)
    output_buffers: ClassVar[tuple[str, ...]] = ("numpy", "cuda")
    #: a prepared run checks that numpy feeds are C-contiguous (False: the engine's lean calls take strided arrays,
    #: its library copying them as its own run does)
    contiguous_feeds: ClassVar[bool] = True

    def __init__(self, model: Any, device: DeviceSpec, policy: Policy, options: Mapping[str, Any],
                 fingerprint_hash: str, tuning: Mapping[str, Any] | None = None) -> None:
        self.model = model
        self.source_model = model  # the model as the user gave it (engines may swap self.model for a variant)
        self.device = device
        self.policy = policy
        self.options = dict(options)
        self.fingerprint_hash = fingerprint_hash
        #: tuning results to replay, by engine name (from a lock file); an engine that can replay its own
        #: tuning reads its entry in load_impl
        self.tuning: dict[str, Any] = dict(tuning or {})
        self.load_notes: list[str] = []  # what happened while loading: conversions, replayed tuning
        self._spans = SpanLog(f"xpuruntime {self.name}@{device}")  # xpuruntime's own steps, for traces
        self._load_spans: list[dict[str, Any]] = []
        self.lock_record: dict[str, Any] | None = None  # the lock the policy came from (create(lock=...))
        self._closed = False
        self._again: _Again | None = None  # the last device-I/O run, while it can be repeated as it is
        self._repeat: Callable[[Any], Any] | None = None  # the last host configuration run twice (_remember)
        self._last_host: tuple[Any, ...] | None = None
        self._repeats: dict[tuple[Any, ...], Callable[[Any], Any] | None] = {}  # the last few, by configuration
        self._made: weakref.WeakSet[Callable[[Any], Any]] = weakref.WeakSet()  # every repeat alive: close() closes it
        self._repeat_lock = threading.Lock()  # _remember's changes to the three above, and close()'s
        self._prepared: weakref.WeakSet[PreparedRun] = weakref.WeakSet()  # closed with the engine

    # -- construction --------------------------------------------------------------------
    @classmethod
    def create(cls, model: Any, device: Any, policy: Policy, options: Mapping[str, Any] | None = None, *,
               tuning: Mapping[str, Any] | None = None, lock: Any = None) -> Engine:
        """Check the device and options, translate the policy, load the model and judge the receipt.

        ``lock``: the checked :class:`~xpuruntime.policies.lock.Lock` the policy came from; its tuning results are
        replayed and the receipt records it (hash, drift rule, drift, signature).
        Under ``fallback="error"`` an engine that cannot honour ``policy`` raises
        :class:`~xpuruntime.PolicyViolationError` here, after releasing what it built.
        """
        from xpuruntime.runtime.devices import parse_device
        from xpuruntime.runtime.fingerprint import fingerprint

        cls.require()
        spec = parse_device(device)
        _check_device(cls, spec)
        if options is not None and not isinstance(options, Mapping):
            raise PolicyError("engine_options must be a mapping", expected="a dict of engine-specific options",
                              received=type(options).__name__)
        if lock is not None and tuning is None:
            tuning = lock.engine_tuning
        engine = cls(cls.load_model(model), spec, policy, options or {}, fingerprint().hash, tuning)
        engine.lock_record = _lock_record(lock)
        return _load_or_close(engine)

    def load(self) -> ExecutionReport:
        """Translate the policy into a :class:`Plan`, build the engine session, and judge the receipt."""
        from xpuruntime.inference.feeds import FeedChecker

        spans = self._spans
        self._check_option_keys()
        with spans.span("translate"):
            self.plan: Plan = self.translate(self.policy, self.device, self.options)
        with spans.span("load"), self._wrapped(self.load_error):
            self.load_impl()
            self._inputs = self.inputs_impl()
            self._outputs = self.outputs_impl()
        self._feeds = FeedChecker(self._inputs)
        self._output_list = [o.name for o in self._outputs]
        report = self.new_report()
        with spans.span("verify"):
            self.report_impl(report)
            self._verify(report)
        self._load_spans = spans.items()
        spans.attach(report.spans)  # later run spans land in the receipt (bounded)
        self.report = self.judge(report, stacklevel=5)
        return self.report

    def _verify(self, report: ExecutionReport) -> None:
        """Evidence levels for every request; under ``fallback="error"`` one profiled run on seeded inputs
        settles what construction could not show; an accuracy contract is checked against its reference."""
        from xpuruntime.inference import _verify

        ex = self.policy.execution
        _verify.grade(report, ex.precision)
        strict = ex.fallback == "error"
        if strict and report.violations:
            return  # refused already: nothing to verify
        if strict and report.unverified:
            why = None
            try:
                feeds = self.seeded_feeds()
                profiled = self._profile(self.check_feeds(feeds, self._feeds), self._output_list)
                _verify.fold_profile(report, profiled, feeds)
            except UnsupportedOperationError:  # an engine without a profiler: stays unverified
                why = f"the {self.name} engine cannot profile a run"
            except XpuRuntimeError as exc:  # the seeded run itself failed (shapes the model cannot take, say)
                why = (f"the verifying run on seeded inputs failed ({_first_line(exc)}); set execution.fixed_shapes "
                       "to shapes the model takes")
            _verify.require_verified(report, self.name, why)
        if ex.accuracy is not None and not (strict and report.violations):
            self._check_accuracy(report, None)

    # -- the public contract ---------------------------------------------------------------
    @property
    def input_info(self) -> list[TensorInfo]:
        return list(self._inputs)

    @property
    def output_info(self) -> list[TensorInfo]:
        return list(self._outputs)

    @property
    def providers(self) -> list[str]:
        """What was requested of the engine (providers or devices), in priority order."""
        return list(self.plan.targets)

    def run(self, feeds: Any, output_names: Sequence[str] | None = None, *,
            outputs: Mapping[str, Any] | None = None) -> Any:
        """Run once: a dict of feeds gives a dict of outputs, a list gives a list."""
        repeat = self._repeat
        if repeat is not None and output_names is None and outputs is None:
            result = repeat(feeds)  # the last configuration of numpy feeds again (_remember), else MISS
            if result is not MISS:
                return result
        again = self._again
        if again is not None and output_names is None and again.same(feeds, outputs):
            return self._run_again(again)
        if self._closed:
            self._check_open()
        names = self._output_list if output_names is None else self._resolve_outputs(output_names)
        checked = self.check_feeds(feeds, self._feeds)
        if outputs:
            self._outputs_checked(outputs, names, checked)
        mark = self._spans.begin("run")  # the hot path: a span begun and ended, no with blocks around it
        try:
            results = self.run_impl(checked, names, dict(outputs) if outputs else None)
        except XpuRuntimeError:
            raise
        except Exception as exc:  # noqa: BLE001 - the engine library's own errors, as _Wrapped does
            raise self.run_error(exc) from None
        finally:
            self._spans.end(mark, lambda: self._profile(checked, names))
        if outputs:
            self._again = _Again.of(self, feeds, outputs, checked, names) if output_names is None else None
            if self._closed:  # close() ran meanwhile (another thread): it stays cleared
                self._again = None
        elif output_names is None and type(feeds) is dict:
            self._remember(feeds, checked, names)
        return dict(zip(names, results)) if type(feeds) is dict or isinstance(feeds, Mapping) else list(results)

    def _remember(self, feeds: dict[str, Any], checked: dict[str, Any], names: list[str]) -> None:
        """After a full run of a dict of numpy feeds into the default outputs: the second run in a row of the same
        configuration (names, shapes, dtypes, arrays the engine took as they are) makes its repeat
        (:func:`~xpuruntime.inference.prepared.repeater`): the prepared call with the run's span, which later runs
        of that configuration take before any other work. What it skips (checking the feeds against the model)
        was checked for exactly those shapes and dtypes; every other feed still takes the full path."""
        if _profiler.nvtx_attached() or self._closed or not self._feeds.fast:
            return  # an NVTX tool attached: every run's range is opened by the full path (repeater opens none);
        #         string inputs: every element is checked, by the full path alone
        spec = []
        for name, value in checked.items():
            if feeds.get(name) is not value or type(value) is not np.ndarray \
                    or self.contiguous_feeds and not value.flags.c_contiguous:
                self._last_host = None  # converted or a device feed: nothing to repeat
                return
            spec.append((name, value.shape, value.dtype))
        key = (tuple(spec), tuple(names))
        if key != self._last_host:
            self._last_host = key
            return
        with self._repeat_lock:  # (taken on a configuration's second run only; close() takes it too)
            if self._closed:  # close() ran in another thread while this run ended: nothing is installed
                return
            # a configuration repeated before (traffic moving between a few shapes) keeps its lean call, not made
            # again (a graph's page-locked buffers)
            repeat = self._repeats.get(key, MISS)
            if repeat is MISS:
                try:
                    repeat = repeater(self, key[0], names, self._lean_call(checked, names, None))
                except Exception:  # noqa: BLE001 - the run itself succeeded and returns its results: the repeat
                    self._last_host = None  # is an optimisation (the tests check where it is made)
                    return
                if repeat is not None:
                    self._made.add(repeat)
                if len(self._repeats) >= _REPEATS_KEPT:  # the oldest goes
                    del self._repeats[next(iter(self._repeats))]
                self._repeats[key] = repeat
            self._repeat = repeat

    def _run_again(self, again: _Again) -> dict[str, Any]:
        """The last run again (:class:`_Again`): every check it passed still holds, so only the engine's call."""
        mark = self._spans.begin("run")
        try:
            again.call()
        except XpuRuntimeError:
            raise
        except Exception as exc:  # noqa: BLE001 - the engine library's own errors, as _Wrapped does
            raise self.run_error(exc) from None
        finally:
            self._spans.end(mark, again.profile)
        return dict(again.results)

    def again_impl(self, feeds: dict[str, Any], output_names: Sequence[str],
                   outputs: dict[str, Any]) -> Callable[[], None] | None:
        """After a run of device tensors into caller-owned buffers: a zero-argument call that repeats exactly that
        run (the engine's own call over what it bound: no check, no lookup), or None. Engine.run takes it while the
        caller passes the same tensors again (:class:`_Again`). Default: None (every run takes the full path)."""
        return None

    def prepare(self, feeds: Any, output_names: Sequence[str] | None = None, *,
                outputs: Mapping[str, Any] | None = None) -> PreparedRun:
        """Run once through :meth:`run` (every check, the first compilation or capture) and return a
        :class:`~xpuruntime.inference.prepared.PreparedRun` that runs this configuration again with only the
        engine's own call (:meth:`prepare_impl`, else :meth:`run_impl` without the per-call checks)."""
        self._check_open()
        names = self._resolve_outputs(output_names)
        self.run(feeds, output_names, outputs=outputs)
        checked = self.check_feeds(feeds, self._feeds)
        outs = dict(outputs) if outputs else None
        return PreparedRun(self, feeds, checked, names, outs, self._lean_call(checked, names, outs))

    def _lean_call(self, checked: dict[str, Any], names: list[str],
                   outputs: dict[str, Any] | None) -> Callable[[dict[str, Any]], list[Any]]:
        """The engine's lean call for a configuration just run (:meth:`prepare_impl`), else :meth:`run_impl`
        without the per-call checks."""
        call = self.prepare_impl(checked, names, outputs)
        if call is not None:
            return call
        run_impl = self.run_impl

        def run(given: dict[str, Any]) -> list[Any]:
            return run_impl(given, names, dict(outputs) if outputs else None)
        return run

    def prepare_impl(self, feeds: dict[str, Any], output_names: Sequence[str],
                     outputs: dict[str, Any] | None) -> Callable[[dict[str, Any]], list[Any]] | None:
        """After a run of ``feeds`` (checked): the engine's lean call for this configuration, taking feeds of the
        same shapes and dtypes (numpy arrays, or the same checked device values) and returning the results of
        ``output_names`` (into ``outputs`` where given), with no check. Default: None (:meth:`run_impl`)."""
        return None

    def run_many(self, feeds_list: Sequence[Any], output_names: Sequence[str] | None = None) -> list[Any]:
        """Run many feed sets, in input order; each result has the form of its feeds."""
        self._check_open()
        if isinstance(feeds_list, Mapping) or not isinstance(feeds_list, Sequence):
            raise InputError("run_many takes a list of feed sets", expected="a list of dicts (or lists) of arrays",
                             received=type(feeds_list).__name__, hint="for one feed set use run()")
        names = self._resolve_outputs(output_names)
        checked = [self.check_feeds(feeds, self._feeds) for feeds in feeds_list]
        with self._wrapped(self.run_error):
            results = self.run_many_impl(checked, names)
        return [dict(zip(names, r)) if isinstance(f, Mapping) else list(r) for f, r in zip(feeds_list, results)]

    def explain(self, feeds: Any, output_names: Sequence[str] | None = None) -> ExecutionReport:
        """One profiled run: the receipt with per-node times, judged by the fallback rule."""
        self._check_open()
        names = self._resolve_outputs(output_names)
        report = self._profile(self.check_feeds(feeds, self._feeds), names)
        return self.judge(report, stacklevel=4)

    def _profile(self, checked: dict[str, Any], names: list[str]) -> ExecutionReport:
        """One profiled run, unjudged (``explain`` judges it; ``xpuruntime.runtime.profiler.profile`` collects it)."""
        from xpuruntime.inference._verify import grade

        report = self.new_report()
        report.profiled = True
        with self._spans.span("profile"), self._wrapped(self.run_error):
            self.profile_impl(report, checked, names)
        report.spans.extend([*self._load_spans, self._spans.last()])
        grade(report, self.policy.execution.precision)
        return report

    def validate(self, feeds: Any = None) -> ExecutionReport:
        """Run ``feeds`` (seeded inputs when None) through this session and its reference; the receipt records
        per output the max abs / rel error and finiteness, judged by the fallback rule.

        The reference and tolerance come from ``execution.accuracy`` (default: the same engine at IEEE fp32, no
        tolerance: only non-finite outputs are a violation).

        >>> session.validate().accuracy[0]["max_rel"]  # doctest: +SKIP
        0.0009
        """
        self._check_open()
        report = self.new_report()
        report.evidence_of.update({k: v for k, v in self.report.evidence_of.items() if k != "accuracy"})
        self._check_accuracy(report, feeds)
        return self.judge(report, stacklevel=4)

    def seeded_feeds(self, seed: int = 0) -> dict[str, Any]:
        """Seeded random inputs shaped like the model's, what verification and ``validate()`` run when given no
        feeds: an input in ``execution.fixed_shapes`` takes that shape; otherwise a symbolic leading dim is 1
        (batch) and any other symbolic dim is :data:`SEEDED_DIM` (64: sequence lengths, image sides a 32x
        downsampling CNN still takes); integers in [0, 8), floats standard normal (``random_feeds``)."""
        from xpuruntime.inference.feeds import random_feeds

        fixed = dict(self.policy.execution.fixed_shapes or {})
        for info in self._inputs:
            if info.name not in fixed and any(not (isinstance(d, int) and d > 0) for d in info.shape or ()):
                fixed[info.name] = tuple(d if isinstance(d, int) and d > 0 else 1 if i == 0 else SEEDED_DIM
                                         for i, d in enumerate(info.shape))
        return random_feeds(self._inputs, fixed, seed=seed)

    def _check_accuracy(self, report: ExecutionReport, feeds: Any) -> None:
        from xpuruntime.inference._verify import compare_outputs

        contract = self.policy.execution.accuracy
        label = contract.reference if contract is not None else "fp32"
        feeds = self.seeded_feeds() if feeds is None else feeds
        outputs = self.run(feeds)
        reference = self.reference_engine(label)
        try:
            expected = reference.run(feeds)
        finally:
            reference.close()
        outputs = outputs if isinstance(outputs, Mapping) else dict(zip(self._output_list, outputs))
        expected = expected if isinstance(expected, Mapping) else dict(zip(reference._output_list, expected))
        compare_outputs(report, outputs, expected, contract, label if label != "fp32" else f"{self.name} fp32")

    def reference_engine(self, reference: str = "fp32") -> Engine:
        """The reference an accuracy check compares with: ``"fp32"`` is this engine at IEEE fp32 with compile,
        fusions, CUDA graphs and kernel choices off; an engine name is that engine at fp32 on the same model and
        device. Built under ``fallback="allow"`` (its own receipt is not judged)."""
        from xpuruntime.policies import Policy

        ex = self.policy.execution.replace(precision="fp32", compile="off", fusions="off", cuda_graphs=False,
                                           fallback="allow", accuracy=None)
        policy = Policy(execution=ex)
        same = reference == "fp32"
        cls = type(self) if same else get_engine_class(reference)
        cls.require()
        _check_device(cls, self.device)
        model = self.source_model if same else cls.load_model(self.source_model)
        options = {k: v for k, v in self.options.items() if k != "compile"} if same else {}
        return _load_or_close(cls(model, self.device, policy, options, self.fingerprint_hash))

    def close(self) -> None:
        """Release the engine's resources; later runs raise."""
        with self._repeat_lock:  # a run ending in another thread installs no repeat from now on (_remember)
            self._closed = True
            self._again = self._repeat = None
            closed = closed_call(self)
            for repeat in list(self._made):  # every repeat made, kept or dropped: a caller may hold one still
                repeat.close(closed)  # type: ignore[attr-defined]
            self._repeats.clear()
        for prepared in list(self._prepared):
            prepared._close()
        self.close_impl()

    # -- receipts --------------------------------------------------------------------------
    def new_report(self) -> ExecutionReport:
        """The receipt header: engine, device, hashes, what was requested, the plan's violations and notes, and
        the lock the policy came from."""
        report = ExecutionReport(
            engine=self.name, device=str(self.device), policy_hash=self.policy.hash,
            fingerprint_hash=self.fingerprint_hash, engine_version=self.version(),
            requested=dict(self.plan.requested), violations=list(self.plan.violations),
            notes=[*getattr(self.model, "notes", ()), *self.plan.notes, *self.load_notes])
        if self.lock_record is not None:
            report.requested["lock"] = self.lock_record
            report.notes += _lock_notes(self.lock_record)
        return report

    def judge(self, report: ExecutionReport, *, stacklevel: int = 3) -> ExecutionReport:
        """Apply the policy's fallback rule to ``report``: raise, warn or record."""
        enforce_fallback(report, self.policy.execution.fallback, stacklevel=stacklevel)
        return report

    # -- availability ----------------------------------------------------------------------
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
            except (importlib.metadata.PackageNotFoundError, ValueError):
                continue
        return None

    @classmethod
    def require(cls) -> None:
        reason = cls.unavailable_reason()
        if reason:
            raise EngineUnavailableError(
                f"engine {cls.name!r} is not available: {reason}", expected=f"{cls.package or cls.module} installed",
                received="not installed", hint=f"pip install 'xpuruntime[{cls.extra}]'" if cls.extra else None)

    # -- what only one engine knows --------------------------------------------------------
    def cache_parts(self) -> tuple[str, ...]:
        """What a cache entry of this engine depends on; :meth:`cache_key` hashes it into a folder name."""
        return (self.name, self.version() or "", getattr(self.model, "hash", ""), self.policy.hash,
                self.fingerprint_hash)

    def cache_key(self) -> str:
        from xpuruntime._cache import cache_key

        return cache_key(*self.cache_parts())

    @classmethod
    def capture_tuning(cls, model: Any, *, device: str = "cpu", policy: Any = None,
                       dims: Mapping[str, int] | None = None) -> Any:
        """Run ``model`` with the engine's own tuner on and return its results for a lock (None: it has none)."""
        return None

    def tuning_results(self) -> Any:
        """The engine's own tuning results, to store in a lock (None: this engine keeps none)."""
        return None

    # -- hooks -----------------------------------------------------------------------------
    @classmethod
    def load_model(cls, model: Any) -> Any:
        """Check and wrap the user's ``model`` argument; ONNX engines take a path, bytes or a ModelProto.
        Engines that serve Python objects (an ``nn.Module``) override this."""
        from xpuruntime._models import load_model_source

        return load_model_source(model)

    @abstractmethod
    def translate(self, policy: Policy, device: DeviceSpec, options: Mapping[str, Any]) -> Plan:
        """Policy + device + engine options -> the :class:`Plan` (native settings, violations, notes)."""

    @abstractmethod
    def load_impl(self) -> None:
        """Build the engine session from ``self.plan``; raise XpuRuntimeError subclasses for bad models."""

    @abstractmethod
    def inputs_impl(self) -> list[TensorInfo]: ...

    @abstractmethod
    def outputs_impl(self) -> list[TensorInfo]: ...

    @abstractmethod
    def run_impl(self, feeds: dict[str, Any], output_names: Sequence[str], outputs: dict[str, Any] | None) -> list[Any]:
        """Run once; ``outputs`` maps names to caller-owned buffers to write into, where supported."""

    @abstractmethod
    def report_impl(self, report: ExecutionReport) -> None:
        """Fill the receipt after construction: where every node was placed, from the engine's evidence."""

    def run_many_impl(self, feeds_list: Sequence[dict[str, Any]], output_names: Sequence[str]) -> list[list[Any]]:
        """Run every feed set; engines with an asynchronous queue override this. Results in input order."""
        return [self.run_impl(feeds, output_names, None) for feeds in feeds_list]

    def profile_impl(self, report: ExecutionReport, feeds: dict[str, Any], output_names: Sequence[str]) -> None:
        """One profiled run, filling ``report`` with per-node times. Engines without a profiler refuse."""
        raise UnsupportedOperationError(f"engine {self.name!r} cannot profile a run",
                                        hint="use session.report for placement without times")

    def check_feeds(self, feeds: Any, checker: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
        """Feeds checked against the inputs (``checker`` is the shared numpy path); engines with their own
        tensor type override this to keep it."""
        return checker(feeds)

    def load_error(self, exc: Exception) -> XpuRuntimeError:
        """An exception of the engine's library while loading, as an XpuRuntimeError."""
        return ModelLoadError(f"{self.name} could not load the model: {_first_line(exc)}",
                              expected="a model this engine supports", received=type(exc).__name__)

    def run_error(self, exc: Exception) -> XpuRuntimeError:
        """An exception of the engine's library during a run, as an XpuRuntimeError."""
        return XpuRuntimeError(f"{self.name} failed during the run: {_first_line(exc)}",
                               hint="the session stays usable; check the inputs' values and the device's memory")

    def close_impl(self) -> None:
        """Release the engine's resources."""

    # -- checks ----------------------------------------------------------------------------
    def _wrapped(self, wrap: Callable[[Exception], XpuRuntimeError]) -> _Wrapped:
        return _Wrapped(wrap)

    def _check_option_keys(self) -> None:
        for name in self.options:
            if name not in self.option_keys:
                raise PolicyError(f"unknown engine option {name!r} for {self.name}", field=f"engine_options.{name}",
                                  expected=", ".join(self.option_keys) or "no engine options",
                                  received=repr(name), hint=did_you_mean(str(name), self.option_keys))

    def _check_open(self) -> None:
        if self._closed:
            raise XpuRuntimeError("the session is closed", expected="an open session", received="closed",
                                  hint="create a new InferenceSession")

    def _resolve_outputs(self, output_names: Sequence[str] | None) -> list[str]:
        known = self._output_list
        if output_names is None:
            return known
        if isinstance(output_names, str):
            output_names = [output_names]
        for name in output_names:
            if name not in known:
                raise InputError(f"unknown output name {name!r}", expected=f"outputs {', '.join(known)}",
                                 received=repr(name), hint=did_you_mean(name, known))
        return list(output_names)

    def _outputs_checked(self, outputs: Mapping[str, Any], names: list[str], feeds: Mapping[str, Any]) -> None:
        """:meth:`_check_outputs`, skipped when the caller passes the same torch tensors as at the last check (same
        objects, addresses, shapes and dtypes, still contiguous), for the same names and feed shapes: a serving loop
        writing into one set of output tensors pays a few attribute reads per call, not a full check."""
        key = _outputs_key(outputs, names, feeds)
        if key is not None and key == self.__dict__.get("_outputs_ok"):
            return
        self._check_outputs(outputs, names, feeds)
        self._outputs_ok = key

    def _check_outputs(self, outputs: Mapping[str, Any], names: list[str], feeds: Mapping[str, Any]) -> None:
        """Every caller-owned output, before the engine sees it (``feeds.check_output_buffer``): kind, writable,
        contiguous, dtype, shape, and dims named like an input's equal to that feed's."""
        from xpuruntime.inference.feeds import check_output_buffer, check_output_dims

        infos = {o.name: o for o in self._outputs}
        if not isinstance(outputs, Mapping):
            raise InputError("outputs must map output names to buffers", expected="a dict, e.g. {'y': np.empty(...)}",
                             received=type(outputs).__name__)
        for name, buffer in outputs.items():
            if name not in names:
                raise InputError(f"preallocated output {name!r} is not among the requested outputs",
                                 expected=", ".join(names), received=repr(name), hint=did_you_mean(name, names))
            check_output_buffer(name, buffer, infos[name], self.output_buffers, device=self.device)
            check_output_dims(name, tuple(buffer.shape), infos[name], self._inputs, feeds)


def _outputs_key(outputs: Any, names: list[str], feeds: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """What makes a check of caller-owned torch outputs still valid (each buffer's ``tensor_key``, the names and
    the feed shapes), or None (other buffers: always checked)."""
    if type(outputs) is not dict:
        return None
    key: list[Any] = [tuple(names)]
    for name, buffer in outputs.items():
        buffer_key = tensor_key(buffer)
        if buffer_key is None:
            return None
        key.append((name, buffer_key))
    key.extend(getattr(v, "shape", None) for v in feeds.values())
    return tuple(key)


def _check_device(engine_cls: type[Engine], device: Any) -> None:
    if device.kind != "auto" and device.kind not in engine_cls.devices:
        raise DeviceError(f"engine {engine_cls.name!r} cannot target {device}",
                          expected=f"a device of kind {', '.join(engine_cls.devices)} (or 'auto')",
                          received=str(device), hint="pick another device, or engine='onnxruntime' for the CPU")


def _load_or_close(engine: Engine) -> Engine:
    """``engine`` loaded, or closed (what it built released) and the error raised."""
    try:
        engine.load()
    except BaseException:
        engine.close()
        raise
    return engine


def _lock_record(lock: Any) -> dict[str, Any] | None:
    """What a receipt records of the lock a policy came from (hash, drift rule, drift, signature, notes)."""
    return None if lock is None else {**lock.receipt(), "notes": list(lock.notes)}


def _lock_notes(record: dict[str, Any]) -> list[str]:
    changes = "; ".join("{path}: {locked} -> {here}".format(**c) for c in (record["drift"] or {}).get("changes", []))
    said = f"drift ({changes}), rule {record['drift_rule']}: {record['status']}" if changes else "no drift"
    return [f"built from lock {record['hash'][:12]} ({record['file'] or 'in memory'}): {said}; "
            f"signature {record['signature']}", *record["notes"]]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:500]


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


def builtin_engine_modules() -> list[str]:
    """Every public module of ``inference/engines/``: one module, one engine (``_name`` modules are helpers)."""
    package = importlib.import_module(ENGINES_PACKAGE)
    return [f"{ENGINES_PACKAGE}.{m.name}" for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_")]


def _load_all() -> None:
    global _loaded
    with _load_lock:
        if _loaded:
            return
        _loaded = True  # set first: a plugin that lists engines while imported must not load plugins again
        try:
            for module in builtin_engine_modules():
                importlib.import_module(module)
            _load_entry_points()
        except BaseException:
            _loaded = False
            raise


def _load_entry_points() -> None:
    """Engines of other distributions (entry point group ``xpuruntime.engines``); never replace one loaded before."""
    try:
        found = list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
    except Exception as exc:  # noqa: BLE001 - damaged metadata of another distribution
        import warnings

        warnings.warn(f"xpuruntime engine plugins were not loaded: reading entry points raised "
                      f"{type(exc).__name__}: {short_repr(str(exc))}", RuntimeWarning, stacklevel=4)
        return
    for ep in found:
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
        _plugin_warning(ep, f"was skipped: it failed to load ({type(exc).__name__}: {short_repr(str(exc))})")
        return None
    problem = _plugin_problem(cls)
    if problem:
        _plugin_warning(ep, f"was skipped: {problem}")
        return None
    return cls


_PLUGIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+@-]{0,63}")


def _plugin_problem(cls: Any) -> str | None:
    """Why an entry point's object cannot be an engine (None when it can): every attribute the registry, the CLI
    and ``list_engines`` read is checked here, once, so a bad plugin never breaks another command."""
    if not (isinstance(cls, type) and issubclass(cls, Engine)):
        return f"{short_repr(cls)} is not an xpuruntime.inference.Engine subclass"
    name, aliases = getattr(cls, "name", None), getattr(cls, "aliases", None)
    if not isinstance(name, str) or not _PLUGIN_NAME.fullmatch(name):
        return f"its name {short_repr(name)} is not a short name (letters, digits, _ . + @ -)"
    if not isinstance(aliases, (tuple, list)) or not all(isinstance(a, str) and _PLUGIN_NAME.fullmatch(a)
                                                          for a in aliases):
        return f"its aliases {short_repr(aliases)} are not a tuple of short names"
    devices = getattr(cls, "devices", None)
    if not isinstance(devices, (tuple, list)) or not devices or not all(isinstance(d, str) for d in devices):
        return f"its devices {short_repr(devices)} are not a tuple of device kinds"
    if not all(isinstance(getattr(cls, a, None), str) for a in ("package", "module", "extra")):
        return "its package, module and extra are not strings"
    try:
        reason = cls.unavailable_reason()
        if not (reason is None or isinstance(reason, str)):
            return f"unavailable_reason() returned {short_repr(reason)}"
        version = cls.version() if reason is None else None
    except Exception as exc:  # noqa: BLE001 - whatever a plugin raises, the built-in engines stay usable
        return f"checking it raised {type(exc).__name__}: {short_repr(str(exc))}"
    return None if version is None or isinstance(version, str) else f"version() returned {short_repr(version)}"


def _dist_name(ep: importlib.metadata.EntryPoint) -> str:
    try:
        dist = getattr(ep, "dist", None)
        if dist is not None and dist.name:
            return f"{dist.name} {dist.version}"
    except Exception:  # noqa: BLE001 - damaged metadata: name the entry point instead
        pass
    return f"{short_repr(getattr(ep, 'value', '?'))} (no distribution)"


def _plugin_warning(ep: importlib.metadata.EntryPoint, why: str) -> None:
    import warnings

    warnings.warn(f"xpuruntime engine plugin {short_repr(getattr(ep, 'name', '?'))} from {_dist_name(ep)} {why} "
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
