"""Cross-engine comparison: one model, the same inputs, several engines; do their outputs agree?

Every engine runs the model through an :class:`~xpuruntime.inference.session.InferenceSession` under
the same policy (or a per-engine one), so each run also leaves its receipt. The first engine is the
reference; every other engine's outputs are checked against it with numpy's ``allclose`` rule,
``|actual - reference| <= atol + rtol * |reference|`` element by element (NaN never agrees).

>>> import xpuruntime as xrt
>>> result = xrt.compare("model.onnx", engines=["onnxruntime@cpu", "openvino@cpu"])  # doctest: +SKIP
>>> result.passed, [c.summary() for c in result.failures]                         # doctest: +SKIP
(True, [])
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xpuruntime._models import ModelSource, load_model_source
from xpuruntime.errors import PolicyError, did_you_mean, safe_text
from xpuruntime.inference.engine import get_engine_class
from xpuruntime.inference.feeds import TensorInfo, check_seed, random_feeds
from xpuruntime.policies import Policy, coerce_policy
from xpuruntime.policies.policy import PolicyLike
from xpuruntime.receipts import ExecutionReport

__all__ = ["compare", "ComparisonResult", "OutputComparison", "EngineRun", "EngineSpec", "parse_engine_spec"]


@dataclass(frozen=True)
class EngineSpec:
    """One engine to compare: ``label`` as the user wrote it, the engine name and the device."""

    label: str
    engine: str
    device: str


def parse_engine_spec(spec: str, device: str = "cpu") -> EngineSpec:
    """``"openvino@cpu"`` -> engine ``openvino`` on ``cpu``; without ``@`` the engine runs on ``device``.

    >>> parse_engine_spec("onnxruntime@cuda:0")
    EngineSpec(label='onnxruntime@cuda:0', engine='onnxruntime', device='cuda:0')
    """
    if not isinstance(spec, str) or not spec.strip():
        raise PolicyError("an engine to compare must be a non-empty string", field="engines",
                          expected="NAME or NAME@DEVICE, e.g. 'openvino@cpu'", received=repr(spec))
    name, sep, where = spec.strip().partition("@")
    if not name or sep and not where:
        raise PolicyError(f"malformed engine {spec!r}", field="engines", expected="NAME or NAME@DEVICE",
                          received=repr(spec), hint="e.g. 'onnxruntime@cpu' or 'openvino'")
    return EngineSpec(spec.strip(), name.strip(), where.strip() if sep else str(device))


@dataclass
class EngineRun:
    """One engine's run: what it was asked (label, policy) and its receipt."""

    label: str
    engine: str
    device: str
    policy_hash: str
    precision: str  # the policy's precision, which explains most differences
    report: ExecutionReport
    outputs: list[TensorInfo]  # what it returned: name, shape, dtype
    run_ms: float  # one run, first call included: not a benchmark

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "engine": self.engine, "device": self.device, "policy_hash": self.policy_hash,
                "precision": self.precision, "run_ms": round(self.run_ms, 3),
                "outputs": [o.to_dict() for o in self.outputs], "report": self.report.to_dict()}


@dataclass
class OutputComparison:
    """One output of one engine against the reference engine."""

    output: str
    reference: str  # label of the reference engine
    engine: str  # label of the engine compared with it
    passed: bool
    problem: str | None = None  # why the values could not be compared (missing output, shape, dtype)
    max_abs: float | None = None  # max |actual - reference|
    max_rel: float | None = None  # max |actual - reference| / |reference|, over non-zero reference elements
    mismatched: int = 0  # elements outside atol + rtol * |reference|
    size: int = 0
    worst_index: tuple[int, ...] | None = None  # the element furthest outside the tolerance
    worst: tuple[Any, Any] | None = None  # (actual, reference) there
    rtol: float = 0.0
    atol: float = 0.0

    def summary(self) -> str:
        """One line: which output, which engines, and by how much they differ."""
        head = f"output {self.output!r}: {self.engine} vs {self.reference}"
        if self.problem:
            return f"{head}: {self.problem}"
        stats = f"max abs diff {_fmt(self.max_abs)}, max rel diff {_fmt(self.max_rel)}"
        if self.passed:
            return f"{head}: agree ({stats})"
        where = ""
        if self.worst_index is not None and self.worst is not None:
            where = f"; worst at {list(self.worst_index)}: {_fmt(self.worst[0])} vs {_fmt(self.worst[1])}"
        return (f"{head}: {self.mismatched} of {self.size} elements differ beyond rtol={self.rtol:g}, "
                f"atol={self.atol:g}; {stats}{where}")

    def to_dict(self) -> dict[str, Any]:
        data = {k: _plain(v) for k, v in self.__dict__.items()}
        data["summary"] = self.summary()
        return data


