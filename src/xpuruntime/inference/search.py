"""Policy search: the fastest execution policy that keeps the user's accuracy contract (``xpuruntime tune --search``).

The original design's BestPerformance strategy, at the policy level. Candidates are engine x precision x CUDA
graphs x compile x fusions:

==============  ========================================================================================
axis            values
==============  ========================================================================================
engine          the installed ONNX engines (onnxruntime, openvino), or ``torch`` for an ``nn.Module``
precision       fp32, tf32 (CUDA only), fp16, bf16, int8
cuda_graphs     off, on (CUDA only)
compile         off, default (torch only)
fusions         off, auto (onnxruntime only)
==============  ========================================================================================

Each candidate is built as an :class:`~xpuruntime.inference.session.InferenceSession` with ``fallback="allow"``
and run once on seeded random feeds. It is **dropped** when it fails to build or run, when its receipt holds a
violation (what the engine did not do as asked; notes are accepted), or when its outputs leave the accuracy
contract: ``|out - ref| <= atol + rtol * |ref|`` element-wise against an IEEE fp32 reference (the first engine
at fp32 with the base policy's settings); a non-finite output where the reference is finite always fails.
The contract is the base policy's ``execution.accuracy`` (``rtol``, ``atol``) when the policy has one, else
``rtol=1e-2, atol=1e-3``; ``accuracy=(rtol, atol)`` overrides both. The survivors are timed together,
interleaved, by :func:`xpuruntime.inference.bench.bench`; the lowest median wins. Every candidate keeps its
figures and the reason for its status (:meth:`SearchResult.to_data`, the lock's ``search`` section).

>>> result = search("model.onnx", dims={"batch": 1, "seq": 128})     # doctest: +SKIP
>>> result.policy.save("fast.yaml"); result.chosen.engine            # doctest: +SKIP
'onnxruntime'
"""

from __future__ import annotations

import copy
import itertools
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xpuruntime.errors import InputError, XpuRuntimeError

__all__ = ["search", "SearchResult", "SearchCandidate", "candidates", "accuracy_contract", "check_accuracy",
           "DEFAULT_RTOL", "DEFAULT_ATOL", "ONNX_ENGINES", "PRECISIONS"]

DEFAULT_RTOL, DEFAULT_ATOL = 1e-2, 1e-3
ONNX_ENGINES = ("onnxruntime", "openvino")
PRECISIONS = ("fp32", "tf32", "fp16", "bf16", "int8")


@dataclass
class SearchCandidate:
    """One point of the search: its engine and settings, and what became of it.

    ``status``: ``chosen`` (the fastest that met the contract), ``measured`` (met it, slower), ``dropped``.
    """

    label: str
    engine: str
    settings: dict[str, Any]
    policy: Any  # the Policy it was built with (fallback="allow")
    status: str = "pending"
    reason: str | None = None
    violations: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    accuracy: dict[str, Any] | None = None
    timing: dict[str, Any] | None = None

    def drop(self, reason: str) -> None:
        self.status, self.reason = "dropped", reason

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "engine": self.engine, "settings": dict(self.settings), "status": self.status,
                "reason": self.reason, "violations": list(self.violations), "notes": list(self.notes),
                "accuracy": self.accuracy, "timing": self.timing}


@dataclass
class SearchResult:
    """Every candidate, the one chosen (None when none met the contract), and the search's settings."""

    model: str
    device: str
    base: Any  # the base Policy
    candidates: list[SearchCandidate]
    chosen: SearchCandidate | None
    settings: dict[str, Any]

    @property
    def policy(self) -> Any:
        """The policy to write: the chosen candidate's settings over the base policy (the base's fallback kept);
        the base policy itself when nothing met the contract."""
        if self.chosen is None:
            return self.base
        return _policy_for(self.base, self.chosen.settings, self.base.execution.fallback)

    def to_data(self) -> dict[str, Any]:
        """JSON data for the lock's ``search`` section."""
        return {"model": self.model, "device": self.device, "strategy": "best_performance",
                "chosen": self.chosen.label if self.chosen else None,
                "engine": self.chosen.engine if self.chosen else None, **self.settings,
                "candidates": [c.to_dict() for c in self.candidates]}

    def table(self) -> Any:
        """A rich Table: one row per candidate (status, p50, accuracy, reason)."""
        from rich.markup import escape
        from rich.table import Table

        table = Table("candidate", "status", "p50 ms", "max abs err", "reason", show_edge=False)
        for c in self.candidates:
            p50 = (c.timing or {}).get("p50_ms")
            err = (c.accuracy or {}).get("max_abs_err")
            table.add_row(c.label, c.status, "-" if p50 is None else f"{p50:.4f}",
                          "-" if err is None else f"{err:.3g}", escape(_short(c.reason or "", 110)))
        return table


