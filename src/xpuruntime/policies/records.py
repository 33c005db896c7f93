"""Tuning records: one measured choice per (op, dtype, shape or shape bucket, device fingerprint).

A record keeps the kernel chosen, its params (for ``nvmath``, the cuBLASLt algorithm), and every candidate that
was tried, with its measured times or the reason it was skipped or failed, so a reader can check the choice::

    >>> rec = TuningRecord.from_dict(data)                      # doctest: +SKIP
    >>> rec.kernel, rec.time_ms, rec.default_time_ms            # doctest: +SKIP
    ('cublaslt', 0.412, 0.455)
    >>> rec.rule()                                              # doctest: +SKIP
    {'when': {'dtype': 'bf16', 'batch': 1, 'm': 8192, 'n': 768, 'k': 768}, 'use': ['cublaslt', 'default']}

Records are plain data (JSON), validated on load and hashed by content (:func:`records_hash`); they travel
inside a :class:`~xpuruntime.policies.lock.Lock`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from xpuruntime.errors import PolicyError, short_repr
from xpuruntime.policies import vocabulary as vocab
from xpuruntime.policies._common import content_hash

__all__ = ["Candidate", "TuningRecord", "records_hash", "records_to_data", "records_from_data", "STRATEGIES",
           "STATUSES"]

STRATEGIES = ("best_performance", "first_supported")
STATUSES = ("ok", "skipped", "failed", "not_measured")
_TIMERS = ("cuda_events", "perf_counter", "none")


@dataclass(frozen=True)
class Candidate:
    """One kernel (with params) that was considered: ``ok`` with times, or why it was not measured."""

    kernel: str
    status: str = "ok"
    time_ms: float | None = None  # median of the repeats
    times_ms: tuple[float, ...] = ()
    reason: str | None = None
    params: Mapping[str, Any] | None = None

    @property
    def label(self) -> str:
        """``kernel`` or ``kernel#rank`` for a parameterised variant."""
        rank = None if not self.params else self.params.get("rank")
        return self.kernel if rank is None else f"{self.kernel}#{rank}"

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kernel": self.kernel, "status": self.status}
        if self.time_ms is not None:
            data["time_ms"] = self.time_ms
            data["times_ms"] = list(self.times_ms)
        if self.reason:
            data["reason"] = self.reason
        if self.params:
            data["params"] = dict(self.params)
        return data

    @classmethod
    def from_dict(cls, data: Any, field_name: str) -> Candidate:
        _mapping(data, field_name, ("kernel", "status"), ("time_ms", "times_ms", "reason", "params"))
        status = _choice(data["status"], STATUSES, f"{field_name}.status")
        time_ms = _number(data.get("time_ms"), f"{field_name}.time_ms")
        times = tuple(_number(t, f"{field_name}.times_ms[{i}]") for i, t in enumerate(data.get("times_ms") or []))
        params = data.get("params")
        if params is not None and not isinstance(params, Mapping):
            raise PolicyError("invalid candidate params", field=f"{field_name}.params", expected="a mapping",
                              received=short_repr(params))
        return cls(_text(data["kernel"], f"{field_name}.kernel"), status, time_ms, times,  # type: ignore[arg-type]
                   _optional_text(data.get("reason"), f"{field_name}.reason"), params)


