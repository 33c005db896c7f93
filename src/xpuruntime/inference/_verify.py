"""What a receipt proves: evidence levels, verification before return, and the accuracy check (issue 11).

The rules live here, once, for every engine; :class:`~xpuruntime.inference.engine.Engine` calls them:

- :func:`grade` gives every requested item its evidence level after the engine filled the receipt. The engine's
  own levels (``report.evidence_of``, ``NodeRecord.evidence``) win; the base rule for ``precision``: ``observed``
  when a node states a precision the engine reported, ``configured`` for ``fp32``/``tf32`` (the model's own
  float32 types, or a math-mode switch nothing reads back), else ``unverified`` (a converted model or autocast,
  before any profiled run).
- :func:`fold_profile` folds one profiled run into a construction receipt (``fallback="error"`` verifies what it
  can before the session returns); what is still unverified then becomes a violation of kind ``unverified``.
- :func:`compare_outputs` records per output the max abs / rel error against a reference run and turns
  non-finite outputs (where the reference is finite) or a broken tolerance into ``accuracy`` violations.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from xpuruntime.receipts import ExecutionReport, Violation

__all__ = ["grade", "fold_profile", "require_verified", "compare_outputs", "as_array"]

#: precisions a session runs without converting anything (the model's float32, or a math-mode switch)
NATURAL_PRECISIONS = ("fp32", "tf32")


def grade(report: ExecutionReport, precision: str) -> None:
    """Fill the evidence level of ``precision`` and ``providers`` where the engine left them out."""
    levels = report.evidence_of
    if "precision" not in levels:
        stated = any(n.precision and n.evidence == "observed" for n in report.nodes)
        levels["precision"] = ("observed" if stated else "configured" if precision in NATURAL_PRECISIONS
                               else "unverified")
    if "providers" not in levels and report.nodes:
        levels["providers"] = "observed" if any(n.evidence == "observed" for n in report.nodes) else "configured"


def fold_profile(report: ExecutionReport, profiled: ExecutionReport, feeds: Mapping[str, Any]) -> None:
    """Fold a verifying profiled run into the construction receipt ``report``: its violations, the levels it
    observed, and (when the construction nodes were unverified) its nodes."""
    for violation in profiled.violations:
        report.add(violation)
    for key, level in list(report.evidence_of.items()):
        if level == "unverified" and profiled.evidence_of.get(key) in ("observed", "configured"):
            report.evidence_of[key] = profiled.evidence_of[key]
    if any(n.unverified for n in report.nodes) and not any(n.unverified for n in profiled.nodes):
        report.nodes = list(profiled.nodes)
    shapes = ", ".join(f"{k} {np.asarray(v).dtype}{list(np.shape(v))}" for k, v in feeds.items())
    report.evidence += [e for e in profiled.evidence if e not in report.evidence]
    report.notes.append(f"verified by one profiled run on seeded inputs ({shapes}) before the session returned")


def require_verified(report: ExecutionReport, engine: str, why: str | None = None) -> None:
    """Under ``fallback="error"``: what no evidence shows after verifying is a violation."""
    for item in report.unverified:
        report.add(Violation("unverified", item, str(report.requested.get(item, "as requested")), "no evidence",
                             why or f"the {engine} engine shows nothing that proves it, even in a profiled run"))


def as_array(value: Any) -> np.ndarray:
    """An output (numpy, torch tensor, DeviceArray-like) as a host numpy array."""
    if hasattr(value, "detach"):  # torch
        value = value.detach()
        value = value.float() if value.is_floating_point() else value
        return np.asarray(value.cpu().numpy())
    if hasattr(value, "get") and not isinstance(value, Mapping):  # cupy
        value = value.get()
    return np.asarray(value)


def compare_outputs(report: ExecutionReport, outputs: Mapping[str, Any], reference: Mapping[str, Any],
                    contract: Any, label: str) -> None:
    """Record per output max abs / rel error and finiteness against ``reference``; add ``accuracy`` violations.

    ``max_rel`` is ``max |out - ref| / max |ref|``; the tolerance is numpy's ``|out - ref| <= atol + rtol*|ref|``
    for every element. Non-finite values where the reference is finite are a violation with or without a contract.
    """
    for name, value in outputs.items():
        if name in reference:
            report.accuracy.append(_compare_one(report, name, as_array(value), as_array(reference[name]), contract,
                                                label))
    report.evidence_of["accuracy"] = "observed"
    report.evidence.append(f"outputs compared with the {label} reference run")


def _compare_one(report: ExecutionReport, name: str, out: np.ndarray, ref: np.ndarray, contract: Any,
                 label: str) -> dict[str, Any]:
    record: dict[str, Any] = {"output": name, "reference": label, "rtol": getattr(contract, "rtol", None),
                              "atol": getattr(contract, "atol", None), "max_abs": None, "max_rel": None,
                              "finite": None, "reference_finite": None, "within": None}
    if out.dtype.kind not in "biuf" or ref.dtype.kind not in "biuf":
        return record
    if out.shape != ref.shape:
        report.add(Violation("accuracy", name, f"shape {list(ref.shape)}", f"shape {list(out.shape)}",
                             f"the output's shape differs from the {label} reference's"))
        return record
    out, ref = out.astype(np.float64), ref.astype(np.float64)
    ok_out, ok_ref = np.isfinite(out), np.isfinite(ref)
    record.update(finite=bool(ok_out.all()), reference_finite=bool(ok_ref.all()))
    bad = int((~ok_out & ok_ref).sum())
    if bad:
        report.add(Violation("accuracy", name, f"finite values (as the {label} reference)",
                             f"{bad} of {out.size} non-finite", "inf/NaN where the reference is finite: the "
                             "requested precision overflowed (float16 ends at 65504) or the engine failed"))
    both = ok_out & ok_ref
    diff, mag = np.abs(out - ref)[both], np.abs(ref)[both]
    if diff.size:
        record["max_abs"] = float(diff.max())
        record["max_rel"] = float(diff.max() / max(float(mag.max()), np.finfo(np.float64).tiny))
    if contract is not None:
        beyond = int((diff > contract.atol + contract.rtol * mag).sum())
        record["within"] = not beyond and not bad
        if beyond:
            report.add(Violation("accuracy", name, f"rtol={contract.rtol:g} atol={contract.atol:g} vs {label}",
                                 f"max abs {record['max_abs']:.3g}, max rel {record['max_rel']:.3g}",
                                 f"{beyond} of {out.size} values beyond atol + rtol*|reference|"))
    return record
