"""Autotuning: measure the registered kernels on real shapes and write the winners as per-shape policy rules.

Where the shapes come from:

- :func:`recording` -- run a workload (a model's forward, a training step) and collect every matmul, attention
  and layernorm call it makes (torch calls and ``xpuruntime.kernels`` ops alike), with dtype (autocast
  included) and operand layout;
- :func:`targets_from_specs` -- ``"matmul:bf16:8192x768x768"`` (m x n x k; ``BxMxNxK`` for a batched product;
  an optional ``:nt`` layout suffix), ``"layernorm:bf16:8192x768"``, ``"attention:bf16:8x12x1024x1024x64"``;
- :func:`targets_from_onnx` -- the MatMul and Gemm nodes of an ONNX model, shaped by ONNX shape inference.

How ``auto`` is resolved is the tuner's ``strategy``:

- ``best_performance`` -- every supported candidate is run on the target's shape with fresh random inputs
  (never zeros), checked against the default kernel's result, warmed up, then timed ``repeats`` times (CUDA
  events on a GPU, ``perf_counter`` on the CPU); the lowest median wins, but a kernel other than the registry
  default must beat the default by ``min_speedup`` (noise is not a win);
- ``first_supported`` -- the first candidate that supports the shape and runs correctly wins; nothing is timed.

Candidates are the base policy's list for the op when it names kernels (``matmul: [nvmath, cublaslt]``), else
every kernel registered for the op, always with the default; kernels with variants (``nvmath``: one per
cuBLASLt algorithm of the plan) are expanded. The result is a list of
:class:`~xpuruntime.policies.records.TuningRecord` and, through :func:`build_policy`, a policy whose rules pin
each shape's winner (params included)::

    >>> import xpuruntime.kernels as xk
    >>> tuner = xk.Tuner(strategy="best_performance")
    >>> with xk.recording() as rec:                                   # doctest: +SKIP
    ...     model(x)
    >>> records = tuner.tune(rec.targets)                             # doctest: +SKIP
    >>> policy = xk.tuner.build_policy(records)                       # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import math
import re
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from xpuruntime.errors import InputError, PolicyError, UnsupportedOperationError
from xpuruntime.kernels.registry import DispatchContext, KernelImpl, KernelRegistry, get_registry
from xpuruntime.policies import Policy
from xpuruntime.policies import vocabulary as vocab
from xpuruntime.policies._common import canonical_json
from xpuruntime.policies.records import STRATEGIES, Candidate, TuningRecord

__all__ = ["Tuner", "Target", "Recording", "recording", "targets_from_specs", "parse_spec", "targets_from_onnx",
           "build_policy", "with_tunable_op", "make_inputs", "TUNABLE_OPS"]

TUNABLE_OPS = ("matmul", "attention", "layernorm")
_TOLERANCE = {"fp32": 2e-3, "tf32": 5e-3, "fp16": 1e-2, "bf16": 3e-2, "fp64": 1e-9}  # relative Frobenius error
_BUCKETS = ("exact", "pow2")


def _policy_strategy(policy: Any) -> str | None:
    """``auto_strategy`` of a KernelPolicy (or of a Policy's kernels), if set."""
    kernels = getattr(policy, "kernels", policy)
    return getattr(kernels, "auto_strategy", None)


# ============================================================================================== targets
@dataclass(frozen=True)
class Target:
    """One shape to tune: op, dtype, device, the dims rules test, and how the inputs are laid out.

    ``options``: ``layout`` (matmul: ``["row", "col"]`` for ``a`` and ``b``), ``is_causal`` (attention).
    """

    op: str
    dtype: str
    device: str
    dims: Mapping[str, int]
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "op", vocab.canonical_op(self.op))
        object.__setattr__(self, "dtype", vocab.canonical_dtype(self.dtype))
        object.__setattr__(self, "dims", dict(self.dims))
        object.__setattr__(self, "options", dict(self.options))

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        return self.op, self.dtype, self.device, canonical_json(dict(self.dims)), canonical_json(dict(self.options))

    def describe(self) -> str:
        dims = "x".join(str(v) for v in self.dims.values())
        layout = self.options.get("layout")
        return f"{self.op} {self.dtype} {dims}" + (f" {'/'.join(layout)}" if layout else "") + f" on {self.device}"

    def context(self) -> DispatchContext:
        """The dispatch context a call of this shape produces (shapes and strides included)."""
        shapes, strides = _SHAPES[self.op](self)
        return DispatchContext(self.op, device=self.device, dtype=self.dtype, dims=self.dims, shapes=shapes,
                               strides=strides)