@dataclass(frozen=True)
class TuningRecord:
    """A measured choice: ``when`` (dtype and dims, or a bucket) on ``device`` -> ``kernel`` (+ ``params``)."""

    op: str
    dtype: str
    device: str
    dims: Mapping[str, int]
    when: Mapping[str, Any]
    kernel: str
    params: Mapping[str, Any] | None = None
    candidates: tuple[Candidate, ...] = ()
    strategy: str = "best_performance"
    timer: str = "none"
    warmup: int = 0
    repeats: int = 0
    fingerprint: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)  # layout, is_causal, ...: how it was measured
    baseline: str = vocab.DEFAULT  # the registry's default kernel for the op (``native`` for layernorm)

    @property
    def chosen(self) -> Candidate | None:
        """The candidate that was chosen (same kernel and params)."""
        return next((c for c in self.candidates if c.kernel == self.kernel and _same_params(c.params, self.params)),
                    None)

    @property
    def time_ms(self) -> float | None:
        chosen = self.chosen
        return None if chosen is None else chosen.time_ms

    @property
    def default_time_ms(self) -> float | None:
        """The registry default's median time, when it was measured."""
        return next((c.time_ms for c in self.candidates
                     if c.kernel == self.baseline and not c.params and c.status == "ok"), None)

    @property
    def speedup(self) -> float | None:
        """default time / chosen time (1.0 when the default was kept)."""
        base, best = self.default_time_ms, self.time_ms
        return None if not base or not best else base / best

    @property
    def key(self) -> tuple[str, str, str, str]:
        from xpuruntime.policies._common import canonical_json

        return self.op, self.dtype, self.device, canonical_json(dict(self.when))

    def rule(self) -> dict[str, Any]:
        """The policy rule this record stands for (the default kernel behind a named one, as a safety net)."""
        use = [self.kernel] if self.kernel in (vocab.DEFAULT, self.baseline) else [self.kernel, vocab.DEFAULT]
        rule: dict[str, Any] = {"when": dict(self.when), "use": use}
        if self.params:
            rule["params"] = {self.kernel: dict(self.params)}
        return rule

    @property
    def hash(self) -> str:
        return content_hash(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        data = {"op": self.op, "dtype": self.dtype, "device": self.device, "dims": dict(self.dims),
                "when": dict(self.when), "kernel": self.kernel, "strategy": self.strategy, "timer": self.timer,
                "warmup": self.warmup, "repeats": self.repeats, "fingerprint": self.fingerprint,
                "baseline": self.baseline, "candidates": [c.to_dict() for c in self.candidates]}
        if self.params:
            data["params"] = dict(self.params)
        if self.options:
            data["options"] = dict(self.options)
        return data

    @classmethod
    def from_dict(cls, data: Any, field_name: str = "record") -> TuningRecord:
        """Validate plain data (as read from a lock) into a record; errors name the field."""
        required = ("op", "dtype", "device", "dims", "when", "kernel", "candidates")
        _mapping(data, field_name, required, ("params", "strategy", "timer", "warmup", "repeats", "fingerprint",
                                              "options", "baseline"))
        op = _located(lambda: vocab.canonical_op(data["op"]), f"{field_name}.op")
        dims = _dims(data["dims"], f"{field_name}.dims")
        when = data["when"]
        if not isinstance(when, Mapping):
            raise PolicyError("invalid record condition", field=f"{field_name}.when", expected="a mapping",
                              received=short_repr(when))
        candidates = data["candidates"]
        if not isinstance(candidates, list):
            raise PolicyError("invalid candidates", field=f"{field_name}.candidates", expected="a list",
                              received=short_repr(candidates))
        return cls(
            op=op, dtype=_text(data["dtype"], f"{field_name}.dtype"), device=_text(data["device"], f"{field_name}.device"),
            dims=dims, when=dict(when), kernel=_text(data["kernel"], f"{field_name}.kernel"),
            params=_optional_mapping(data.get("params"), f"{field_name}.params"),
            candidates=tuple(Candidate.from_dict(c, f"{field_name}.candidates[{i}]") for i, c in enumerate(candidates)),
            strategy=_choice(data.get("strategy", STRATEGIES[0]), STRATEGIES, f"{field_name}.strategy"),
            timer=_choice(data.get("timer", "none"), _TIMERS, f"{field_name}.timer"),
            warmup=_count(data.get("warmup", 0), f"{field_name}.warmup"),
            repeats=_count(data.get("repeats", 0), f"{field_name}.repeats"),
            fingerprint=_text(data.get("fingerprint", ""), f"{field_name}.fingerprint", empty=True),
            options=_optional_mapping(data.get("options"), f"{field_name}.options") or {},
            baseline=_text(data.get("baseline", vocab.DEFAULT), f"{field_name}.baseline"))


def records_to_data(records: Iterable[TuningRecord]) -> list[dict[str, Any]]:
    """Records as plain data, in order."""
    return [r.to_dict() for r in records]


def records_from_data(data: Any, field_name: str = "records") -> list[TuningRecord]:
    """Validate a list of plain records."""
    if not isinstance(data, list):
        raise PolicyError("invalid records", field=field_name, expected="a list of records", received=short_repr(data))
    return [TuningRecord.from_dict(r, f"{field_name}[{i}]") for i, r in enumerate(data)]


def records_hash(records: Sequence[TuningRecord]) -> str:
    """SHA-256 of the records' canonical JSON (order matters: rules are tried in order)."""
    return content_hash(records_to_data(records))


# -- validation helpers ------------------------------------------------------------------------------------------
def _mapping(data: Any, field_name: str, required: Sequence[str], optional: Sequence[str]) -> None:
    if not isinstance(data, Mapping):
        raise PolicyError("invalid entry", field=field_name, expected=f"a mapping with {', '.join(required)}",
                          received=short_repr(data))
    missing = [k for k in required if k not in data]
    unknown = [k for k in data if k not in (*required, *optional)]
    if missing or unknown:
        raise PolicyError("invalid entry", field=field_name,
                          expected=f"keys {', '.join(required)} (optional: {', '.join(optional)})",
                          received=f"missing {missing}" if missing else f"unknown key {short_repr(unknown[0])}")


def _located(fn: Any, field_name: str) -> Any:
    try:
        return fn()
    except PolicyError as exc:
        raise exc.located(field_prefix=field_name) from None


def _text(value: Any, field_name: str, *, empty: bool = False) -> str:
    if not isinstance(value, str) or (not value and not empty) or len(value) > 4096:
        raise PolicyError("invalid text", field=field_name, expected="a non-empty string", received=short_repr(value))
    return value


def _optional_text(value: Any, field_name: str) -> str | None:
    return None if value is None else _text(value, field_name, empty=True)


def _optional_mapping(value: Any, field_name: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise PolicyError("invalid mapping", field=field_name, expected="a mapping", received=short_repr(value))
    return dict(value)


def _choice(value: Any, choices: Sequence[str], field_name: str) -> str:
    if value not in choices:
        raise PolicyError("invalid value", field=field_name, expected=f"one of {', '.join(choices)}",
                          received=short_repr(value))
    return value


def _number(value: Any, field_name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise PolicyError("invalid time", field=field_name, expected="a finite number of milliseconds >= 0",
                          received=short_repr(value))
    return float(value)


def _count(value: Any, field_name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 1_000_000:
        raise PolicyError("invalid count", field=field_name, expected="an integer 0..1000000",
                          received=short_repr(value))
    return value


def _dims(value: Any, field_name: str) -> dict[str, int]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
                                                 and v >= 0 for k, v in value.items()):
        raise PolicyError("invalid dims", field=field_name, expected="a mapping of dim name -> integer >= 0",
                          received=short_repr(value))
    return dict(value)


def _same_params(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    return (dict(a) if a else None) == (dict(b) if b else None)