# -- the contract ---------------------------------------------------------------------------------
def accuracy_contract(policy: Any = None, override: tuple[float, float] | None = None) -> tuple[float, float]:
    """``(rtol, atol)``: ``override``, else the policy's ``execution.accuracy``, else the defaults.

    >>> accuracy_contract(None)
    (0.01, 0.001)
    """
    if override is not None:
        return float(override[0]), float(override[1])
    acc = getattr(getattr(policy, "execution", None), "accuracy", None)
    if acc is None:
        return DEFAULT_RTOL, DEFAULT_ATOL
    get = acc.get if isinstance(acc, Mapping) else lambda k, d=None: getattr(acc, k, d)
    rtol, atol = get("rtol", None), get("atol", None)
    return (DEFAULT_RTOL if rtol is None else float(rtol)), (DEFAULT_ATOL if atol is None else float(atol))


def check_accuracy(outputs: Mapping[str, Any], reference: Mapping[str, Any], rtol: float,
                   atol: float) -> tuple[str | None, dict[str, Any]]:
    """Compare outputs with the reference: ``(why it fails or None, figures)``.

    >>> check_accuracy({"y": np.ones(2)}, {"y": np.ones(2)}, 1e-2, 1e-3)[0] is None
    True
    """
    worst_abs, worst_rel, why = 0.0, 0.0, None
    for name, ref in reference.items():
        ref = np.asarray(ref)
        out = np.asarray(outputs.get(name)) if name in outputs else None
        if out is None or out.shape != ref.shape:
            return f"output {name!r}: shape {None if out is None else out.shape} vs {ref.shape}", {}
        if not np.issubdtype(ref.dtype, np.number) or ref.dtype == np.bool_:
            if not np.array_equal(out, ref):
                why = why or f"output {name!r}: {ref.dtype} values differ"
            continue
        r, o = ref.astype(np.float64), out.astype(np.float64)
        if (np.isfinite(r) & ~np.isfinite(o)).any():
            return f"output {name!r}: non-finite values where the reference is finite", {"non_finite": True}
        diff = np.abs(np.where(np.isfinite(r), o - r, 0.0))
        worst_abs = max(worst_abs, float(diff.max(initial=0.0)))
        worst_rel = max(worst_rel, float((diff / np.maximum(np.abs(r), 1e-30)).max(initial=0.0)))
        if (diff > atol + rtol * np.abs(np.where(np.isfinite(r), r, 0.0))).any() and why is None:
            why = f"output {name!r}: max abs error {float(diff.max()):.3g} beyond atol {atol:g} + rtol {rtol:g} x |ref|"
    return why, {"max_abs_err": worst_abs, "max_rel_err": worst_rel, "rtol": rtol, "atol": atol, "ok": why is None}


# -- candidates -----------------------------------------------------------------------------------
def candidates(engines: Sequence[str], device: str = "cpu", base: Any = None,
               precisions: Sequence[str] | None = None) -> list[SearchCandidate]:
    """The search space for ``engines`` on ``device`` (see the module notes).

    >>> [c.label for c in candidates(["openvino"], "cpu", precisions=["fp32", "fp16"])]
    ['openvino:fp32', 'openvino:fp16']
    """
    from xpuruntime.policies.policy import as_policy

    base, cuda = as_policy(base), device.startswith("cuda")
    wanted = [p for p in (precisions or PRECISIONS) if cuda or p != "tf32"]
    out = []
    for engine in engines:
        axes = {"precision": wanted, "cuda_graphs": [False, True] if cuda else [False],
                "compile": ["off", "default"] if engine == "torch" else ["off"],
                "fusions": ["off", "auto"] if engine == "onnxruntime" else ["off"]}
        for values in itertools.product(*axes.values()):
            settings = dict(zip(axes, values))
            out.append(SearchCandidate(_label(engine, settings), engine, settings,
                                       _policy_for(base, settings, "allow")))
    return out