def _matmul_shapes(t: Target) -> tuple[tuple, tuple]:
    d = t.dims
    la, lb = t.options.get("layout") or ("row", "row")
    a_shape, b_shape = ((d["batch"], d["m"], d["k"]), (d["batch"], d["k"], d["n"])) if d.get("batch", 1) > 1 else \
        ((d["m"], d["k"]), (d["k"], d["n"]))
    return (a_shape, b_shape), (_strides(a_shape, la), _strides(b_shape, lb))


def _strides(shape: tuple[int, ...], layout: str) -> tuple[int, ...]:
    rows, cols = shape[-2:]
    inner = (cols, 1) if layout == "row" else (1, rows)
    return ((rows * cols,) if len(shape) == 3 else ()) + inner


def _attention_shapes(t: Target) -> tuple[tuple, tuple]:
    d = t.dims
    q = (d["batch"], d["heads"], d["seq_q"], d["head_dim"])
    k = (d["batch"], d["heads"], d["seq_k"], d["head_dim"])
    return (q, k, k), ()


def _layernorm_shapes(t: Target) -> tuple[tuple, tuple]:
    return ((t.dims["rows"], t.dims["hidden"]),), ()


_SHAPES: dict[str, Callable[[Target], tuple[tuple, tuple]]] = {
    "matmul": _matmul_shapes, "attention": _attention_shapes, "layernorm": _layernorm_shapes}
_SPEC_DIMS = {"matmul": (("m", "n", "k"), ("batch", "m", "n", "k")), "layernorm": (("rows", "hidden"),),
              "attention": (("batch", "heads", "seq_q", "seq_k", "head_dim"),)}
_LAYOUTS = {"nn": ("row", "row"), "nt": ("row", "col"), "tn": ("col", "row"), "tt": ("col", "col")}


def parse_spec(spec: str, device: str = "cpu") -> Target:
    """``"matmul:bf16:1024x768x768"`` -> a :class:`Target` (see the module notes for the forms)."""
    parts = [p.strip() for p in str(spec).split(":")]
    usage = ("op:dtype:dims, e.g. matmul:bf16:1024x768x768 (m x n x k, optional batch first, optional :nt layout), "
             "layernorm:bf16:8192x768, attention:bf16:8x12x1024x1024x64")
    if len(parts) not in (3, 4) or not re.fullmatch(r"\d+(x\d+)*", parts[2]):
        raise InputError(f"malformed shape spec {spec!r}", expected=usage, received=repr(spec))
    try:
        op, dtype = vocab.canonical_op(parts[0]), vocab.canonical_dtype(parts[1])
    except PolicyError as exc:
        raise InputError(f"malformed shape spec {spec!r}: {exc.reason}", expected=usage, received=repr(spec),
                         hint=exc.hint) from None
    values = [int(v) for v in parts[2].split("x")]
    names = next((n for n in _SPEC_DIMS.get(op, ()) if len(n) == len(values)), None)
    if names is None:
        forms = " or ".join("x".join(n) for n in _SPEC_DIMS.get(op, ())) or "(not tunable)"
        raise InputError(f"shape spec {spec!r} has {len(values)} dims", expected=f"{op} dims {forms}",
                         received=parts[2])
    dims = dict(zip(names, values))
    options: dict[str, Any] = {}
    if op == "matmul":
        dims = {"batch": dims.get("batch", 1), "m": dims["m"], "n": dims["n"], "k": dims["k"]}
        layout = parts[3].lower() if len(parts) == 4 else "nn"
        if layout not in _LAYOUTS:
            raise InputError(f"unknown layout {layout!r} in {spec!r}", expected=", ".join(_LAYOUTS), received=layout)
        options["layout"] = list(_LAYOUTS[layout])
    elif op == "attention":
        options["is_causal"] = len(parts) == 4 and parts[3].lower() == "causal"
    return Target(op, dtype, device, dims, options)


