"""InferenceSession: one model, one device, one engine, one policy, and a receipt."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from xpuruntime.errors import EngineUnavailableError, PolicyError, did_you_mean
from xpuruntime.inference.engine import Engine, engine_names, get_engine_class
from xpuruntime.inference.feeds import TensorInfo
from xpuruntime.inference.prepared import MISS, PreparedRun
from xpuruntime.policies import ExecutionPolicy, KernelPolicy, Policy, coerce_policy
from xpuruntime.policies.policy import PolicyLike
from xpuruntime.policies.vocabulary import DEFAULT_ENGINE
from xpuruntime.receipts import ExecutionReport

__all__ = ["InferenceSession"]


class InferenceSession:
    """Run a model on one engine and device under a policy, with a receipt of what ran.

    >>> import numpy as np, xpuruntime as xrt
    >>> sess = xrt.InferenceSession("model.onnx", device="cpu",
    ...                             exec_policy=xrt.ExecutionPolicy(fallback="error"))  # doctest: +SKIP
    >>> out = sess.run({"x": np.ones((1, 16), np.float32)})                            # doctest: +SKIP
    >>> sess.report.honored                                                             # doctest: +SKIP
    True

    ``model`` is a path, bytes or an ``onnx.ModelProto`` (``engine="torch"``: an ``nn.Module`` or a
    ``torch.export`` ExportedProgram). ``policy`` is a Policy, a policy
    file, a mapping, or a lock (a :class:`~xpuruntime.policies.lock.Lock` or a lock file, checked against this
    machine; the engine also replays the tuning results it holds, e.g. ONNX Runtime's TunableOp);
    ``kernel_policy`` and ``exec_policy`` are merged over it. Under
    ``fallback="error"`` a session whose engine cannot honour the policy is not created:
    :class:`~xpuruntime.PolicyViolationError` lists what was not honoured and why.

    The session is a thin handle: checks, timing, error wrapping, receipts and the fallback rule live in the
    engine base class (:class:`~xpuruntime.inference.engine.Engine`), the same for every engine.

    Aliases kept from the original API:

    - ``fp16=True`` is ``exec_policy={"precision": "fp16"}``, merged over the policy; with another precision
      set explicitly it raises :class:`~xpuruntime.PolicyError` naming both. ``fp16=False`` asks nothing.
    - ``backend=`` is ``engine=`` (any engine name or alias, e.g. ``backend="openvino"``), plus
      ``backend="qnn"``: ONNX Runtime's QNN provider, i.e. ``engine="onnxruntime"``, ``device="npu"`` and
      ``engine_options={"providers": ["QNNExecutionProvider"]}``. ``engine=`` and ``backend=`` naming
      different engines raise; an unknown backend raises
      :class:`~xpuruntime.EngineUnavailableError` listing the supported spellings.

    >>> sess = xrt.InferenceSession("model.onnx", backend="qnn", fp16=True)            # doctest: +SKIP
    """

    def __init__(
        self,
        model: Any,
        device: str | int | None = "cpu",
        engine: str | None = None,
        kernel_policy: KernelPolicy | Mapping[str, Any] | None = None,
        exec_policy: ExecutionPolicy | Mapping[str, Any] | None = None,
        policy: PolicyLike = None,
        engine_options: Mapping[str, Any] | None = None,
        *,
        fp16: bool | None = None,
        backend: str | None = None,
    ) -> None:
        lock = _lock_of(policy, exec_policy)
        self.policy: Policy = _with_fp16(coerce_policy(lock.policy if lock else policy, kernel_policy, exec_policy),
                                         fp16)
        if backend is not None:
            engine, device, engine_options = _backend(backend, engine, device, engine_options)
        self._engine: Engine = get_engine_class(engine or DEFAULT_ENGINE).create(
            model, device, self.policy, engine_options, lock=lock)
        self.device = self._engine.device

    # -- introspection -------------------------------------------------------------------
    @property
    def report(self) -> ExecutionReport:
        """The receipt after construction: where every node was placed, from the engine's evidence."""
        return self._engine.report

    @property
    def engine_name(self) -> str:
        return self._engine.name

    @property
    def input_info(self) -> list[TensorInfo]:
        """Model inputs: name, shape (symbolic dims as strings), numpy dtype name."""
        return self._engine.input_info

    @property
    def output_info(self) -> list[TensorInfo]:
        return self._engine.output_info

    @property
    def providers(self) -> list[str]:
        """What was requested of the engine (providers or devices), in priority order."""
        return self._engine.providers

    @property
    def providers_used(self) -> list[str]:
        """Providers (or devices) that actually hold nodes, from the engine's own evidence."""
        return self.report.providers_used

    @property
    def engine(self) -> Engine:
        """The engine object (its ``session`` attribute is the native session, where there is one)."""
        return self._engine

    # -- running -------------------------------------------------------------------------
    def run(self, feeds: Any, output_names: Sequence[str] | None = None, *,
            outputs: Mapping[str, Any] | None = None) -> Any:
        """Run once. A dict of feeds gives a dict of outputs; a list gives a list.

        Feeds may be numpy arrays or DLPack/CUDA-array-interface tensors (torch, cupy). With
        ``outputs={"name": preallocated_tensor}`` results are written into caller-owned buffers
        (zero-copy on a GPU, through IO binding). Every call checks its feeds and buffers and records a trace span;
        a loop over one configuration pays that once with :meth:`prepare`. A configuration of numpy feeds run twice
        in a row is repeated that way by ``run`` itself (its span still recorded), until other feeds come.
        """
        engine = self._engine
        repeat = engine._repeat  # Engine.run's own first test, here too: one frame less on every repeated run
        if repeat is not None and output_names is None and outputs is None:
            result = repeat(feeds)
            if result is not MISS:
                return result
        return engine.run(feeds, output_names, outputs=outputs)

    def prepare(self, feeds: Any, output_names: Sequence[str] | None = None, *,
                outputs: Mapping[str, Any] | None = None) -> PreparedRun:
        """Check one configuration of ``run`` once and return a call that repeats it with only the engine's work.

        ``prepare`` runs ``feeds`` once through :meth:`run` (every check; the first compilation or CUDA-graph
        capture) and returns a :class:`~xpuruntime.inference.prepared.PreparedRun`. Calling it runs again what a
        hand-written loop over the engine runs (``run_with_iobinding`` of one binding, a graph replay, the compiled
        module), checking only that numpy feeds keep their shapes and dtypes and device feeds are the same tensors:

        >>> run = sess.prepare({"input_ids": ids})        # doctest: +SKIP
        >>> out = run()                                    # the same feeds again (device tensors refilled in place)
        >>> out = run({"input_ids": other_ids})            # new numpy feeds of the same shapes and dtypes

        The general ``run`` re-checks every feed and records a trace span per call: about 30 us after the
        engine's own work, 5-10% of a 0.3 ms CUDA-graph call. A serving loop over one configuration pays that once
        here. Feeds of another shape raise :class:`~xpuruntime.InputError`: prepare one run per shape.
        """
        return self._engine.prepare(feeds, output_names, outputs=outputs)

    def run_many(self, feeds_list: Sequence[Any], output_names: Sequence[str] | None = None) -> list[Any]:
        """Run many feed sets, in input order; engines with an asynchronous queue overlap them.

        >>> outs = sess.run_many([{"x": a}, {"x": b}])   # doctest: +SKIP
        >>> outs[1]["y"]                                  # doctest: +SKIP

        Each result has the form of its feeds (a dict for a dict, a list for a list). OpenVINO runs
        them through its ``AsyncInferQueue``; other engines run them one after another.
        """
        return self._engine.run_many(feeds_list, output_names)

    def explain(self, feeds: Any, output_names: Sequence[str] | None = None) -> ExecutionReport:
        """Run once with the engine's profiler on and return the receipt with per-node times."""
        return self._engine.explain(feeds, output_names)

    def validate(self, feeds: Any = None) -> ExecutionReport:
        """Run ``feeds`` (seeded inputs when None) here and through the reference of ``execution.accuracy``
        (default: this engine at IEEE fp32); the receipt's ``accuracy`` holds per output the max abs / rel error.

        Non-finite outputs where the reference is finite are an ``accuracy`` violation, with or without a contract.

        >>> sess.validate().accuracy[0]["max_abs"]   # doctest: +SKIP
        0.0012
        """
        return self._engine.validate(feeds)

    # -- lifetime ------------------------------------------------------------------------
    def close(self) -> None:
        """Release the engine's resources; later runs raise."""
        self._engine.close()

    def __enter__(self) -> InferenceSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"InferenceSession(engine={self.engine_name!r}, device={str(self.device)!r}, "
                f"policy={self.policy.short_hash}, inputs={[i.describe() for i in self.input_info]})")


