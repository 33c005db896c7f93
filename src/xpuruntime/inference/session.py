"""InferenceSession: one model, one device, one engine, one policy, and a receipt."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from xpuruntime.inference.engine import Engine, get_engine_class
from xpuruntime.inference.feeds import TensorInfo
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
    """

    def __init__(
        self,
        model: Any,
        device: str | int | None = "cpu",
        engine: str = DEFAULT_ENGINE,
        kernel_policy: KernelPolicy | Mapping[str, Any] | None = None,
        exec_policy: ExecutionPolicy | Mapping[str, Any] | None = None,
        policy: PolicyLike = None,
        engine_options: Mapping[str, Any] | None = None,
    ) -> None:
        lock = _lock_of(policy, exec_policy)
        self.policy: Policy = coerce_policy(lock.policy if lock else policy, kernel_policy, exec_policy)
        self._engine: Engine = get_engine_class(engine).create(model, device, self.policy, engine_options, lock=lock)
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
        (zero-copy on a GPU, through IO binding).
        """
        return self._engine.run(feeds, output_names, outputs=outputs)

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