@dataclass
class ComparisonResult:
    """Every engine's receipt and every output compared with the reference (the first engine)."""

    model: str
    inputs: list[TensorInfo]
    random_inputs: bool
    seed: int
    rtol: float
    atol: float
    runs: list[EngineRun]
    comparisons: list[OutputComparison]
    outputs: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)  # label -> name -> array

    @property
    def passed(self) -> bool:
        """True when every output of every engine agrees with the reference."""
        return all(c.passed for c in self.comparisons)

    @property
    def failures(self) -> list[OutputComparison]:
        return [c for c in self.comparisons if not c.passed]

    @property
    def reference(self) -> str:
        return self.runs[0].label

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "model": self.model, "reference": self.reference, "rtol": self.rtol,
                "atol": self.atol, "seed": self.seed if self.random_inputs else None,
                "random_inputs": self.random_inputs, "inputs": [i.to_dict() for i in self.inputs],
                "runs": [r.to_dict() for r in self.runs], "comparisons": [c.to_dict() for c in self.comparisons],
                "failures": [c.summary() for c in self.failures]}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def table(self) -> str:
        """Plain text: the engines with their receipts' verdicts, one row per output and engine, the verdict."""
        rows = [_COLUMNS, *(_row(c) for c in self.comparisons)]
        widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS))]
        body = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
        return "\n".join(safe_text(line) for line in [*self._header(), "", *body, "", *self._verdict()])

    def _header(self) -> list[str]:
        feeds = "; ".join(i.describe() for i in self.inputs)
        origin = f"random, seed {self.seed}" if self.random_inputs else "given"
        lines = [f"model      {self.model}", f"inputs     {feeds} ({origin})",
                 f"tolerance  rtol {self.rtol:g}, atol {self.atol:g} (numpy allclose, first engine is the reference)"]
        return lines + [f"engine     {_run_line(r, r is self.runs[0])}" for r in self.runs]

    def _verdict(self) -> list[str]:
        if self.passed:
            return [f"verdict    all {len(self.comparisons)} output comparison(s) agree"]
        return [f"verdict    {len(self.failures)} of {len(self.comparisons)} output comparison(s) differ:",
                *(f"  - {c.summary()}" for c in self.failures)]

    def __rich__(self) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        table = Table(*_COLUMNS, show_edge=False, header_style="bold")
        for c in self.comparisons:
            table.add_row(*(Text(safe_text(x)) for x in _row(c)), style=None if c.passed else "bold red")
        verdict = Text("\n".join(map(safe_text, self._verdict())), style="green" if self.passed else "bold red")
        return Group(Text("\n".join(map(safe_text, self._header()))), table, verdict)

    def __str__(self) -> str:
        return self.table()


def compare(
    model: Any,
    engines: Sequence[str] | str,
    feeds: Any = None,
    rtol: float = 1e-3,
    atol: float = 1e-4,
    device: str = "cpu",
    policy: PolicyLike = None,
    kernel_policy: Any = None,
    exec_policy: Any = None,
    engine_options: Mapping[str, Mapping[str, Any]] | None = None,
    seed: int = 0,
    policies: Mapping[str, PolicyLike] | None = None,
    validate: bool = False,
) -> ComparisonResult:
    """Run ``model`` on every engine with the same inputs and compare each output with the first engine's.

    >>> import xpuruntime as xrt
    >>> r = xrt.compare("model.onnx", ["onnxruntime", "openvino@cpu"], rtol=1e-3, atol=1e-4)  # doctest: +SKIP
    >>> r.passed, r.runs[1].report.honored                                                   # doctest: +SKIP
    (True, True)

    ``engines`` are names or ``NAME@DEVICE`` (a comma-separated string works too); without ``@`` an
    engine runs on ``device``. ``feeds=None`` feeds seeded random data shaped like the inputs (symbolic
    dims 1, or the policy's ``fixed_shapes``). ``policy`` / ``kernel_policy`` / ``exec_policy`` apply to
    every engine; ``policies`` maps an engine (its label as written, or its name) to a policy merged over
    that, and ``engine_options`` maps an engine the same way to its own options. A missing engine raises
    :class:`~xpuruntime.EngineUnavailableError` before anything runs; an engine that cannot honour its
    policy follows the fallback rule as in ``InferenceSession`` (``"error"`` raises); outputs whose
    shapes or dtypes differ are failures with the reason, not errors. ``validate=True``: each engine's receipt
    also holds ``session.validate(feeds)``'s accuracy checks against that engine's own reference.
    """
    specs = _specs(engines, device)
    _check_tolerance(rtol, atol)
    check_seed(seed)
    base = coerce_policy(policy, kernel_policy, exec_policy)
    per_policy = _per_engine(policies, specs, "policies")
    per_options = _per_engine(engine_options, specs, "engine_options")
    for spec in specs:
        get_engine_class(spec.engine).require()
    source = load_model_source(model)
    runs, outputs, inputs, given = [], {}, [], feeds
    for spec in specs:
        run, outputs[spec.label], feeds, infos = _run(source, spec, _merged(base, per_policy[spec.label]),
                                                      per_options[spec.label], feeds, seed, validate)
        runs.append(run)
        inputs = inputs or infos
    comparisons = [c for spec in specs[1:] for c in _compare_all(outputs, specs[0].label, spec.label, rtol, atol)]
    return ComparisonResult(model=source.description, inputs=_described(feeds, inputs), random_inputs=given is None,
                            seed=seed, rtol=rtol, atol=atol, runs=runs, comparisons=comparisons, outputs=outputs)


