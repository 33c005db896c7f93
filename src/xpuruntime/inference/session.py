"""InferenceSession: one model, one device, one engine, one policy, and a receipt."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from xpuruntime.errors import DeviceError, InputError, PolicyError, XpuRuntimeError, did_you_mean
from xpuruntime.inference.engine import Engine, get_engine_class
from xpuruntime.inference.feeds import FeedChecker, TensorInfo
from xpuruntime.inference.report import ExecutionReport, enforce_fallback
from xpuruntime.policies import ExecutionPolicy, KernelPolicy, Policy, coerce_policy
from xpuruntime.policies.policy import PolicyLike
from xpuruntime.runtime.devices import parse_device

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
    file, a mapping, or a lock (a :class:`~xpuruntime.kernels.lock.Lock` or a lock file, checked against this
    machine; the engine also replays the tuning results it holds, e.g. ONNX Runtime's TunableOp);
    ``kernel_policy`` and ``exec_policy`` are merged over it. Under
    ``fallback="error"`` a session whose engine cannot honour the policy is not created:
    :class:`~xpuruntime.PolicyViolationError` lists what was not honoured and why.
    """

    def __init__(
        self,
        model: Any,
        device: str | int | None = "cpu",
        engine: str = "onnxruntime",
        kernel_policy: KernelPolicy | Mapping[str, Any] | None = None,
        exec_policy: ExecutionPolicy | Mapping[str, Any] | None = None,
        policy: PolicyLike = None,
        engine_options: Mapping[str, Any] | None = None,
    ) -> None:
        lock = _lock_of(policy, exec_policy)
        self.policy: Policy = coerce_policy(lock.policy if lock else policy, kernel_policy, exec_policy)
        engine_cls = get_engine_class(engine)
        engine_cls.require()
        self.device = parse_device(device)
        _check_device(engine_cls, self.device)
        _check_options(engine_options)
        self._closed = False
        from xpuruntime.runtime.fingerprint import fingerprint

        self._engine: Engine = engine_cls(engine_cls.load_model(model), self.device, self.policy,
                                          dict(engine_options or {}), fingerprint().hash)
        if lock is not None:
            self._engine.tuning = dict(lock.engine_tuning)
        self._engine.load_impl()
        self._inputs = self._engine.inputs_impl()
        self._feeds = FeedChecker(self._inputs)
        self._outputs = self._engine.outputs_impl()
        self._output_list = [o.name for o in self._outputs]
        self.report: ExecutionReport = self._engine.report_impl()
        self._lock_receipt = _note_lock(self.report, lock)
        enforce_fallback(self.report, self.policy.execution.fallback)

    # -- introspection -------------------------------------------------------------------
    @property
    def engine_name(self) -> str:
        return self._engine.name

    @property
    def input_info(self) -> list[TensorInfo]:
        """Model inputs: name, shape (symbolic dims as strings), numpy dtype name."""
        return list(self._inputs)

    @property
    def output_info(self) -> list[TensorInfo]:
        return list(self._outputs)

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
        (zero-copy on a GPU, through IO binding).
        """
        self._check_open()
        names = self._output_names(output_names)
        checked = self._engine.check_feeds(feeds, self._feeds)
        if outputs:
            self._check_outputs(outputs, names)
        results = self._engine.run_impl(checked, names, dict(outputs) if outputs else None)
        return dict(zip(names, results)) if type(feeds) is dict or isinstance(feeds, Mapping) else list(results)

    def run_many(self, feeds_list: Sequence[Any], output_names: Sequence[str] | None = None) -> list[Any]:
        """Run many feed sets, in input order; engines with an asynchronous queue overlap them.

        >>> outs = sess.run_many([{"x": a}, {"x": b}])   # doctest: +SKIP
        >>> outs[1]["y"]                                  # doctest: +SKIP

        Each result has the form of its feeds (a dict for a dict, a list for a list). OpenVINO runs
        them through its ``AsyncInferQueue``; other engines run them one after another.
        """
        self._check_open()
        if isinstance(feeds_list, Mapping) or not isinstance(feeds_list, Sequence):
            raise InputError("run_many takes a list of feed sets", expected="a list of dicts (or lists) of arrays",
                             received=type(feeds_list).__name__, hint="for one feed set use run()")
        names = self._output_names(output_names)
        checked = [self._engine.check_feeds(feeds, self._feeds) for feeds in feeds_list]
        results = self._engine.run_many_impl(checked, names)
        return [dict(zip(names, r)) if isinstance(f, Mapping) else list(r) for f, r in zip(feeds_list, results)]

    def explain(self, feeds: Any, output_names: Sequence[str] | None = None) -> ExecutionReport:
        """Run once with the engine's profiler on and return the receipt with per-node times."""
        self._check_open()
        names = self._output_names(output_names)
        report = self._engine.profile_impl(self._engine.check_feeds(feeds, self._feeds), names)
        _note_lock(report, self._lock_receipt)
        enforce_fallback(report, self.policy.execution.fallback)
        return report

    def _output_names(self, output_names: Sequence[str] | None) -> list[str]:
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

    def _check_outputs(self, outputs: Mapping[str, Any], names: list[str]) -> None:
        infos = {o.name: o for o in self._outputs}
        for name, buffer in outputs.items():
            if name not in names:
                raise InputError(f"preallocated output {name!r} is not among the requested outputs",
                                 expected=", ".join(names), received=repr(name), hint=did_you_mean(name, names))
            _check_buffer(name, buffer, infos[name])

    def _check_open(self) -> None:
        if self._closed:
            raise XpuRuntimeError("the session is closed", expected="an open session", received="closed",
                                  hint="create a new InferenceSession")

    # -- lifetime ------------------------------------------------------------------------
    def close(self) -> None:
        """Release the engine's resources; later runs raise."""
        self._closed = True
        self._engine.close()

    def __enter__(self) -> InferenceSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"InferenceSession(engine={self.engine_name!r}, device={str(self.device)!r}, "
                f"policy={self.policy.short_hash}, inputs={[i.describe() for i in self._inputs]})")