def targets_from_specs(specs: Iterable[str], device: str = "cpu") -> list[Target]:
    """Targets from shape specs (comma-separated strings are split), duplicates dropped."""
    flat = [s for spec in specs for s in str(spec).split(",") if s.strip()]
    return _unique(parse_spec(s, device) for s in flat)


def _unique(targets: Iterable[Target]) -> list[Target]:
    seen: dict[tuple, Target] = {}
    for t in targets:
        seen.setdefault(t.key, t)
    return list(seen.values())


# ============================================================================================== recording
class Recording:
    """What a workload called, in first-seen order: ``targets`` and how often each was seen (``counts``)."""

    def __init__(self) -> None:
        self._targets: dict[tuple, Target] = {}
        self.counts: dict[tuple, int] = {}

    @property
    def targets(self) -> list[Target]:
        return list(self._targets.values())

    def add(self, target: Target | None) -> None:
        if target is None or target.op not in TUNABLE_OPS:
            return
        self._targets.setdefault(target.key, target)
        self.counts[target.key] = self.counts.get(target.key, 0) + 1

    def add_dispatch(self, records: Iterable[Any]) -> None:
        """Targets from ``xpuruntime.kernels`` dispatch records (direct calls of its ops)."""
        for r in records:
            self.add(_target_from_record(r))


def _target_from_record(record: Any) -> Target | None:
    try:
        vocab.canonical_dtype(record.dtype)
    except PolicyError:
        return None
    options: dict[str, Any] = {}
    if record.op == "matmul" and len(record.shapes) == 2:
        options["layout"] = ["row", "row"]
    return Target(record.op, record.dtype, record.device, dict(record.dims), options)


@contextlib.contextmanager
def recording(*, torch_calls: bool = True) -> Iterator[Recording]:
    """Collect the tunable calls a workload makes inside the block.

    ``torch_calls`` also observes plain torch calls (``F.linear``, ``torch.matmul`` / ``@``, ``mm``, ``bmm``,
    ``F.scaled_dot_product_attention``, ``F.layer_norm``) through a ``TorchFunctionMode`` that only looks: what
    runs is unchanged. Calls of ``xpuruntime.kernels`` ops are read from the dispatch log.
    """
    from xpuruntime.kernels.dispatcher import dispatch_logging

    rec = Recording()
    observer = _torch_observer(rec) if torch_calls else contextlib.nullcontext()
    with dispatch_logging() as logged, observer:
        yield rec
    rec.add_dispatch(logged)


def _torch_observer(rec: Recording) -> Any:
    try:
        from xpuruntime.kernels import _observe
    except ImportError:  # no torch: only xpuruntime.kernels ops are recorded
        return contextlib.nullcontext()

    return _observe.Observer(rec.add)


# ============================================================================================== the tuner
@dataclass
class _Run:
    """One candidate's outcome."""

    candidate: Candidate
    output: Any = None