# -- arguments ---------------------------------------------------------------------------------
def _specs(engines: Sequence[str] | str, device: str) -> list[EngineSpec]:
    if isinstance(engines, str):
        engines = [e for e in engines.split(",") if e.strip()]
    specs = [parse_engine_spec(e, device) for e in engines]
    labels = [s.label for s in specs]
    if len(specs) < 2:
        raise PolicyError("compare needs at least two engines", field="engines", expected="e.g. "
                          "['onnxruntime', 'openvino'] (the first is the reference)", received=repr(list(labels)))
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise PolicyError(f"engine {dupes[0]!r} is given twice", field="engines", expected="distinct engines",
                          received=repr(labels), hint="to compare one engine under two policies, name it by an "
                          "alias the second time (e.g. 'onnxrt') and give that label its own entry in policies=")
    return specs


def _check_tolerance(rtol: float, atol: float) -> None:
    for name, value in (("rtol", rtol), ("atol", atol)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or value == float("inf"):
            raise PolicyError(f"{name} must be a finite number >= 0", field=name, expected="e.g. 1e-3",
                              received=repr(value))


def _per_engine(mapping: Mapping[str, Any] | None, specs: list[EngineSpec], what: str) -> dict[str, Any]:
    """Keys are labels, or engine names as written (which then apply to every engine of that name)."""
    if mapping is not None and not isinstance(mapping, Mapping):
        raise PolicyError(f"{what} must map engines to their {what.replace('_', ' ')}", field=what,
                          expected="a dict such as {'openvino': ...}", received=type(mapping).__name__)
    mapping = dict(mapping or {})
    known = {s.label for s in specs} | {s.engine for s in specs}
    for key in mapping:
        if key not in known:
            raise PolicyError(f"{what} names {key!r}, which is not among the engines compared", field=f"{what}.{key}",
                              expected=", ".join(s.label for s in specs), received=repr(key),
                              hint=did_you_mean(str(key), known))
    return {s.label: mapping.get(s.label, mapping.get(s.engine)) for s in specs}


def _merged(base: Policy, own: PolicyLike) -> Policy:
    return base if own is None else base.merge(coerce_policy(own))


# -- running ---------------------------------------------------------------------------------
def _run(source: ModelSource, spec: EngineSpec, policy: Policy, options: Any, feeds: Any,
         seed: int, validate: bool = False) -> tuple[EngineRun, dict[str, np.ndarray], Any, list[TensorInfo]]:
    from xpuruntime.inference.session import InferenceSession

    with InferenceSession(source, device=spec.device, engine=spec.engine, policy=policy,
                          engine_options=options) as sess:
        if feeds is None:
            feeds = random_feeds(sess.input_info, sess.policy.execution.fixed_shapes, seed)
        feeds = _named(feeds, sess.input_info)
        start = time.perf_counter()
        out = {name: _host(value) for name, value in sess.run(feeds).items()}
        run_ms = (time.perf_counter() - start) * 1e3
        infos = [TensorInfo(n, tuple(v.shape), str(v.dtype)) for n, v in out.items()]
        run = EngineRun(spec.label, sess.engine_name, str(sess.device), sess.policy.hash,
                        sess.policy.execution.precision,
                        sess.report.with_accuracy(sess.validate(feeds)) if validate else sess.report, infos, run_ms)
        return run, out, feeds, sess.input_info


def _named(feeds: Any, inputs: list[TensorInfo]) -> Any:
    """Feeds by name, so every engine gets the same mapping (the session checks names, shapes and dtypes)."""
    if isinstance(feeds, Mapping):
        return dict(feeds)
    if isinstance(feeds, (list, tuple)) and len(feeds) == len(inputs):
        return {i.name: v for i, v in zip(inputs, feeds)}
    if len(inputs) == 1 and not isinstance(feeds, (list, tuple)):
        return {inputs[0].name: feeds}
    return feeds  # the session refuses it with the reason


def _host(value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "numpy") and not hasattr(value, "__array__"):  # an ONNX Runtime OrtValue on a device
        return np.asarray(value.numpy())
    if hasattr(value, "detach"):  # a torch tensor
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _described(feeds: Mapping[str, Any], inputs: list[TensorInfo]) -> list[TensorInfo]:
    shapes = {n: (tuple(getattr(v, "shape", ())), str(getattr(v, "dtype", "?"))) for n, v in feeds.items()}
    return [TensorInfo(i.name, *shapes.get(i.name, (i.shape, i.dtype))) for i in inputs]


# -- comparing -------------------------------------------------------------------------------
def _compare_all(outputs: dict[str, dict[str, np.ndarray]], ref: str, label: str, rtol: float,
                 atol: float) -> list[OutputComparison]:
    names = [*outputs[ref], *(n for n in outputs[label] if n not in outputs[ref])]
    return [_compare(n, ref, label, outputs[ref].get(n), outputs[label].get(n), rtol, atol) for n in names]


def _compare(name: str, ref: str, label: str, expected: np.ndarray | None, actual: np.ndarray | None, rtol: float,
             atol: float) -> OutputComparison:
    base = OutputComparison(name, ref, label, passed=False, rtol=rtol, atol=atol)
    base.problem = _mismatch(expected, actual, ref, label)
    if base.problem or expected is None or actual is None:
        return base
    base.size = int(expected.size)
    if expected.dtype.kind not in "biuf":
        base.mismatched = int(np.count_nonzero(actual != expected))
    else:
        _numeric(base, expected.astype(np.float64), actual.astype(np.float64))
    base.passed = base.mismatched == 0
    return base


def _mismatch(expected: np.ndarray | None, actual: np.ndarray | None, ref: str, label: str) -> str | None:
    if expected is None or actual is None:
        return f"only {ref if actual is None else label} returns this output"
    if expected.shape != actual.shape:
        return f"shape {list(actual.shape)} vs {list(expected.shape)}: the engines disagree on the output's shape"
    if expected.dtype != actual.dtype:
        return f"dtype {actual.dtype} vs {expected.dtype}: the engines disagree on the output's type"
    return None


def _numeric(c: OutputComparison, expected: np.ndarray, actual: np.ndarray) -> None:
    """numpy allclose's rule per element, and the statistics that say by how much."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        diff = np.abs(actual - expected)
        bad = ~np.isclose(actual, expected, rtol=c.rtol, atol=c.atol)
        rel = diff / np.abs(expected)
        finite_rel = rel[np.isfinite(rel) & (expected != 0)]
        margin = np.where(np.isfinite(diff), diff - (c.atol + c.rtol * np.abs(expected)), np.inf)
    finite = diff[np.isfinite(diff)]
    c.max_abs = float(finite.max()) if finite.size else (float("nan") if diff.size else 0.0)
    c.max_rel = float(finite_rel.max()) if finite_rel.size else 0.0
    c.mismatched = int(np.count_nonzero(bad))
    if c.mismatched:
        index = np.unravel_index(int(np.argmax(np.where(bad, margin, -np.inf))), expected.shape)
        c.worst_index = tuple(int(i) for i in index)
        c.worst = (float(actual[index]), float(expected[index]))


# -- rendering -------------------------------------------------------------------------------
_COLUMNS = ("output", "engine", "reference", "max abs", "max rel", "mismatched", "result")


def _row(c: OutputComparison) -> tuple[str, ...]:
    if c.problem:
        return (c.output, c.engine, c.reference, "-", "-", "-", f"FAIL: {c.problem}")
    return (c.output, c.engine, c.reference, _fmt(c.max_abs), _fmt(c.max_rel), f"{c.mismatched}/{c.size}",
            "ok" if c.passed else "FAIL")


def _run_line(run: EngineRun, reference: bool) -> str:
    verdict = "policy honoured" if run.report.honored else f"{len(run.report.violations)} violation(s)"
    used = ", ".join(run.report.providers_used) or "-"
    version = f" {run.report.engine_version}" if run.report.engine_version else ""
    role = " (reference)" if reference else ""
    return (f"{run.label}{role}: {run.engine}{version} on {run.device}, policy {run.policy_hash[:12]} "
            f"({run.precision}), ran on {used}, {verdict}, {run.run_ms:.1f} ms")


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _plain(value: Any) -> Any:
    """JSON-safe: tuples become lists, NaN and infinities become strings."""
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value