def _lock_of(policy: Any, exec_policy: Any = None) -> Any:
    """A checked Lock when ``policy`` is one or names a lock file, else None; the drift rule is the caller's
    (``exec_policy``'s fallback when it sets one), never the lock's own."""
    from xpuruntime.kernels.lock import as_lock

    rule = None
    if isinstance(exec_policy, ExecutionPolicy) and "fallback" in exec_policy.model_fields_set:
        rule = exec_policy.fallback
    elif isinstance(exec_policy, Mapping) and exec_policy.get("fallback") is not None:
        rule = ExecutionPolicy(fallback=exec_policy["fallback"]).fallback
    return as_lock(policy, fallback=rule)


def _note_lock(report: ExecutionReport, lock: Any) -> dict[str, Any] | None:
    """Record the lock a session was built from (hash, drift rule, drift, signature) in its receipt."""
    if lock is None:
        return None
    receipt = lock if isinstance(lock, dict) else {**lock.receipt(), "notes": list(lock.notes)}
    report.requested["lock"] = receipt
    changes = "; ".join("{path}: {locked} -> {here}".format(**c) for c in (receipt["drift"] or {}).get("changes", []))
    said = f"drift ({changes}), rule {receipt['drift_rule']}: {receipt['status']}" if changes else "no drift"
    report.notes.append(f"built from lock {receipt['hash'][:12]} ({receipt['file'] or 'in memory'}): {said}; "
                        f"signature {receipt['signature']}")
    report.notes.extend(receipt["notes"])
    return receipt


def _check_device(engine_cls: type[Engine], device: Any) -> None:
    if device.kind != "auto" and device.kind not in engine_cls.devices:
        raise DeviceError(f"engine {engine_cls.name!r} cannot target {device}",
                          expected=f"a device of kind {', '.join(engine_cls.devices)} (or 'auto')",
                          received=str(device), hint="pick another device, or engine='onnxruntime' for the CPU")


def _check_buffer(name: str, buffer: Any, info: TensorInfo) -> None:
    """A caller-owned output must have the output's dtype, rank and static dims."""
    shape, dtype = getattr(buffer, "shape", None), getattr(buffer, "dtype", None)
    if shape is None or dtype is None:
        raise InputError(f"preallocated output {name!r} is not an array", expected=info.describe(),
                         received=type(buffer).__name__, hint="pass a numpy array (or a CUDA tensor)")
    try:
        same_dtype = np.dtype(dtype) == np.dtype(info.dtype)
    except TypeError:  # torch dtypes: checked by the engine when it binds the buffer
        same_dtype = True
    fits = info.shape is None or len(shape) == len(info.shape) and all(
        not isinstance(want, int) or want < 0 or got == want for got, want in zip(shape, info.shape))
    if not same_dtype or not fits:
        raise InputError(f"preallocated output {name!r} does not fit the output", expected=info.describe(),
                         received=f"{dtype}{list(shape)}", hint="allocate it with the output's dtype and shape")


def _check_options(options: Any) -> None:
    if options is not None and not isinstance(options, Mapping):
        raise PolicyError("engine_options must be a mapping", expected="a dict of engine-specific options",
                          received=type(options).__name__)