class Tuner:
    """Measures candidates per target and returns :class:`TuningRecord` (see the module notes).

    >>> Tuner(strategy="first_supported").tune([parse_spec("matmul:fp32:64x64x64")])[0].kernel  # doctest: +SKIP
    'default'

    ``kernels`` restricts candidates per op (``{"matmul": ["cublas", "cublaslt"]}``); ``policy`` is the base
    policy (its lists name the candidates; :func:`build_policy` keeps the rest of it). ``warmup``/``repeats``
    default to 5/20 on a GPU and 2/5 on the CPU. Without ``strategy``, the policy's ``auto_strategy`` (the original
    design's spelling) decides, else ``best_performance``. ``bucket="pow2"`` writes rules for ``m`` in power-of-two
    ranges instead of exact values (matmul).
    """

    def __init__(self, *, strategy: str | None = None, warmup: int | None = None, repeats: int | None = None,
                 kernels: Mapping[str, Sequence[str]] | None = None, policy: Any = None,
                 registry: KernelRegistry | None = None, min_speedup: float = 1.02, bucket: str = "exact",
                 check: bool = True, seed: int = 0) -> None:
        strategy = strategy or _policy_strategy(policy) or "best_performance"
        if strategy not in STRATEGIES:
            raise PolicyError(f"unknown tuning strategy {strategy!r}", expected=f"one of {', '.join(STRATEGIES)}",
                              received=repr(strategy))
        if bucket not in _BUCKETS:
            raise PolicyError(f"unknown bucket {bucket!r}", expected=f"one of {', '.join(_BUCKETS)}",
                              received=repr(bucket))
        for name, value in (("warmup", warmup), ("repeats", repeats)):
            if value is not None and (not isinstance(value, int) or value < (0 if name == "warmup" else 1)):
                raise PolicyError(f"invalid {name}", expected="a positive integer", received=repr(value))
        from xpuruntime.kernels.active import as_policy

        self.strategy, self.warmup, self.repeats = strategy, warmup, repeats
        self.kernels = {vocab.canonical_op(op): [vocab.canonical_kernel(op, k) for k in ks]
                        for op, ks in (kernels or {}).items()}
        self.policy = as_policy(policy)
        self.registry = registry if registry is not None else get_registry()
        self.min_speedup, self.bucket, self.check, self.seed = float(min_speedup), bucket, check, seed
        from xpuruntime.runtime.fingerprint import fingerprint

        self.fingerprint = fingerprint().hash

    # -- public ------------------------------------------------------------------------------------------
    def tune(self, targets: Iterable[Target], progress: Callable[[Target, TuningRecord], None] | None = None
             ) -> list[TuningRecord]:
        """One record per target, in order; ``progress(target, record)`` is called after each."""
        records = []
        for target in targets:
            record = self.tune_one(target)
            records.append(record)
            if progress is not None:
                progress(target, record)
        return records

    def tune_one(self, target: Target) -> TuningRecord:
        """Measure (or, for ``first_supported``, try) the candidates for one target."""
        if target.op not in TUNABLE_OPS:
            raise UnsupportedOperationError(f"op {target.op!r} cannot be tuned", expected=", ".join(TUNABLE_OPS),
                                            received=target.op)
        ctx = target.context()
        warmup, repeats = self._budget(target.device)
        runs = self._measure(target, ctx, self._candidates(target, ctx), warmup, repeats)
        chosen = self._choose(runs, self.registry.default(target.op).name)
        timer = "none" if self.strategy == "first_supported" else (
            "cuda_events" if target.device == "cuda" else "perf_counter")
        return TuningRecord(
            op=target.op, dtype=target.dtype, device=target.device, dims=dict(target.dims), when=self._when(target),
            kernel=chosen.kernel if chosen else vocab.DEFAULT, params=chosen.params if chosen else None,
            candidates=tuple(r.candidate for r in runs), strategy=self.strategy, timer=timer,
            warmup=warmup if timer != "none" else 0, repeats=repeats if timer != "none" else 0,
            fingerprint=self.fingerprint, options=dict(target.options),
            baseline=self.registry.default(target.op).name)

    # -- candidates ----------------------------------------------------------------------------------------
    def _names(self, op: str) -> list[str]:
        """Candidate kernels in the order ``first_supported`` tries them; the default is always among them."""
        if op in self.kernels:
            names = list(self.kernels[op])
        else:
            pref = self.policy.kernels.preference(op)
            named = [k for k in (pref.prefer if pref else ()) if k not in (vocab.AUTO, vocab.DEFAULT)]
            names = named or self.registry.kernels(op)
        default = self.registry.default(op).name
        names = [default if n in (vocab.AUTO, vocab.DEFAULT) else n for n in names]
        return list(dict.fromkeys([*names, default]))

    def _candidates(self, target: Target, ctx: DispatchContext) -> list[tuple[str, KernelImpl | None, Any, str | None]]:
        """``(kernel, impl, params, reason)`` in order; a reason means the candidate is skipped."""
        out: list[tuple[str, KernelImpl | None, Any, str | None]] = []
        for name in self._names(target.op):
            impl = self.registry.find(target.op, name)
            reason = "not registered in xpuruntime.kernels" if impl is None else impl.supports(ctx)
            if impl is None or reason is not None or impl.variants is None:
                out.append((name, impl, None, reason))
                continue
            try:
                out += [(name, impl, p, impl.supports(ctx, p)) for p in impl.variants(ctx)]
            except Exception as exc:  # noqa: BLE001 - a variant lookup that fails is reported, not raised
                out.append((name, impl, None, f"could not list its variants: {_short(exc)}"))
        return out

    # -- measuring -------------------------------------------------------------------------------------------
    def _measure(self, target: Target, ctx: DispatchContext, candidates: list[tuple], warmup: int,
                 repeats: int) -> list[_Run]:
        """Run the default first (the reference every other result is checked against), then the rest."""
        default = self.registry.default(target.op).name
        runs: list[_Run | None] = [None] * len(candidates)
        reference = None
        first = next((i for i, c in enumerate(candidates) if c[0] == default and c[3] is None), None)
        if first is not None:
            runs[first] = self._run(target, candidates[first][1], None, first, warmup, repeats, None)
            reference = runs[first].output if runs[first].candidate.status == "ok" else None  # type: ignore[union-attr]
        found = False
        for i, (name, impl, params, reason) in enumerate(candidates):
            if runs[i] is None:
                runs[i] = self._one(target, name, impl, params, reason, i, warmup, repeats, reference, found)
            found = found or runs[i].candidate.status == "ok"  # type: ignore[union-attr]
        return [r for r in runs if r is not None]

    def _one(self, target: Target, name: str, impl: KernelImpl | None, params: Any, reason: str | None, index: int,
             warmup: int, repeats: int, reference: Any, found: bool) -> _Run:
        if reason is not None or impl is None:
            return _Run(Candidate(name, "skipped", reason=reason or "not registered", params=params))
        if found and self.strategy == "first_supported":
            return _Run(Candidate(name, "not_measured", reason="an earlier candidate applies", params=params))
        return self._run(target, impl, params, index, warmup, repeats, reference)

    def _run(self, target: Target, impl: KernelImpl, params: Any, index: int, warmup: int, repeats: int,
             reference: Any) -> _Run:
        bench = _BENCHES[target.op]
        try:
            fn = impl.bind(params)
            output = bench.call(fn, bench.make(target, self.seed))  # the inputs every candidate is checked on
            error = _check(output, reference, target.dtype) if self.check else None
            if error:
                return _Run(Candidate(impl.name, "failed", reason=error, params=params))
            if self.strategy == "first_supported":
                return _Run(Candidate(impl.name, "ok", params=params), output)
            args = bench.make(target, self.seed + 1 + index)  # fresh inputs for the timing
            times = _time(lambda: bench.call(fn, args), target.device, warmup, repeats)
        except Exception as exc:  # noqa: BLE001 - any kernel failure is a recorded outcome
            return _Run(Candidate(impl.name, "failed", reason=_short(exc), params=params))
        times = [round(t, 6) for t in times]
        return _Run(Candidate(impl.name, "ok", statistics.median(times), tuple(times), params=params), output)

    def _choose(self, runs: list[_Run], default: str) -> Candidate | None:
        ok = [r.candidate for r in runs if r.candidate.status == "ok"]
        if not ok or self.strategy == "first_supported":
            return ok[0] if ok else None
        best = min(ok, key=lambda c: c.time_ms)
        reference = next((c for c in ok if c.kernel == default and not c.params), None)
        if reference is None or best is reference or best.time_ms * self.min_speedup < reference.time_ms:
            return best
        return reference

    def _budget(self, device: str) -> tuple[int, int]:
        gpu = device == "cuda"
        return (self.warmup if self.warmup is not None else (5 if gpu else 2),
                self.repeats if self.repeats is not None else (20 if gpu else 5))

    def _when(self, target: Target) -> dict[str, Any]:
        when: dict[str, Any] = {"dtype": target.dtype, **target.dims}
        if self.bucket == "pow2" and target.op == "matmul":
            m = target.dims["m"]
            hi = 1 << max(0, (m - 1).bit_length())
            when["m"] = f"{hi // 2 + 1}..{hi}" if hi > 1 else "0..1"
        return when


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__


