"""Benchmark one model under several policies and engines, side by side, in one process.

:func:`bench` builds every candidate (engine x policy), times its first run apart (compilation, graph capture,
conversions), warms each up, then times them **interleaved**: one call of each candidate per round, in an order
shuffled every round (seeded), so clock drift, thermal state, other load and the cost of following another engine
(cold caches) hit all of them alike. ``baseline=True`` adds, per xpuruntime candidate, the bare engine configured
the same way by hand (a plain ``onnxruntime.InferenceSession`` with the same model copy, session options and
providers; the same module cast and ``torch.compile``\\ d the same way; ``openvino.Core().compile_model`` with the
same config) and reports xpuruntime's overhead: the median over rounds of xpuruntime's time over the bare time of
the same round (pairs taken close in time cancel slow drift), with a 95% bootstrap interval over rounds
(``overhead_ci``). Two bare twins of one engine differ by a few percent on a busy host at ~1 ms per call (where
each instance's memory and objects landed): read an overhead inside that spread as "not told apart from free".
``baseline="same"`` pairs each candidate instead with **its own engine instance** driven by a hand-written loop
(the same ``InferenceSession`` and CUDA-graph binding, the same compiled or captured module, the same compiled
OpenVINO model: :mod:`xpuruntime.inference._bare`), which takes the instance spread out and leaves xpuruntime's
Python alone (``overhead_same``, ``overhead_same_ci``); ``baseline="both"`` adds both twins.

Memory: on CUDA, ``torch.cuda.max_memory_allocated`` around each candidate's build and first run (torch's
allocator only, so 0 for ONNX Runtime, whose arena it cannot see) and the drop of free device memory
(``torch.cuda.mem_get_info``, every allocator); on the CPU, the growth of the process's resident set
(``/proc/self/statm``) over the build and first run.

>>> result = xrt.bench("model.onnx", policies=[None, "fp16.yaml"], dims={"batch": 1})   # doctest: +SKIP
>>> print(result.table()); result.fastest().label                                       # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xpuruntime.errors import InputError, XpuRuntimeError

__all__ = ["bench", "BenchResult", "BenchRow", "paired_ratio"]

PolicyLike = Any  # a Policy, a mapping, a policy file path, or None (the default policy)


@dataclass
class BenchRow:
    """One candidate's figures (times in milliseconds)."""

    label: str
    engine: str
    policy: str  # the policy's name (file stem or given label) or "default"
    kind: str = "xpuruntime"  # xpuruntime | bare (a separate instance) | same-instance (xpuruntime's, by hand)
    call: str = "run"  # an xpuruntime row's call: session.run, or a prepared run (session.prepare)
    policy_hash: str | None = None
    load_s: float | None = None
    first_run_ms: float | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    mean_ms: float | None = None
    throughput: float | None = None  # items (first input's leading dim) per second at p50
    torch_peak_mb: float | None = None
    device_mem_mb: float | None = None
    rss_mb: float | None = None
    overhead: float | None = None  # median over rounds of xpuruntime / bare in the same round (xpuruntime row)
    overhead_ci: list[float] | None = None  # its 95% bootstrap interval over rounds
    overhead_same: float | None = None  # the same against the engine's own instance driven by hand
    overhead_same_ci: list[float] | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BenchResult:
    """Every candidate's row, the run's settings and the environment."""

    model: str
    device: str
    rows: list[BenchRow]
    settings: dict[str, Any]
    versions: dict[str, str]

    def fastest(self, kind: str = "xpuruntime") -> BenchRow | None:
        """The row with the lowest p50 among ``kind`` rows that ran."""
        ok = [r for r in self.rows if r.kind == kind and r.p50_ms is not None]
        return min(ok, key=lambda r: r.p50_ms) if ok else None  # type: ignore[arg-type,return-value]

    def to_dict(self) -> dict[str, Any]:
        best = self.fastest()
        return {"model": self.model, "device": self.device, "settings": self.settings, "versions": self.versions,
                "fastest": best.label if best else None, "rows": [r.to_dict() for r in self.rows]}

    def table(self) -> Any:
        """A rich Table of the rows (fastest xpuruntime row marked)."""
        from rich.table import Table

        best = self.fastest()
        table = Table(title=f"{self.model} on {self.device}")
        same = any(r.kind == "same-instance" for r in self.rows)
        cols = ["candidate", "first run", "p50", "p90", "p99", "items/s", "memory", "overhead"]
        cols += ["overhead, same instance"] if same else []
        for col in cols:
            table.add_column(col, justify="left" if col == "candidate" else "right")
        for r in self.rows:
            mark = " *" if best is r else ""
            if r.error:
                table.add_row(r.label, f"[red]{r.error[:60]}[/red]", *[""] * (len(cols) - 2))
                continue
            mem = r.torch_peak_mb if r.torch_peak_mb else r.device_mem_mb if r.device_mem_mb is not None else r.rss_mb
            table.add_row(r.label + mark, _ms(r.first_run_ms), _ms(r.p50_ms), _ms(r.p90_ms), _ms(r.p99_ms),
                          f"{r.throughput:.1f}" if r.throughput else "", f"{mem:.0f} MB" if mem is not None else "",
                          _overhead(r.overhead, r.overhead_ci),
                          *([_overhead(r.overhead_same, r.overhead_same_ci)] if same else []))
        return table

    def __rich__(self) -> Any:
        return self.table()