def _label(engine: str, s: Mapping[str, Any]) -> str:
    extra = ["graphs"] * bool(s["cuda_graphs"]) + [f"compile={s['compile']}"] * (s["compile"] != "off") + \
        [f"fusions={s['fusions']}"] * (s["fusions"] != "off")
    return f"{engine}:{s['precision']}" + "".join(f"+{e}" for e in extra)


def _policy_for(base: Any, settings: Mapping[str, Any], fallback: str) -> Any:
    from xpuruntime.policies import Policy

    data = base.to_dict()
    execution = {**data.get("execution", {}), **settings, "fallback": fallback}
    if settings.get("cuda_graphs"):
        execution["static_shape"] = True
    return Policy.from_dict({**data, "execution": execution})


# -- the search -----------------------------------------------------------------------------------
def search(model: Any, *, engines: Sequence[str] | None = None, device: str = "cpu", policy: Any = None,
           precisions: Sequence[str] | None = None, dims: Mapping[str, int] | None = None,
           feeds: Mapping[str, Any] | None = None, accuracy: tuple[float, float] | None = None, warmup: int = 5,
           repeat: int = 20, engine_options: Mapping[str, Mapping[str, Any]] | None = None,
           seed: int = 0) -> SearchResult:
    """Try every candidate, drop what breaks the policy or the accuracy contract, time the rest, pick the fastest.

    ``engines`` default: the installed ONNX engines for a model file, ``torch`` for an ``nn.Module``; ``policy``
    is the base policy (its kernels and other settings are kept); ``dims`` sizes symbolic dims of the feeds.

    >>> r = search("model.onnx", dims={"batch": 1}, repeat=10)            # doctest: +SKIP
    """
    from xpuruntime.policies.policy import as_policy

    base = as_policy(policy)
    names = _engines(engines, model)
    rtol, atol = accuracy_contract(base, accuracy)
    cands = candidates(names, device, base, precisions)
    ref_label, feed_set, reference = _reference(model, names, device, base, dims, feeds, seed, engine_options)
    for c in cands:
        _judge(c, model, device, feed_set, reference, rtol, atol, engine_options)
    chosen = _time(model, [c for c in cands if c.status == "pending"], device, feed_set, warmup, repeat,
                   engine_options)
    settings = {"accuracy": {"rtol": rtol, "atol": atol, "reference": ref_label,
                             "source": "given" if accuracy else "policy" if _has_accuracy(base) else "default"},
                "engines": names, "warmup": warmup, "repeat": repeat, "dims": dict(dims or {}), "seed": seed,
                "timing": "xpuruntime.inference.bench, interleaved, shuffled each round"}
    label = str(model) if isinstance(model, (str, os.PathLike)) else f"<{type(model).__name__}>"
    return SearchResult(label, device, base, cands, chosen, settings)


def _has_accuracy(policy: Any) -> bool:
    return getattr(getattr(policy, "execution", None), "accuracy", None) is not None


def _engines(engines: Sequence[str] | None, model: Any) -> list[str]:
    from xpuruntime.inference.engine import get_engine_class

    if engines:
        return [e.strip() for e in engines]
    if not isinstance(model, (str, os.PathLike, bytes)) and not hasattr(model, "graph"):
        return ["torch"]
    found = [e for e in ONNX_ENGINES if get_engine_class(e).unavailable_reason() is None]
    if not found:
        raise InputError("no ONNX engine is installed", expected="onnxruntime or openvino", received="neither",
                         hint="pip install 'xpuruntime[onnxruntime]'")
    return found


def _session(model: Any, engine: str, device: str, policy: Any, options: Mapping[str, Any] | None) -> Any:
    from xpuruntime.inference.session import InferenceSession

    fresh = copy.deepcopy(model) if hasattr(model, "graph") else model  # an engine may convert a proto in place
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return InferenceSession(fresh, device=device, engine=engine, policy=policy,
                                engine_options=dict((options or {}).get(engine, {})))