def _time(call: Callable[[], Any], device: str, warmup: int, repeats: int) -> list[float]:
    """Per-call times in ms: CUDA events on a GPU (one pair per repeat), perf_counter on the CPU."""
    for _ in range(warmup):
        call()
    if device != "cuda":
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            call()
            times.append((time.perf_counter() - start) * 1e3)
        return times
    import torch

    torch.cuda.synchronize()
    pairs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(repeats)]
    for start, end in pairs:
        start.record()
        call()
        end.record()
    torch.cuda.synchronize()
    return [start.elapsed_time(end) for start, end in pairs]


def _check(output: Any, reference: Any, dtype: str) -> str | None:
    """None when ``output`` matches the default kernel's ``reference`` (relative Frobenius error), else why not."""
    if reference is None:
        return None
    if tuple(output.shape) != tuple(reference.shape):
        return f"wrong output shape {tuple(output.shape)} (the default gives {tuple(reference.shape)})"
    diff, scale = _norms(output, reference)
    tol = _TOLERANCE.get(dtype, 1e-2)
    if not math.isfinite(diff) or diff / (scale or 1.0) > tol:
        return f"wrong result: relative error {diff / (scale or 1.0):.2e} against the default kernel (tolerance {tol:.0e})"
    return None


def _norms(output: Any, reference: Any, rows: int = 4096) -> tuple[float, float]:
    """``(|output - reference|, |reference|)`` in float32 blocks of rows (outputs can be gigabytes)."""
    out2 = output.reshape(-1, output.shape[-1]) if output.dim() > 1 else output.reshape(1, -1)
    ref2 = reference.reshape(-1, reference.shape[-1]) if reference.dim() > 1 else reference.reshape(1, -1)
    diff = scale = 0.0
    for start in range(0, out2.shape[0], rows):
        o, r = out2[start:start + rows].float(), ref2[start:start + rows].float()
        diff += float((o - r).square().sum())
        scale += float(r.square().sum())
    return math.sqrt(diff), math.sqrt(scale)