def _lock_of(policy: Any, exec_policy: Any = None) -> Any:
    """A checked Lock when ``policy`` is one or names a lock file, else None; the drift rule is the caller's
    (``exec_policy``'s fallback when it sets one), never the lock's own."""
    from xpuruntime.policies.lock import as_lock

    rule = None
    if isinstance(exec_policy, ExecutionPolicy) and "fallback" in exec_policy.model_fields_set:
        rule = exec_policy.fallback
    elif isinstance(exec_policy, Mapping) and exec_policy.get("fallback") is not None:
        rule = ExecutionPolicy(fallback=exec_policy["fallback"]).fallback
    return as_lock(policy, fallback=rule)


# backend= spellings that are not engine names: backend -> (engine, device kind, provider)
_BACKENDS = {"qnn": ("onnxruntime", "npu", "QNNExecutionProvider")}


def _with_fp16(policy: Policy, fp16: Any) -> Policy:
    """``fp16=True``: precision fp16 merged over ``policy``; an explicit other precision is a conflict."""
    if fp16 is None or fp16 is False:
        return policy
    if fp16 is not True:
        raise PolicyError("fp16 must be True, False or None", field="fp16", expected="a bool",
                          received=repr(fp16), hint="or set exec_policy={'precision': 'fp16'}")
    ex = policy.execution
    if "precision" in ex.model_fields_set and ex.precision != "fp16":
        raise PolicyError(f"fp16=True conflicts with precision {ex.precision!r}", field="execution.precision",
                          expected="one precision", received=f"fp16=True and precision={ex.precision!r}",
                          hint="drop fp16=True, or set precision 'fp16' (fp16=True is its alias)")
    return policy.merge(Policy(execution=ExecutionPolicy(precision="fp16")))


