"""A training step as the unit of a policy: compiled in the policy's mode, and timed whole against another policy.

- :func:`compile_step` -- ``execution.compile`` as part of the training policy: ``torch.compile`` in the policy's
  mode, each call run under the policy (switches, autocast). With ``execution.cuda_graphs`` capture the compiled
  step whole with :func:`~xpuruntime.pytorch.capture_graph` (mode ``default``), or let ``reduce-overhead`` use
  torch's own CUDA graph trees::

      policy = xrt.Policy(kernels={"attention": "flash", "matmul": "cublaslt"},
                          execution={"precision": "bf16", "compile": "default", "cuda_graphs": True})
      step = xrt_torch.compile_step(train_step, policy)              # or compile the model: compile_step(model, ..)
      with xrt_torch.policy(policy):
          graphed = xrt_torch.capture_graph(step, idx, tgt, state=(model, opt), warmup=3)
      graphed.replay()

  Kernels the policy routes to ``xpuruntime.kernels`` (``layernorm: triton``) stay custom ops inside the compiled
  graph, which inductor does not fuse across; under compile, leave such ops to inductor's own Triton code unless
  a measurement says otherwise.
- :func:`compare_steps` -- time one step function under several policies, interleaved, in this process.
- :func:`check_end_to_end` -- the tuner's whole-step check: keep only the tuned ops whose rules do not make the
  step slower; when the tuned step is slower, the base policy, and why.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from xpuruntime.policies import Policy
from xpuruntime.policies.policy import as_policy
from xpuruntime.pytorch import _state

__all__ = ["compile_step", "CompiledStep", "compare_steps", "check_end_to_end", "EndToEnd"]


class CompiledStep:
    """A step (function or module) compiled with ``torch.compile``; each call runs under the policy.

    ``mode`` is the torch.compile mode used; ``compiled`` the torch.compile result; ``notes`` say how the
    mode was chosen.
    """

    def __init__(self, fn: Callable[..., Any], policy: Policy, mode: str, notes: list[str]) -> None:
        self.fn, self.policy, self.mode, self.notes = fn, policy, mode, notes
        self.compiled = torch.compile(fn, mode=None if mode == "default" else mode)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with _state.policy(self.policy):
            return self.compiled(*args, **kwargs)


def compile_step(fn: Callable[..., Any], policy: Any = None, *, mode: str | None = None) -> CompiledStep:
    """``fn`` compiled in ``mode``, else the policy's ``execution.compile`` (``off`` there means ``default``: the
    caller asked to compile), each call under ``policy``.

    >>> step = compile_step(train_step, {"execution": {"precision": "bf16", "compile": "max-autotune"}})  # doctest: +SKIP
    >>> loss = step(idx, tgt)                                                                            # doctest: +SKIP
    """
    from xpuruntime.errors import PolicyError
    from xpuruntime.policies import vocabulary as vocab

    resolved = as_policy(policy)
    chosen = mode or resolved.execution.compile
    notes = []
    if chosen == "off":
        chosen = "default"
        notes.append("execution.compile is off: compile_step compiles in torch.compile's default mode")
    if chosen not in vocab.COMPILE_MODES or chosen == "off":
        raise PolicyError(f"unknown compile mode {chosen!r}", expected=", ".join(m for m in vocab.COMPILE_MODES
                                                                               if m != "off"), received=repr(chosen))
    return CompiledStep(fn, resolved, chosen, notes)


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def compare_steps(step: Callable[[], Any], policies: Mapping[str, Any], *, warmup: int = 2, repeats: int = 5,
                  rounds: int = 3) -> dict[str, dict[str, Any]]:
    """Time ``step()`` under each policy, interleaved: per round, ``repeats`` steps under each in turn.

    Returns label -> ``{"ms": median ms per step over rounds, "rounds_ms": [...]}``.

    >>> compare_steps(step, {"base": base, "tuned": tuned})["tuned"]["ms"]      # doctest: +SKIP
    """
    resolved = {label: as_policy(p) for label, p in policies.items()}
    for policy in resolved.values():
        with _state.policy(policy):
            for _ in range(warmup):
                step()
    samples: dict[str, list[float]] = {label: [] for label in resolved}
    for _ in range(max(1, rounds)):
        for label, policy in resolved.items():
            with _state.policy(policy):
                _sync()
                start = time.perf_counter()
                for _ in range(max(1, repeats)):
                    step()
                _sync()
            samples[label].append((time.perf_counter() - start) * 1e3 / max(1, repeats))
    return {label: {"ms": statistics.median(s), "rounds_ms": s} for label, s in samples.items()}


@dataclass
class EndToEnd:
    """The whole-step check's outcome: the policy to write and the figures behind it (the lock's section)."""

    policy: Policy
    written: str  # tuned | partial | base | unchanged
    why: str
    data: dict[str, Any] = field(default_factory=dict)


def _with_ops(base: Policy, tuned: Policy, ops: list[str]) -> Policy:
    kp = base.kernels.copy()
    for op in ops:
        kp.set(op, tuned.kernels.preference(op).to_data())  # type: ignore[union-attr]
    return Policy(kp, base.execution)


def _changed_ops(base: Policy, tuned: Policy) -> list[str]:
    return [op for op in tuned.kernels.ops if tuned.kernels.preference(op) != base.kernels.preference(op)]


def check_end_to_end(step: Callable[[], Any], base: Any, tuned: Any, *, tolerance: float = 0.0, warmup: int = 2,
                     repeats: int = 5, rounds: int = 3) -> EndToEnd:
    """Time the whole step under ``base``, ``tuned`` and ``base`` plus each tuned op alone (interleaved); keep the
    ops whose rules do not make the step slower than ``base`` x (1 + ``tolerance``).

    >>> outcome = check_end_to_end(step, base, tuned)   # doctest: +SKIP
    >>> outcome.written, outcome.why                      # doctest: +SKIP
    ('base', 'the tuned step took 21.3 ms vs 11.2 ms with the base policy (1.90x): wrote the base policy')
    """
    base, tuned = as_policy(base), as_policy(tuned)
    ops = _changed_ops(base, tuned)
    if not ops:
        return _outcome(tuned, "unchanged", {"ops": []}, "tuning added no rule: nothing to check")
    candidates = {"base": base, "tuned": tuned}
    if len(ops) > 1:
        candidates.update({f"only {op}": _with_ops(base, tuned, [op]) for op in ops})
    times = compare_steps(step, candidates, warmup=warmup, repeats=repeats, rounds=rounds)
    limit = times["base"]["ms"] * (1.0 + tolerance)
    kept = [op for op in ops if times.get(f"only {op}", times["tuned"])["ms"] <= limit]
    data = {"ops": ops, "tolerance": tolerance, "times": times, "kept": kept, "rounds": rounds, "repeats": repeats,
            "order": "interleaved, one process"}
    if kept == ops and times["tuned"]["ms"] <= limit:
        return _outcome(tuned, "tuned", data, f"the tuned step took {times['tuned']['ms']:.3f} ms vs "
                        f"{times['base']['ms']:.3f} ms with the base policy: wrote the tuned policy")
    if kept and kept != ops:
        partial = _with_ops(base, tuned, kept)
        again = compare_steps(step, {"base": base, "partial": partial}, warmup=warmup, repeats=repeats, rounds=rounds)
        data["partial_times"] = again
        if again["partial"]["ms"] <= again["base"]["ms"] * (1.0 + tolerance):
            return _outcome(partial, "partial", data, f"kept the rules of {', '.join(kept)} (the step took "
                            f"{again['partial']['ms']:.3f} ms vs {again['base']['ms']:.3f} ms); dropped "
                            f"{', '.join(op for op in ops if op not in kept)}, which made it slower")
    ratio = times["tuned"]["ms"] / times["base"]["ms"] if times["base"]["ms"] else float("inf")
    return _outcome(base, "base", data, f"the tuned step took {times['tuned']['ms']:.3f} ms vs "
                    f"{times['base']['ms']:.3f} ms with the base policy ({ratio:.2f}x): wrote the base policy")


def _outcome(policy: Policy, written: str, data: dict[str, Any], why: str) -> EndToEnd:
    data.update({"written": written, "why": why})
    return EndToEnd(policy, written, why, data)