def _reference(model: Any, names: list[str], device: str, base: Any, dims: Mapping[str, int] | None,
               feeds: Mapping[str, Any] | None, seed: int,
               options: Mapping[str, Mapping[str, Any]] | None) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """The IEEE fp32 reference: the first engine that builds at fp32, its feeds and outputs."""
    settings = {"precision": "fp32", "cuda_graphs": False, "compile": "off", "fusions": "off"}
    errors = []
    for engine in names:
        try:
            sess = _session(model, engine, device, _policy_for(base, settings, "allow"), options)
        except XpuRuntimeError as exc:
            errors.append(f"{engine}: {' '.join(str(exc).split())[:200]}")
            continue
        try:
            feed_set = dict(feeds) if feeds is not None else _random(sess, dims, seed)
            return f"{engine}:fp32", feed_set, _numpy(sess.run(feed_set))
        finally:
            sess.close()
    raise InputError("no engine could build the fp32 reference", expected="a model one of the engines loads",
                     received="; ".join(errors))


def _random(sess: Any, dims: Mapping[str, int] | None, seed: int) -> dict[str, Any]:
    from xpuruntime.inference.feeds import random_feeds

    fixed = {i.name: tuple(d if isinstance(d, int) and d > 0 else int((dims or {}).get(str(d), 1))
                           for d in (i.shape or ())) for i in sess.input_info}
    return random_feeds(sess.input_info, fixed, seed=seed)


def _numpy(outputs: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in outputs.items():
        if hasattr(v, "detach"):
            v = v.detach().float().cpu().numpy() if v.is_floating_point() else v.detach().cpu().numpy()
        out[k] = np.asarray(v)
    return out


def _judge(c: SearchCandidate, model: Any, device: str, feeds: dict[str, Any], reference: dict[str, Any],
           rtol: float, atol: float, options: Mapping[str, Mapping[str, Any]] | None) -> None:
    """Build and run one candidate; drop it on an error, a violation or an accuracy failure."""
    try:
        sess = _session(model, c.engine, device, c.policy, options)
    except XpuRuntimeError as exc:
        return c.drop(f"failed to build: {_one_line(exc)}")
    try:
        c.violations = [str(v) for v in sess.report.violations]
        c.notes = list(sess.report.notes)
        if c.violations:
            return c.drop(f"violation: {c.violations[0]}")
        outputs = _numpy(sess.run(feeds))
    except (XpuRuntimeError, RuntimeError, ValueError) as exc:
        return c.drop(f"failed to run: {_one_line(exc)}")
    finally:
        sess.close()
    why, c.accuracy = check_accuracy(outputs, reference, rtol, atol)
    if why:
        c.drop(f"accuracy: {why}")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def _time(model: Any, survivors: list[SearchCandidate], device: str, feeds: dict[str, Any], warmup: int,
          repeat: int, options: Mapping[str, Mapping[str, Any]] | None) -> SearchCandidate | None:
    """Time the survivors together with bench (interleaved); mark the fastest ``chosen``."""
    from xpuruntime.inference.bench import bench

    if not survivors:
        return None
    result = bench(model, pairs=[(c.engine, (c.label, c.policy)) for c in survivors], device=device,
                   feeds=feeds, warmup=warmup, repeat=repeat, engine_options=options)
    for c, row in zip(survivors, result.rows):
        c.timing = {k: getattr(row, k) for k in ("load_s", "first_run_ms", "p50_ms", "p90_ms", "p99_ms",
                                                 "mean_ms", "throughput")}
        if row.error or row.p50_ms is None:
            c.drop(f"failed while timed: {row.error}")
    timed = [c for c in survivors if c.status == "pending"]
    if not timed:
        return None
    best = min(timed, key=lambda c: c.timing["p50_ms"])  # type: ignore[index]
    for c in timed:
        c.status = "chosen" if c is best else "measured"
        c.reason = ("fastest that meets the accuracy contract" if c is best else
                    f"slower: p50 {c.timing['p50_ms']:.4f} ms vs {best.timing['p50_ms']:.4f} ms "  # type: ignore[index]
                    f"({best.label})")
    return best


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."
