"""Running one conformance cell: corpus model x engine x precision x shape mode, under ``fallback: error``.

Shared by ``test_matrix.py`` (which compares it with the expectations table) and
``benchmarks/conformance_report.py`` (which writes CONFORMANCE.md). A cell records what xpuruntime *says*
(the construction receipt, the profiled ``explain()`` receipt) and, independently, what is *true*: whether
the outputs are finite and how far they are from the model's float32 outputs, and which precision each
compute node actually ran in according to the engine's own profile.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ENGINES = ("onnxruntime", "openvino", "torch")  # on the CPU; cuda cells live in tests/gpu
GPU_ENGINES = ("onnxruntime", "torch")
PRECISIONS = ("fp32", "tf32", "fp16", "bf16", "int8")
SHAPES = ("dynamic", "fixed")  # ONNX engines: dynamic axes or every dim fixed; torch serves the module ("module")
_COMPUTE = {"matmul", "fusedmatmul", "gemm", "fusedgemm", "conv", "fusedconv", "attention", "multiheadattention",
            "fullyconnected", "convolution", "groupconvolution", "scaleddotproductattention", "mha",
            "matmulinteger", "convinteger", "dynamicquantizematmul", "matmulintegertofloat", "qlinearconv",
            "qlinearmatmul"}


@dataclass
class Outcome:
    """What one cell did. ``said_*``: violation kinds in xpuruntime's receipts; the rest is ground truth."""

    built: str = "honoured"  # honoured | violation | error: <type>
    said_construction: frozenset[str] = frozenset()
    said_explain: frozenset[str] | None = None  # None: explain did not run
    construction_honored: bool | None = None
    finite: bool | None = None
    reference_finite: bool | None = None
    rel_err: float | None = None  # max |out - ref| / max |ref|
    compute_precisions: dict[str, int] = field(default_factory=dict)  # from the profiled receipt, compute nodes
    violations: list[str] = field(default_factory=list)  # explain's (else construction's), as text
    error: str | None = None

    def said(self) -> frozenset[str]:
        return self.said_construction | (self.said_explain or frozenset())

    def row(self) -> dict[str, Any]:
        return {"built": self.built, "construction": sorted(self.said_construction),
                "construction_honored": self.construction_honored,
                "explain": None if self.said_explain is None else sorted(self.said_explain),
                "finite": self.finite, "reference_finite": self.reference_finite, "rel_err": self.rel_err,
                "compute_precisions": self.compute_precisions, "violations": self.violations[:6], "error": self.error}


def shape_modes(engine: str) -> tuple[str, ...]:
    return ("module",) if engine == "torch" else SHAPES


def policy(precision: str, fallback: str = "error") -> dict[str, Any]:
    """The execution policy of a cell (the lead adds ``accuracy`` here once it exists)."""
    return {"precision": precision, "fallback": fallback}


def _kinds(violations: Any) -> frozenset[str]:
    return frozenset(getattr(v, "kind", "?") for v in violations)


def _session(model: str, engine: str, shapes: str, precision: str, fallback: str, device: str,
             cache_dir: Path) -> Any:
    from xpuruntime import corpus
    from xpuruntime.inference.session import InferenceSession

    exec_policy = policy(precision, fallback)
    if engine == "torch":
        feeds = corpus.sample_feeds(model)
        return InferenceSession(corpus.build_module(model), engine="torch", device=device, exec_policy=exec_policy,
                                engine_options={"example_inputs": tuple(feeds.values())})
    path = corpus.build_onnx(model, dynamic=shapes == "dynamic", cache_dir=cache_dir)
    return InferenceSession(path, engine=engine, device=device, exec_policy=exec_policy)


def reference(model: str, cache_dir: Path) -> np.ndarray:
    """The model's float32 outputs on the default sample feeds (torch, IEEE float32)."""
    import torch

    from xpuruntime import corpus

    feeds = corpus.sample_feeds(model)
    with torch.no_grad():
        return corpus.build_module(model)(*(torch.from_numpy(v) for v in feeds.values())).numpy()


def run_cell(model: str, engine: str, precision: str, shapes: str, *, cache_dir: Path, device: str = "cpu",
             ref: np.ndarray | None = None) -> Outcome:
    """Build under ``fallback: error``; if refused, build again under ``allow`` to explain and run anyway."""
    from xpuruntime import corpus
    from xpuruntime.errors import PolicyViolationError, XpuRuntimeError

    out, feeds = Outcome(), corpus.sample_feeds(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            sess = _session(model, engine, shapes, precision, "error", device, cache_dir)
            out.construction_honored = sess.report.honored
            out.said_construction = _kinds(sess.report.violations)
        except PolicyViolationError as exc:
            out.built, out.said_construction, out.construction_honored = "violation", _kinds(exc.violations), False
            out.violations = [str(v) for v in exc.violations]
            try:
                sess = _session(model, engine, shapes, precision, "allow", device, cache_dir)
            except XpuRuntimeError as again:
                out.error = f"{type(again).__name__}: {again.reason}"
                return out
        except XpuRuntimeError as exc:
            out.built, out.error = f"error: {type(exc).__name__}", f"{type(exc).__name__}: {exc.reason}"
            return out
        _explain(out, sess, feeds, lambda: _session(model, engine, shapes, precision, "allow", device, cache_dir))
        _outputs(out, sess, feeds, ref)
    return out


def _explain(out: Outcome, sess: Any, feeds: dict[str, np.ndarray], allow: Any) -> None:
    from xpuruntime.errors import PolicyViolationError, XpuRuntimeError

    try:
        report = sess.explain(feeds)
    except PolicyViolationError as exc:
        out.said_explain = _kinds(exc.violations)
        out.violations = [str(v) for v in exc.violations]
        report = None
    except XpuRuntimeError as exc:
        out.error = f"explain: {type(exc).__name__}: {exc.reason}"
        return
    if report is not None:
        out.said_explain = _kinds(report.violations)
    if report is None:  # the profile itself, without the fallback rule: the ground truth of what ran
        report = allow().explain(feeds) if sess.policy.execution.fallback == "error" else None
    if report is not None:
        out.compute_precisions = dict(Counter(n.precision or "?" for n in report.nodes
                                              if n.op_type.lower() in _COMPUTE))


def _outputs(out: Outcome, sess: Any, feeds: dict[str, np.ndarray], ref: np.ndarray | None) -> None:
    from xpuruntime.errors import XpuRuntimeError

    try:
        value = np.asarray(next(iter(sess.run(feeds).values())), dtype=np.float32)
    except XpuRuntimeError as exc:
        out.error = f"run: {type(exc).__name__}: {exc.reason}"
        return
    out.finite = bool(np.isfinite(value).all())
    if ref is not None:
        out.reference_finite = bool(np.isfinite(ref).all())
        if out.finite and value.shape == ref.shape:
            out.rel_err = float(np.abs(value - ref).max() / max(float(np.abs(ref).max()), 1e-30))