def _overhead(ratio: float | None, interval: list[float] | None) -> str:
    if not ratio:
        return ""
    ci = f" ({interval[0]:.3f}-{interval[1]:.3f})" if interval else ""
    return f"{ratio:.3f}x{ci}"


def _ms(v: float | None) -> str:
    return "" if v is None else f"{v:.3f} ms"


@dataclass
class _Candidate:
    row: BenchRow
    call: Callable[[], Any] | None = None
    close: Callable[[], None] = lambda: None
    samples: list[float] = field(default_factory=list)
    rounds: list[int] = field(default_factory=list)  # the round of each sample (pairs a bare twin's samples)
    pair: BenchRow | None = None  # the xpuruntime row a bare candidate measures against
    sibling: _Candidate | None = None  # a prepared row's run row (call="both"): same engine, same buffers
    buffers: tuple[dict[str, Any], dict[str, Any]] | None = None  # device I/O: the feeds and outputs it runs


def bench(model: Any, *, policies: Sequence[PolicyLike] | None = None, engines: Sequence[str] | str | None = None,
          device: str = "cpu", dims: Mapping[str, int] | None = None,
          shapes: Mapping[str, Sequence[int]] | None = None, feeds: Mapping[str, Any] | None = None,
          warmup: int = 10, repeat: int = 50, io: str = "host", baseline: bool | str = False,
          engine_options: Mapping[str, Mapping[str, Any]] | None = None, seed: int = 0,
          pairs: Sequence[tuple[str, PolicyLike]] | None = None, call: str = "run") -> BenchResult:
    """Time ``model`` under every engine x policy, interleaved, in this process.

    ``policies``: Policy objects, mappings, policy files or None (the default policy); ``engines``: names (default
    ``onnxruntime``, or ``torch`` for an ``nn.Module``); ``dims`` sizes symbolic dims, ``shapes`` whole inputs;
    ``io="device"`` feeds CUDA tensors and writes outputs into preallocated CUDA tensors (needs torch and CUDA);
    ``baseline``: True or ``"separate"`` (a bare twin built apart), ``"same"`` (the candidate's own instance
    driven by hand), ``"both"``; ``engine_options`` maps an engine name to its options
    (``{"torch": {"example_inputs": (x,)}}``);
    ``pairs`` (``[(engine, policy), ...]``, a policy may be ``(label, policy)``) replaces engines x policies; a
    third item, ``(engine, policy, options)``, gives that candidate its own engine options (two torch precision
    modes, say, timed in one interleaved loop). ``call``: how an xpuruntime candidate is called, ``"run"``
    (``session.run`` every call, every check), ``"prepared"`` (``session.prepare`` once, then the prepared run:
    :mod:`xpuruntime.inference.prepared`) or ``"both"`` (a second row per candidate, ``... (prepared)``, over the
    same engine instance and buffers, in the same rounds; each is paired with the same twins).

    >>> r = bench("model.onnx", policies=[None, {"execution": {"optimize_level": 1}}], repeat=20)  # doctest: +SKIP
    """
    _check_counts(warmup, repeat, io, device)
    calls = _calls(call)
    twins = _baselines(baseline)
    names = _engine_names(engines, model)
    pols = [(_policy_label(p, i), p) for i, p in enumerate(policies or [None])]
    options = engine_options or {}
    todo = [_pair(pair, i, options) for i, pair in enumerate(pairs)] if pairs is not None else \
        [(engine, label, policy, options.get(engine, {})) for engine in names for label, policy in pols]
    names = list(dict.fromkeys(e for e, _, _, _ in todo)) if pairs is not None else names
    cands = [_build(model, engine, label, policy, device, opts) for engine, label, policy, opts in todo]
    feed_set = _feeds(cands, feeds, dims, shapes, seed)
    for c in cands:
        c.row.call = calls[0]
    if len(calls) > 1:
        cands += [_prepared_row(c) for c in list(cands) if c.call is not None]
    if twins:
        cands += [b for c in list(cands) if c.call is not None and c.sibling is None for same in twins
                  for b in [_bare(c, model, device, same)] if b is not None]
    for c in cands:
        _first_run(c, feed_set, io, device)
    _warm(cands, warmup)
    gc.collect()  # garbage of the builds and warm-up is not charged to whichever candidate runs next
    _timed(cands, repeat, device, seed)
    by_row = {id(c.row): c for c in cands}
    for c in cands:
        _summarise(c, feed_set, by_row.get(id(c.pair)) if c.pair is not None else None, seed)
    for c in cands:  # call="both": a prepared row against its run row's twins
        if c.sibling is not None:
            for twin in cands:
                if twin.pair is c.sibling.row:
                    _pair_overhead(c, twin, seed)
    for c in cands:
        c.close()
    return BenchResult(str(model if isinstance(model, (str, os.PathLike)) else f"<{type(model).__name__}>"),
                       device, [c.row for c in cands], {"warmup": warmup, "repeat": repeat, "io": io,
                       "dims": dict(dims or {}), "shapes": {k: list(v) for k, v in (shapes or {}).items()},
                       "order": f"interleaved, shuffled each round (seed {seed})"}, _versions(names))