# ============================================================================================== op benches
@dataclass(frozen=True)
class _Bench:
    make: Callable[[Target, int], tuple]
    call: Callable[[Callable[..., Any], tuple], Any]


def _torch_dtype(name: str) -> Any:
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "fp64": torch.float64}[name]


def _device(target: Target) -> Any:
    import torch

    return torch.device("cuda", torch.cuda.current_device()) if target.device == "cuda" else torch.device(target.device)


def _randn(shape: Sequence[int], target: Target, gen: Any, *, col: bool = False, scale: float = 1.0) -> Any:
    """Normal random values (never zeros); ``col`` lays the last two dims out column-major."""
    import torch

    dims = list(shape)
    if col:
        dims[-2], dims[-1] = dims[-1], dims[-2]
    t = torch.randn(dims, generator=gen, device=_device(target), dtype=torch.float32).mul_(scale)
    t = t.to(_torch_dtype(target.dtype))
    return t.transpose(-1, -2) if col else t


def _generator(target: Target, seed: int) -> Any:
    import torch

    gen = torch.Generator(device=_device(target))
    gen.manual_seed(seed)
    return gen


def _make_matmul(target: Target, seed: int) -> tuple:
    gen = _generator(target, seed)
    (a_shape, b_shape), _ = _matmul_shapes(target)
    la, lb = target.options.get("layout") or ("row", "row")
    scale = 1.0 / math.sqrt(max(1, target.dims["k"]))  # outputs of order 1 in any dtype
    return _randn(a_shape, target, gen, col=la == "col"), _randn(b_shape, target, gen, col=lb == "col", scale=scale)


def _make_layernorm(target: Target, seed: int) -> tuple:
    gen = _generator(target, seed)
    rows, hidden = target.dims["rows"], target.dims["hidden"]
    x = _randn((rows, hidden), target, gen)
    return x, _randn((hidden,), target, gen), _randn((hidden,), target, gen), 1e-5


