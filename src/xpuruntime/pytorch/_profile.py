"""``profile()``: one block of PyTorch work, profiled, and its receipt."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from xpuruntime.policies import ExecutionPolicy, KernelPolicy, Policy
from xpuruntime.pytorch import _kernels, _receipt, _state
from xpuruntime.receipts import ExecutionReport, enforce_fallback

__all__ = ["profile", "profile_run", "requested_precision", "new_report"]


def requested_precision(state: _state.Active | None) -> str | None:
    """The precision a receipt judges against: autocast's, else an applied ExecutionPolicy's, else none."""
    return state.precision if state is not None else None


def new_report(state: _state.Active | None, device: str) -> ExecutionReport:
    from xpuruntime.runtime.fingerprint import fingerprint

    policy = state.policy if state else Policy()
    report = ExecutionReport(engine="torch", device=device, policy_hash=policy.hash,
                             fingerprint_hash=fingerprint().hash, engine_version=torch.__version__,
                             requested={"kernels": policy.kernels.to_dict(),
                                        "precision": requested_precision(state)})
    for v in state.violations if state else ():
        report.add(v)
    report.notes.extend(state.notes if state else ())
    return report


@contextlib.contextmanager
def profile(policy: Any = None, *, kernel_policy: KernelPolicy | Mapping[str, Any] | None = None,
            exec_policy: ExecutionPolicy | Mapping[str, Any] | None = None,
            device: Any = None) -> Iterator[ExecutionReport]:
    """Profile the block with ``torch.profiler`` and fill the yielded receipt when it ends.

    >>> import xpuruntime.pytorch as xrt_torch
    >>> with xrt_torch.profile(kernel_policy={"attention": "flash"}) as receipt:   # doctest: +SKIP
    ...     loss = model(x).sum(); loss.backward()
    >>> print(receipt.table())                                                      # doctest: +SKIP

    Each NodeRecord is one (op, kernel, precision) with its calls and time: ``kernel`` is the vocabulary
    name read from the aten op and GPU kernel names, ``requested_kernel`` what the active policy asked for.
    A policy given here is applied for the block (as :func:`policy`, ``device`` included: where the block's
    tensors live, by default CUDA when torch sees one); otherwise the active one is judged.
    A requested kernel that did not run is a violation: ``fallback`` error raises, warn warns.
    """
    given = policy is not None or kernel_policy is not None or exec_policy is not None
    scope = _state.policy(policy, kernel_policy=kernel_policy, exec_policy=exec_policy, device=device) if given \
        else contextlib.nullcontext()
    with scope:
        state = _state.active()
        cuda = torch.cuda.is_available()
        report = new_report(state, "cuda" if cuda else "cpu")
        switches = _receipt.read_switches()
        activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
        with _state.sink() as seen, _kernels.dispatch_records() as dispatched, \
                torch.profiler.profile(activities=activities, record_shapes=True) as prof:
            yield report
            if cuda:
                torch.cuda.synchronize()
        precision = requested_precision(state) or (seen.precisions[0] if seen.precisions else None)
        report.requested["precision"] = precision
        for v in seen.violations:
            report.add(v)
        _receipt.fill_report(report, prof, state.policy if state else Policy(), precision, switches, dispatched)
        enforce_fallback(report, (state.policy if state else Policy()).execution.fallback, stacklevel=4)


def profile_run(report: ExecutionReport, run: Any, policy: Policy, precision: str | None,
                device: torch.device) -> ExecutionReport:
    """Run ``run()`` twice (a warm-up, then under ``torch.profiler``) and fill ``report`` from what ran.

    What the torch engine's ``explain()`` uses; the caller applies the policy around it (:func:`applied_policy`).
    """
    run()  # warm-up: lazy init, cuDNN and cuBLAS workspaces, compilation
    switches = _receipt.read_switches()
    activities = [torch.profiler.ProfilerActivity.CPU]
    activities += [torch.profiler.ProfilerActivity.CUDA] if device.type == "cuda" else []
    with _kernels.dispatch_records() as dispatched, \
            torch.profiler.profile(activities=activities, record_shapes=True) as prof:
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    _receipt.fill_report(report, prof, policy, precision, switches, dispatched)
    report.evidence.append("last of two runs")
    return report