# -- building -------------------------------------------------------------------------------------
def _check_counts(warmup: int, repeat: int, io: str, device: str = "cuda") -> None:
    if warmup < 0 or repeat < 1:
        raise InputError("invalid warmup/repeat", expected="warmup >= 0 and repeat >= 1",
                         received=f"warmup={warmup}, repeat={repeat}")
    if io not in ("host", "device"):
        raise InputError(f"unknown io {io!r}", expected="'host' (numpy) or 'device' (CUDA tensors)", received=repr(io))
    if io == "device" and not str(device).startswith("cuda"):
        raise InputError("io='device' needs a CUDA device", expected="device='cuda' (or 'cuda:N') with io='device'",
                         received=f"device={device!r}", hint="use io='host' on the CPU")


def _engine_names(engines: Sequence[str] | str | None, model: Any) -> list[str]:
    if engines is None:
        is_file = isinstance(model, (str, os.PathLike, bytes)) or hasattr(model, "graph")
        return ["onnxruntime" if is_file else "torch"]
    return [e.strip() for e in engines.split(",")] if isinstance(engines, str) else list(engines)


def _pair(pair: Sequence[Any], index: int, options: Mapping[str, Mapping[str, Any]]) -> tuple[str, str, Any, Any]:
    if not isinstance(pair, (tuple, list)) or len(pair) not in (2, 3):
        raise InputError("a pair is (engine, policy) or (engine, policy, engine_options)",
                         expected="a 2- or 3-tuple", received=repr(pair)[:200])
    engine, policy = pair[0], pair[1]
    opts = pair[2] if len(pair) == 3 else options.get(engine, {})
    return engine, _policy_label(policy, index), policy, opts


def _policy_label(policy: PolicyLike, index: int) -> str:
    if policy is None:
        return "default"
    if isinstance(policy, (str, os.PathLike)):
        return Path(policy).stem
    if isinstance(policy, tuple) and len(policy) == 2 and isinstance(policy[0], str):
        return policy[0]
    return f"policy{index}"