def _make_attention(target: Target, seed: int) -> tuple:
    gen = _generator(target, seed)
    (q, k, v), _ = _attention_shapes(target)
    return (_randn(q, target, gen), _randn(k, target, gen), _randn(v, target, gen), None, 0.0,
            bool(target.options.get("is_causal", False)), None)


_BENCHES = {
    "matmul": _Bench(_make_matmul, lambda fn, args: fn(*args)),
    "layernorm": _Bench(_make_layernorm, lambda fn, args: fn(*args)[0]),
    "attention": _Bench(_make_attention, lambda fn, args: fn(*args)),
}


def make_inputs(target: Target, seed: int = 0) -> tuple:
    """Seeded random inputs of the target's shape and layout, as the kernels take them (the tuner's own).

    >>> a, b = make_inputs(parse_spec("matmul:fp32:64x32x16:nt"))
    >>> a.shape, b.shape, b.stride()
    (torch.Size([64, 16]), torch.Size([16, 32]), (1, 16))
    """
    return _BENCHES[target.op].make(target, seed)


# ============================================================================================== policies
def build_policy(records: Sequence[TuningRecord], base: Any = None, *, all_rules: bool = False) -> Policy:
    """``base`` (a policy, mapping, file or None) with one rule per record put before its own rules.

    The op's ``prefer`` (and its params) stay as in ``base``, so shapes that were not tuned keep behaving as
    before; each rule names the winner with ``default`` behind it (``use: [cublaslt, default]``). A record whose
    winner ``base`` already runs for that shape (the default, mostly) adds no rule unless ``all_rules``: fewer
    rules, and torch calls stay unrouted where tuning changed nothing. The records keep every measurement.
    """
    from xpuruntime.kernels.active import as_policy

    policy = as_policy(base)
    kp = policy.kernels.copy()
    by_op: dict[str, list[TuningRecord]] = {}
    for record in records:
        by_op.setdefault(record.op, []).append(record)
    for op, recs in by_op.items():
        pref = kp.preference(op)
        data: dict[str, Any] = pref.to_data() if pref is not None else {}
        data = {"prefer": data} if not isinstance(data, dict) else dict(data)
        data.setdefault("prefer", vocab.DEFAULT)
        rules = _dedupe_rules([r.rule() for r in recs if all_rules or not _already(policy, r)])
        if rules:
            data["rules"] = rules + list(data.get("rules", []))
            kp.set(op, data)
    return Policy(kp, policy.execution)


def _already(policy: Policy, record: TuningRecord) -> bool:
    """Whether ``policy`` already runs the record's winner for its shape (then a rule adds nothing)."""
    if record.params:
        return False
    first = policy.kernels.resolve(record.op, record.dtype, **record.dims)[0]
    baseline = (vocab.DEFAULT, vocab.AUTO, record.baseline)
    return first == record.kernel or (first in baseline and record.kernel in baseline)


