"""The kernel-choice matrix's cells and how one is run and judged (shared by the CPU and the GPU matrix)."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import xpuruntime as xrt
import xpuruntime.pytorch as xrt_torch
from xpuruntime.receipts import PolicyViolationWarning

__all__ = ["Cell", "Seen", "run_cell", "assert_cell", "cell_id"]


@dataclass(frozen=True)
class Cell:
    op: str
    choice: Any  # a kernel name or an ordered list
    inputs: str  # supported / unsupported by the first listed choice; "any" where no input changes it on the CPU
    ran: str  # vocabulary kernel the profiler shows (under warn and allow; under error too unless it raises
    # first); "a|b" where torch may pick either
    evidence: str  # a regex the profiler event it is read from matches (aten op or GPU kernel name)
    kind: str  # honoured / listed / violation
    where: str = ""  # for a violation: entry (translation or torch refused), call (SDPA dispatcher), receipt
    note: str = ""  # a note the application must carry (a choice the device cannot apply)


@dataclass
class Seen:
    """What one cell did: the phase an error came from, warnings by phase, the receipts."""

    error: xrt.PolicyViolationError | None = None
    raised_at: str = ""
    warned: dict[str, list[str]] | None = None
    call_sites: list[str] | None = None
    applied: xrt.ExecutionReport | None = None
    receipt: xrt.ExecutionReport | None = None

    def ran(self, op: str) -> set[tuple[str | None, str]]:
        nodes = self.receipt.nodes if self.receipt is not None else []
        return {(n.kernel, n.name) for n in nodes if n.op_type == op}


def run_cell(op: str, choice: Any, fallback: str, work: Callable[[], Any], device: str | None = None) -> Seen:
    """Apply the choice with the rule for ``device`` (None: torch's default, CUDA when it sees one), run ``work``
    profiled, and record what happened in each phase."""
    seen, phase = Seen(warned={"entry": [], "call": [], "receipt": []}, call_sites=[]), "entry"
    kernels = {op: list(choice) if isinstance(choice, tuple) else choice}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with xrt_torch.policy(kernel_policy=kernels, exec_policy={"fallback": fallback},
                                  device=device) as seen.applied:
                phase = _mark(seen, caught, phase, "call")
                with xrt_torch.profile() as seen.receipt:
                    work()
                    phase = _mark(seen, caught, phase, "receipt")
        except xrt.PolicyViolationError as exc:
            seen.error, seen.raised_at = exc, phase
        _mark(seen, caught, phase, "")
    return seen


def _mark(seen: Seen, caught: list[Any], phase: str, following: str) -> str:
    for w in caught:
        if issubclass(w.category, PolicyViolationWarning):
            seen.warned[phase].append(str(w.message))
            seen.call_sites.append(w.filename)
    caught.clear()
    return following


def assert_cell(cell: Cell, fallback: str, seen: Seen, here: str) -> None:
    """The two things every cell proves: what ran (profiler), and what the fallback rule did."""
    raises = cell.kind == "violation" and fallback == "error"
    if raises:
        assert seen.error is not None and seen.raised_at == cell.where, (seen.raised_at, seen.error)
    else:
        assert seen.error is None, seen.error
    if not (raises and cell.where in ("entry", "call")):  # an error at entry or at the call: nothing ran
        ran = seen.ran(cell.op)
        kernels = {k for k, _ in ran}
        assert len(kernels) == 1 and kernels <= set(cell.ran.split("|")), seen.receipt.table()
        assert all(re.search(cell.evidence, name, re.IGNORECASE) for _, name in ran), seen.receipt.table()
        assert seen.receipt.honored == (cell.kind != "violation"), seen.receipt.table()
    warned = {phase: msgs for phase, msgs in seen.warned.items() if msgs}
    if fallback == "warn" and cell.kind == "violation":
        assert cell.where in warned, warned
        assert set(warned) <= {cell.where, "receipt"}, warned  # entry/call warnings are repeated by the receipt
    elif fallback == "warn" and cell.kind == "listed":
        assert list(warned) == ["call"] and "cannot run this call" in warned["call"][0], warned
    else:
        assert not warned, warned
    if warned.get("call") and cell.op == "attention":  # the SDPA check's warning
        assert here in seen.call_sites, "the call's warning points at the call"
        assert re.search(f"torch runs ({cell.ran}) instead", warned["call"][0]), warned["call"][0]
    if cell.note and seen.applied is not None:
        assert any(cell.note in n for n in seen.applied.notes), seen.applied.notes


def cell_id(cell: Cell) -> str:
    choice = "+".join(cell.choice) if isinstance(cell.choice, tuple) else cell.choice
    return f"{cell.op}={choice}-{cell.inputs}"