def _build(model: Any, engine: str, label: str, policy: PolicyLike, device: str,
           options: Mapping[str, Any]) -> _Candidate:
    from xpuruntime.inference.engine import get_engine_class
    from xpuruntime.policies.policy import as_policy

    if isinstance(policy, tuple) and len(policy) == 2 and isinstance(policy[0], str):
        policy = policy[1]
    row = BenchRow(f"{engine}:{label}", engine, label)
    cand = _Candidate(row)
    try:
        pol = as_policy(policy)
        row.policy_hash = pol.hash
        with _memory(row, device):
            start = time.perf_counter()
            eng = get_engine_class(engine).create(model, device, pol, options)
            row.load_s = time.perf_counter() - start
        row.notes = [f"{v.kind} {v.subject}: {v.reason}" for v in eng.report.violations]
        cand.engine = eng  # type: ignore[attr-defined]
        cand.close = eng.close
        cand.call = lambda: None  # replaced once the feeds are known
    except XpuRuntimeError as exc:
        row.error = _error(exc)
    return cand


def _error(exc: BaseException) -> str:
    """An exception on one line (its first lines hold what and why), for a row; an engine library's own error
    (a bare twin's) is named by its type."""
    text = " ".join(str(exc).split())[:400]
    if isinstance(exc, XpuRuntimeError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _feeds(cands: list[_Candidate], feeds: Mapping[str, Any] | None, dims: Mapping[str, int] | None,
           shapes: Mapping[str, Sequence[int]] | None, seed: int) -> dict[str, np.ndarray]:
    from xpuruntime.inference.feeds import random_feeds

    live = [c for c in cands if c.call is not None]
    if feeds is not None or not live:
        return dict(feeds or {})
    infos = live[0].engine.input_info  # type: ignore[attr-defined]
    fixed = {}
    for info in infos:
        if shapes and info.name in shapes:
            fixed[info.name] = tuple(int(d) for d in shapes[info.name])
        else:
            fixed[info.name] = tuple(d if isinstance(d, int) and d > 0 else int((dims or {}).get(str(d), 1))
                                     for d in (info.shape or ()))
    return random_feeds(infos, fixed, seed=seed)


def _first_run(c: _Candidate, feeds: dict[str, Any], io: str, device: str) -> None:
    if c.call is None or c.row.error:
        return
    first = c.pair or (c.sibling.row if c.sibling is not None else None)
    if first is not None and first.error:  # a twin (a prepared row) of a candidate that failed: nothing to compare
        c.row.error, c.call = f"not run: {first.label} failed", None
        return
    prepared = c.row.kind == "xpuruntime" and c.row.call == "prepared"
    try:
        if prepared:  # session.prepare is the first run: timed and measured as one
            _io_buffers(c, feeds, io, device)
        else:
            c.call = _caller(c, feeds, io, device)
        with _memory(c.row, device, accumulate=True):
            start = time.perf_counter()
            if prepared:
                c.call = _caller(c, feeds, io, device)
            else:
                c.call()
            _sync(device)
            c.row.first_run_ms = (time.perf_counter() - start) * 1e3
    except Exception as exc:  # noqa: BLE001 - any failure of one candidate goes in its row; the others run
        c.row.error = _error(exc)
        c.call = None


def _caller(c: _Candidate, feeds: dict[str, Any], io: str, device: str) -> Callable[[], Any]:
    if c.row.kind != "xpuruntime":
        return c.bare_call(feeds, io)  # type: ignore[attr-defined,no-any-return]
    eng = c.engine  # type: ignore[attr-defined]
    prepared = c.row.call == "prepared"
    if io == "host" or not device.startswith("cuda"):
        if prepared:
            run = eng.prepare(feeds)
            return functools.partial(run, feeds)  # the feeds passed each call, as a hand loop passes them
        return functools.partial(eng.run, feeds)  # (partials: no Python frame of the harness's own in the timing)
    dev_feeds, outputs = _io_buffers(c, feeds, io, device)
    if prepared:
        return eng.prepare(dev_feeds, outputs=outputs)  # type: ignore[no-any-return]
    return functools.partial(eng.run, dev_feeds, outputs=outputs)


def _io_buffers(c: _Candidate, feeds: dict[str, Any], io: str, device: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Device I/O: the CUDA feeds and outputs an xpuruntime row runs, made once (a prepared row runs its run row's:
    one engine binds one set of buffers, two would rebind on every call); ({}, {}) for host I/O."""
    if io == "host" or not device.startswith("cuda") or c.row.kind != "xpuruntime":
        return {}, {}
    if c.buffers is None:
        sibling = c.sibling.buffers if c.sibling is not None else None
        c.buffers = sibling or _device_buffers(c.engine, feeds)  # type: ignore[attr-defined]
    return c.buffers


def _device_buffers(eng: Any, feeds: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    import torch

    dev = {k: torch.from_numpy(np.ascontiguousarray(v)).cuda() for k, v in feeds.items()}
    shaped = eng.run(feeds)
    outputs = {k: torch.empty(v.shape, dtype=getattr(torch, str(v.dtype)), device="cuda") for k, v in shaped.items()
               if isinstance(v, np.ndarray)}
    return dev, outputs


@contextlib.contextmanager
def _memory(row: BenchRow, device: str, accumulate: bool = False) -> Any:
    cuda = device.startswith("cuda") and _torch_cuda()
    rss0 = _rss_mb()
    if cuda:
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base, free0 = torch.cuda.memory_allocated(), torch.cuda.mem_get_info()[0]
    yield
    grow = max(0.0, _rss_mb() - rss0)
    row.rss_mb = (row.rss_mb or 0.0) + grow if accumulate else grow
    if cuda:
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
        drop = max(0.0, (free0 - torch.cuda.mem_get_info()[0]) / 2**20)
        row.torch_peak_mb = max(row.torch_peak_mb or 0.0, peak)
        row.device_mem_mb = (row.device_mem_mb or 0.0) + drop if accumulate else drop


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


def _torch_cuda() -> bool:
    import sys

    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_available())


def _sync(device: str) -> None:
    if device.startswith("cuda") and _torch_cuda():
        import torch

        torch.cuda.synchronize()


# -- timing ---------------------------------------------------------------------------------------
def _warm(cands: list[_Candidate], warmup: int) -> None:
    for _ in range(warmup):
        for c in cands:
            _guarded(c, c.call)


def _guarded(c: _Candidate, fn: Callable[[], Any] | None) -> None:
    if fn is None or c.call is None:
        return
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - any failure of one candidate goes in its row; the others run
        c.row.error = _error(exc)
        c.call = None


def _timed(cands: list[_Candidate], repeat: int, device: str, seed: int = 0) -> None:
    """``repeat`` rounds, one call of each candidate per round in an order shuffled every round (seeded)."""
    order, rng = list(cands), random.Random(seed)
    for i in range(repeat):
        rng.shuffle(order)
        for c in order:
            if c.call is None:
                continue
            start = time.perf_counter()
            _guarded(c, c.call)
            _sync(device)
            if c.call is not None:
                c.samples.append((time.perf_counter() - start) * 1e3)
                c.rounds.append(i)


def paired_ratio(num: Sequence[float], num_rounds: Sequence[int], den: Sequence[float], den_rounds: Sequence[int],
                 seed: int = 0, resamples: int = 2000) -> tuple[float, tuple[float, float]] | None:
    """The median over shared rounds of ``num / den`` and its 95% bootstrap interval (rounds resampled); None
    without a shared round.

    >>> ratio, (lo, hi) = paired_ratio([2.0, 2.2, 1.8], [0, 1, 2], [1.0, 1.1, 0.9], [0, 1, 2])
    >>> round(ratio, 6), round(lo, 6), round(hi, 6)
    (2.0, 2.0, 2.0)
    """
    other = dict(zip(den_rounds, den))
    ratios = np.array([v / other[r] for v, r in zip(num, num_rounds) if other.get(r)], dtype=float)
    if not ratios.size:
        return None
    resamples = max(200, min(resamples, 4_000_000 // ratios.size))  # at most ~32 MB of indices
    picks = np.random.default_rng(seed).integers(0, ratios.size, size=(resamples, ratios.size))
    medians = np.median(ratios[picks], axis=1)
    lo, hi = np.percentile(medians, [2.5, 97.5])
    return float(np.median(ratios)), (float(lo), float(hi))


def _summarise(c: _Candidate, feeds: dict[str, Any], twin: _Candidate | None = None, seed: int = 0) -> None:
    """Percentiles of ``c``'s samples; on a bare candidate, the overhead of its xpuruntime twin ``twin``."""
    if not c.samples or c.call is None:
        return
    p50, p90, p99 = np.percentile(c.samples, [50, 90, 99])
    c.row.p50_ms, c.row.p90_ms, c.row.p99_ms = float(p50), float(p90), float(p99)
    c.row.mean_ms = float(np.mean(c.samples))
    first = next(iter(feeds.values()), None)
    batch = int(first.shape[0]) if first is not None and getattr(first, "ndim", 0) else 1
    c.row.throughput = float(batch / (p50 / 1e3))
    if c.pair is not None and twin is not None:
        _pair_overhead(twin, c, seed)


def _pair_overhead(cand: _Candidate, twin: _Candidate, seed: int = 0) -> None:
    """``cand``'s (an xpuruntime row's) overhead over the bare or same-instance ``twin``, set on ``cand``'s row."""
    if not cand.samples or not twin.samples or cand.call is None or twin.call is None:
        return
    paired = paired_ratio(cand.samples, cand.rounds, twin.samples, twin.rounds, seed)
    if paired is not None and twin.row.kind == "same-instance":
        cand.row.overhead_same, cand.row.overhead_same_ci = paired[0], list(paired[1])
    elif paired is not None:
        cand.row.overhead, cand.row.overhead_ci = paired[0], list(paired[1])


def _versions(engines: Sequence[str]) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    from xpuruntime._version import __version__

    out = {"xpuruntime": __version__}
    for dist in ("onnxruntime", "onnxruntime-gpu", "openvino", "torch"):
        with contextlib.suppress(PackageNotFoundError):
            out[dist] = version(dist)
    return out


# -- bare engines ---------------------------------------------------------------------------------
_BASELINES = {True: (False,), "separate": (False,), "same": (True,), "both": (False, True)}


def _baselines(baseline: Any) -> tuple[bool, ...]:
    """``baseline`` as the twins to add per candidate (False: a separate instance, True: the same instance)."""
    if baseline is False or baseline is None:
        return ()
    if isinstance(baseline, (bool, str)) and baseline in _BASELINES:
        return _BASELINES[baseline]
    raise InputError("unknown baseline", expected="False, True (= 'separate'), 'separate', 'same' or 'both'",
                     received=repr(baseline), hint="'same' drives xpuruntime's own engine instance by hand")


_CALLS = {"run": ("run",), "prepared": ("prepared",), "both": ("run", "prepared")}


def _calls(call: Any) -> tuple[str, ...]:
    if isinstance(call, str) and call in _CALLS:
        return _CALLS[call]
    raise InputError("unknown call", expected="'run', 'prepared' or 'both'", received=repr(call),
                     hint="'prepared' times session.prepare's run: checked once, then the engine's call alone")


def _prepared_row(c: _Candidate) -> _Candidate:
    """A second row for ``c`` (``call="both"``): its engine called through a prepared run, in the same rounds."""
    row = BenchRow(f"{c.row.label} (prepared)", c.row.engine, c.row.policy, call="prepared",
                   policy_hash=c.row.policy_hash, load_s=c.row.load_s, notes=list(c.row.notes))
    cand = _Candidate(row, call=lambda: None, sibling=c)
    cand.engine = c.engine  # type: ignore[attr-defined]
    return cand


def _bare(c: _Candidate, model: Any, device: str, same: bool = False) -> _Candidate | None:
    """The same engine configured the same way without xpuruntime, paired with ``c``: a separate instance, or
    with ``same`` the xpuruntime engine's own instance driven by a hand-written loop."""
    from xpuruntime.inference import _bare as bare

    eng = c.engine  # type: ignore[attr-defined]
    maker = bare.same_instance if same else \
        {"onnxruntime": bare.onnxruntime, "torch": bare.torch, "openvino": bare.openvino}.get(eng.name)
    kind = "same-instance" if same else "bare"
    row = BenchRow(f"{kind} {c.row.engine}:{c.row.policy}", eng.name, c.row.policy, kind=kind)
    cand = _Candidate(row, pair=c.row)
    if maker is None:
        row.error = f"no bare counterpart for engine {eng.name!r}"
        return cand
    try:
        with _memory(row, device):
            start = time.perf_counter()
            cand.bare_call, row.notes = maker(eng)  # type: ignore[attr-defined]
            row.load_s = time.perf_counter() - start
        cand.call = lambda: None
    except Exception as exc:  # noqa: BLE001 - any failure of one candidate goes in its row; the others run
        row.error = _error(exc)
    return cand