def _dedupe_rules(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for rule in rules:
        seen.setdefault(canonical_json(rule["when"]), rule)
    return list(seen.values())


# ============================================================================================== ONNX
_ONNX_DTYPES = {1: "fp32", 10: "fp16", 16: "bf16", 11: "fp64"}


def targets_from_onnx(model: Any, *, dims: Mapping[str, int] | None = None, device: str = "cpu",
                      dtype: str | None = None) -> tuple[list[Target], list[str]]:
    """The MatMul and Gemm shapes of an ONNX model, and notes on nodes left out.

    Symbolic input dims (``batch``, ``seq``) take their value from ``dims``; one without a value is an
    :class:`~xpuruntime.errors.InputError` naming it. ``dtype`` overrides the model's element type (tune an
    fp32 model's shapes in bf16, say).
    """
    import onnx

    from xpuruntime._graph_checks import refuse_impossible

    proto = _onnx_model(model)
    refuse_impossible(proto, "the model", "onnx's shape inference")
    _fix_dims(proto, dict(dims or {}))
    inferred = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    shapes = _value_shapes(inferred)
    targets, notes = [], []
    for node in inferred.graph.node:
        if node.op_type not in ("MatMul", "Gemm"):
            continue
        target = _node_target(node, shapes, device, dtype)
        if isinstance(target, str):
            notes.append(f"{node.name or node.op_type}: {target}")
        else:
            targets.append(target)
    return _unique(targets), notes


def _onnx_model(model: Any) -> Any:
    import onnx

    from xpuruntime._models import load_model_source

    if isinstance(model, onnx.ModelProto):
        proto = onnx.ModelProto()
        proto.CopyFrom(model)
        return proto
    return load_model_source(model).proto


def _fix_dims(proto: Any, dims: dict[str, int]) -> None:
    inits = {i.name for i in proto.graph.initializer}
    missing = []
    for value in proto.graph.input:
        if value.name in inits:
            continue
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param:
                if dim.dim_param in dims:
                    dim.dim_value = int(dims[dim.dim_param])
                else:
                    missing.append(f"{value.name}.{dim.dim_param}")
            elif not dim.HasField("dim_value"):
                missing.append(f"{value.name}.?")
    if missing:
        names = sorted({m.split(".", 1)[1] for m in missing})
        raise InputError("the model has symbolic input dims without a value", expected="a value for each",
                         received=", ".join(missing), hint=" ".join(f"--dim {n}=N" for n in names))


def _value_shapes(model: Any) -> dict[str, tuple[list[int] | None, int]]:
    out: dict[str, tuple[list[int] | None, int]] = {}
    for value in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        tt = value.type.tensor_type
        known = all(d.HasField("dim_value") for d in tt.shape.dim) and tt.HasField("shape")
        out[value.name] = ([d.dim_value for d in tt.shape.dim] if known else None, tt.elem_type)
    for init in model.graph.initializer:
        out[init.name] = (list(init.dims), init.data_type)
    return out


def _node_target(node: Any, shapes: dict, device: str, dtype: str | None) -> Target | str:
    (a, a_type), (b, b_type) = (shapes.get(n, (None, 0)) for n in node.input[:2])
    if a is None or b is None:
        return "input shapes unknown after shape inference"
    name = dtype or _ONNX_DTYPES.get(a_type)
    if name is None:
        return f"element type {a_type} is not a float type the kernels tune"
    if len(a) < 2 or len(b) < 2:
        return "a 1-D operand (left to the default kernel)"
    if node.op_type == "Gemm":
        attrs = {x.name: x.i for x in node.attribute}
        ta, tb = attrs.get("transA", 0), attrs.get("transB", 0)
        m, k = (a[1], a[0]) if ta else (a[0], a[1])
        n = b[0] if tb else b[1]
        layout = ["col" if ta else "row", "col" if tb else "row"]
        return Target("matmul", name, device, {"batch": 1, "m": m, "n": n, "k": k}, {"layout": layout})
    if len(b) == 2:
        return Target("matmul", name, device, {"batch": 1, "m": math.prod(a[:-1]), "n": b[1], "k": a[-1]},
                      {"layout": ["row", "row"]})
    batch = math.prod(_broadcast(a[:-2], b[:-2]))
    return Target("matmul", name, device, {"batch": batch, "m": a[-2], "n": b[-1], "k": a[-1]},
                  {"layout": ["row", "row"]})


def _broadcast(x: list[int], y: list[int]) -> list[int]:
    n = max(len(x), len(y))
    x, y = [1] * (n - len(x)) + x, [1] * (n - len(y)) + y
    return [max(p, q) for p, q in zip(x, y)]


def with_tunable_op(policy: Any) -> Policy:
    """``policy`` with ``matmul`` preferring ``auto`` (ONNX Runtime's TunableOp), its rules and params kept; a
    policy that names a matmul kernel is returned unchanged."""
    from xpuruntime.kernels.active import as_policy

    policy = as_policy(policy)
    pref = policy.kernels.preference("matmul")
    if pref is not None and pref.prefer not in ((vocab.DEFAULT,), (vocab.AUTO,)):
        return policy
    data: Any = pref.to_data() if pref is not None else {}
    data = dict(data) if isinstance(data, dict) else {}
    data["prefer"] = vocab.AUTO
    return Policy(policy.kernels.copy().set("matmul", data), policy.execution)