def _backend(backend: Any, engine: str | None, device: Any,
             options: Mapping[str, Any] | None) -> tuple[str, Any, Mapping[str, Any] | None]:
    """``backend=`` (the original API's spelling) -> engine, device and engine options."""
    name = str(backend).strip().lower()
    if name not in _BACKENDS:
        try:
            cls = get_engine_class(name)
        except EngineUnavailableError:
            supported = sorted({*engine_names(), *_BACKENDS})
            raise EngineUnavailableError(f"unknown backend {backend!r}", expected=f"one of {', '.join(supported)}",
                                         received=repr(backend), hint=did_you_mean(name, supported)) from None
        _same_engine(engine, cls.name, backend)
        return cls.name, device, options
    target, kind, provider = _BACKENDS[name]
    _same_engine(engine, target, backend)
    return target, _backend_device(device, kind, backend), _with_provider(options, provider, backend)


def _same_engine(engine: str | None, target: str, backend: Any) -> None:
    if engine is not None and get_engine_class(engine).name != target:
        raise PolicyError(f"engine={engine!r} and backend={backend!r} name different engines", field="backend",
                          expected="one of them (backend= is an alias of engine=)",
                          received=f"engine={engine!r}, backend={backend!r}", hint="pass only engine=")


def _backend_device(device: Any, kind: str, backend: Any) -> Any:
    from xpuruntime.runtime.devices import parse_device

    spec = parse_device(device)
    if spec.kind in ("cpu", "auto"):  # the default device: the backend's own
        return kind
    if spec.kind != kind:
        raise PolicyError(f"backend={backend!r} runs on device {kind!r}, not {device!r}", field="device",
                          expected=f"device={kind!r} (or leave it out)", received=repr(device))
    return device


def _with_provider(options: Mapping[str, Any] | None, provider: str, backend: Any) -> dict[str, Any]:
    merged = dict(options or {})
    wanted = merged.get("providers")
    if wanted and list(wanted)[:1] != [provider]:
        raise PolicyError(f"backend={backend!r} means provider {provider}, but engine_options.providers is "
                          f"{list(wanted)!r}", field="engine_options.providers",
                          expected=f"[{provider!r}, ...] or no providers", received=repr(wanted))
    merged.setdefault("providers", [provider])
    return merged
