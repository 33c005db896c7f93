"""KernelPolicy: which kernel each op should use, optionally by dtype and shape.

A preference is one kernel, an ordered list (first that applies wins), ``auto`` or
``default``, and may carry rules. In YAML::

    kernels:
      attention: [flash, efficient]
      matmul:
        prefer: cublas
        rules:
          - when: {dtype: bf16, k: ">=4096"}
            use: cublaslt
          - when: {dtype: [fp16, bf16], m: "1..64"}
            use: [triton, cublas]

Rules are tried in order; the first whose every condition holds decides. A dim condition
is an integer (equal), a comparison string (``">=4096"``, ``"<64"``, ``"!=1"``), an
inclusive range (``"128..1024"``) or a list of integers (any of).

A preference or a rule may carry ``params``: per kernel it names, plain data the kernel is called with,
for example the cuBLASLt algorithm an ``nvmath`` matmul is pinned to (written by ``xpuruntime tune``)::

          - when: {dtype: bf16, m: 8192, n: 768, k: 768}
            use: [nvmath, default]
            params:
              nvmath: {algorithm: {id: 66, tile: 18, stages: 20, ...}, layout: [row, col]}

Params are checked here as data (JSON-like: strings, numbers, booleans, null, lists, string-keyed
mappings) and keyed by a kernel the same entry uses; what they mean is the kernel's business (the
registry checks them when it dispatches). A policy without params hashes exactly as before.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Union

from xpuruntime.errors import PolicyError, did_you_mean, short_repr
from xpuruntime.policies import vocabulary as vocab
from xpuruntime.policies._common import MAX_INT, Change, check_plain_data, content_hash, diff_dicts

__all__ = ["KernelPolicy", "Preference", "Rule", "DimCondition", "KernelSpecLike", "Params"]

Params = Mapping[str, Mapping[str, Any]]  # kernel -> its parameters (plain data; read-only by convention)

KernelSpecLike = Union[str, Iterable[str], Mapping[str, Any], "Preference"]

_CMP = re.compile(r"^\s*(>=|<=|==|!=|>|<)?\s*(\d+)\s*$")
_RANGE = re.compile(r"^\s*(\d+)\s*\.\.\s*(\d+)\s*$")
_OPS = {
    "==": lambda x, v: x == v,
    "!=": lambda x, v: x != v,
    ">=": lambda x, v: x >= v,
    "<=": lambda x, v: x <= v,
    ">": lambda x, v: x > v,
    "<": lambda x, v: x < v,
}
_COND_HELP = "an integer, a comparison like '>=4096' or '<64', a range like '128..1024', or a list of integers"


@dataclass(frozen=True)
class DimCondition:
    """One shape condition: ``cmp`` is one of ==, !=, >=, <=, >, <, in, range."""

    cmp: str
    value: int | tuple[int, ...]

    @classmethod
    def parse(cls, raw: object, field: str) -> DimCondition:
        if isinstance(raw, bool) or raw is None:
            pass
        elif isinstance(raw, int) and 0 <= raw <= MAX_INT:
            return cls("==", raw)
        elif isinstance(raw, (list, tuple)) and raw and all(_is_count(v) for v in raw):
            return cls("in", tuple(sorted(set(raw))))
        elif isinstance(raw, str):
            return cls._parse_str(raw, field)
        raise PolicyError("invalid shape condition", field=field, expected=_COND_HELP, received=short_repr(raw))

    @classmethod
    def _parse_str(cls, raw: str, field: str) -> DimCondition:
        if (m := _CMP.match(raw)) and (value := _count(m.group(2))) is not None:
            return cls(m.group(1) or "==", value)
        if (m := _RANGE.match(raw)) and None not in (bounds := (_count(m.group(1)), _count(m.group(2)))) and \
                bounds[0] <= bounds[1]:  # type: ignore[operator]
            return cls("range", bounds)  # type: ignore[arg-type]
        raise PolicyError("invalid shape condition", field=field, expected=_COND_HELP, received=short_repr(raw))

    def matches(self, x: int) -> bool:
        if self.cmp == "in":
            return x in self.value  # type: ignore[operator]
        if self.cmp == "range":
            lo, hi = self.value  # type: ignore[misc]
            return lo <= x <= hi
        return _OPS[self.cmp](x, self.value)

    def to_data(self) -> int | str | list[int]:
        if self.cmp == "in":
            return list(self.value)  # type: ignore[arg-type]
        if self.cmp == "range":
            return "{}..{}".format(*self.value)  # type: ignore[str-format]
        return self.value if self.cmp == "==" else f"{self.cmp}{self.value}"  # type: ignore[return-value]


def _count(digits: str) -> int | None:
    """A decimal string as an int within MAX_INT, else None (never converts thousands of digits)."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 19 and int(digits) <= MAX_INT else None


def _text(key: object) -> str:
    return key if isinstance(key, str) else short_repr(key)


def _is_count(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_INT


@dataclass(frozen=True)
class Rule:
    """``when`` conditions (dtypes and dims) and the kernels to ``use`` when they all hold."""

    use: tuple[str, ...]
    dtypes: tuple[str, ...] | None = None
    dims: tuple[tuple[str, DimCondition], ...] = ()
    params: Params = field(default_factory=dict, hash=False)

    def matches(self, dtype: str | None, dims: Mapping[str, int]) -> bool:
        if self.dtypes is not None and (dtype is None or vocab.canonical_dtype(dtype) not in self.dtypes):
            return False
        return all(name in dims and cond.matches(int(dims[name])) for name, cond in self.dims)

    def to_data(self) -> dict[str, Any]:
        when: dict[str, Any] = {}
        if self.dtypes is not None:
            when["dtype"] = self.dtypes[0] if len(self.dtypes) == 1 else list(self.dtypes)
        when.update({name: cond.to_data() for name, cond in self.dims})
        data = {"when": when, "use": _kernels_to_data(self.use)}
        return {**data, "params": _params_to_data(self.params)} if self.params else data


@dataclass(frozen=True)
class Preference:
    """The whole preference of one op: the kernels to ``prefer`` and the ``rules`` that override it."""

    op: str
    prefer: tuple[str, ...] = (vocab.DEFAULT,)
    rules: tuple[Rule, ...] = ()
    params: Params = field(default_factory=dict, hash=False)

    def resolve(self, dtype: str | None = None, **dims: int) -> tuple[str, ...]:
        """Kernels in order of preference for one call: the first matching rule, else ``prefer``."""
        return self.match(dtype, dims)[0]

    def match(self, dtype: str | None, dims: Mapping[str, int]) -> tuple[tuple[str, ...], Params, int | None]:
        """``(kernels, params, rule index)`` for one call; the index is None when ``prefer`` applies.

        Answers are cached per (dtype, dims): a tuned policy has a rule per shape and is asked on every call.
        """
        if not self.rules:
            return self.prefer, self.params, None
        key = (dtype, tuple(dims.items()))
        cache: dict[Any, Any] = self.__dict__.setdefault("_cache", {})
        found = cache.get(key)
        if found is None:
            found = next(((r.use, r.params, i) for i, r in enumerate(self.rules) if r.matches(dtype, dims)),
                         (self.prefer, self.params, None))
            if len(cache) >= 4096:
                cache.clear()
            cache[key] = found
        return found

    def to_data(self) -> str | list[str] | dict[str, Any]:
        if not self.rules and not self.params:
            return _kernels_to_data(self.prefer)
        data: dict[str, Any] = {"prefer": _kernels_to_data(self.prefer)}
        if self.params:
            data["params"] = _params_to_data(self.params)
        return {**data, "rules": [r.to_data() for r in self.rules]} if self.rules else data

    def describe(self) -> str:
        text = _kernels_to_data(self.prefer)
        base = text if isinstance(text, str) else "[" + ", ".join(text) + "]"
        return base + (f" (+{len(self.rules)} rule{'s' * (len(self.rules) > 1)})" if self.rules else "")


_STRATEGIES = ("best_performance", "first_supported")
_STRATEGY_ALIASES = {"bestperformance": "best_performance", "firstsupported": "first_supported"}


def _strategy(value: object) -> str:
    """``best_performance`` / ``first_supported``; the original's ``BestPerformance`` / ``FirstSupported`` too."""
    text = str(getattr(value, "name", value)) if not isinstance(value, str) else value
    key = text.strip().lower().replace("-", "_")
    key = _STRATEGY_ALIASES.get(key.replace("_", ""), key)
    if key not in _STRATEGIES:
        raise PolicyError("unknown auto_strategy", field="kernels.auto_strategy", expected=", ".join(_STRATEGIES),
                          received=short_repr(value), hint=did_you_mean(key, _STRATEGIES))
    return key


def _kernels_to_data(kernels: tuple[str, ...]) -> str | list[str]:
    return kernels[0] if len(kernels) == 1 else list(kernels)


def _parse_kernels(op: str, raw: object, field: str) -> tuple[str, ...]:
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, (list, tuple)) or not items or not all(isinstance(k, str) for k in items):
        raise PolicyError(
            "invalid kernel preference",
            field=field,
            expected=f"a kernel name or a non-empty list of them ({', '.join(vocab.kernels_for(op))})",
            received=short_repr(raw),
        )
    kernels = tuple(_located(lambda k=k: vocab.canonical_kernel(op, k), field) for k in items)
    _check_kernel_list(kernels, field)
    return kernels


def _check_kernel_list(kernels: tuple[str, ...], field: str) -> None:
    if len(set(kernels)) != len(kernels):
        raise PolicyError("a kernel is listed twice", field=field, expected="each kernel once",
                          received=short_repr(list(kernels)))
    special = [k for k in kernels[:-1] if k in (vocab.AUTO, vocab.DEFAULT)]
    if special:
        raise PolicyError(f"{special[0]!r} may only come last in a list", field=field,
                          expected="named kernels first, then optionally 'auto' or 'default'",
                          received=short_repr(list(kernels)), hint=f"move {special[0]!r} to the end")


def _located(fn: Any, field: str) -> Any:
    try:
        return fn()
    except PolicyError as exc:
        raise exc.located(field_prefix=field) from None


_PARAMS_HELP = "a mapping of kernel name -> mapping of plain values (strings, numbers, booleans, null, lists, mappings)"


def _parse_params(op: str, raw: object, kernels: tuple[str, ...], field: str) -> Params:
    """``{kernel: {name: value}}`` for kernels of ``kernels`` only, canonical names, JSON-like values."""
    if not isinstance(raw, Mapping):
        raise PolicyError("invalid params", field=field, expected=_PARAMS_HELP, received=short_repr(raw))
    out: dict[str, Mapping[str, Any]] = {}
    for key, value in raw.items():
        where = f"{field}.{_text(key)}"
        if not isinstance(key, str):
            raise PolicyError("invalid params key", field=where, expected="a kernel name", received=short_repr(key))
        name = _located(lambda k=key: vocab.canonical_kernel(op, k), where)
        if name not in kernels or name in (vocab.AUTO, vocab.DEFAULT):
            raise PolicyError(f"params for {name!r}, which this entry does not use", field=where,
                              expected=f"params of a named kernel of {list(kernels)}", received=short_repr(key),
                              hint="params belong next to the kernel list that names the kernel")
        if not isinstance(value, Mapping):
            raise PolicyError("invalid kernel params", field=where, expected="a mapping of parameter -> value",
                              received=short_repr(value))
        out[name] = _plain_value(value, where)
    return out


def _plain_value(value: Any, field: str) -> Any:
    """A JSON-like copy of ``value`` (tuples become lists); anything else raises PolicyError."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        if abs(value) > MAX_INT:
            raise PolicyError("integer out of range", field=field, expected=f"within +-{MAX_INT}",
                              received=short_repr(value))
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise PolicyError("invalid number", field=field, expected="a finite number", received=short_repr(value))
        return value
    if isinstance(value, (list, tuple)):
        return [_plain_value(v, f"{field}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        bad = next((k for k in value if not isinstance(k, str)), None)
        if bad is not None:
            raise PolicyError("invalid params key", field=f"{field}.{_text(bad)}", expected="a string",
                              received=short_repr(bad))
        return {k: _plain_value(v, f"{field}.{k}") for k, v in value.items()}
    raise PolicyError("invalid params value", field=field, expected=_PARAMS_HELP, received=short_repr(value))


def _params_to_data(params: Params) -> dict[str, Any]:
    return {kernel: _thaw(values) for kernel, values in params.items()}


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    return [_thaw(v) for v in value] if isinstance(value, list) else value


def _parse_when(op: str, raw: object, field: str) -> tuple[tuple[str, ...] | None, tuple]:
    spec = vocab.get_op(op)
    if not isinstance(raw, Mapping) or not raw:
        raise PolicyError("invalid rule condition", field=field,
                          expected=f"a non-empty mapping of dtype and/or dims ({', '.join(spec.dims)})",
                          received=short_repr(raw))
    dtypes, dims = None, {}
    for key, value in raw.items():
        name = str(key).lower()
        if name == "dtype":
            values = [value] if isinstance(value, str) else value
            if not isinstance(values, (list, tuple)) or not values:
                raise PolicyError("invalid dtype condition", field=f"{field}.dtype",
                                  expected="a dtype or a list of dtypes", received=short_repr(value))
            dtypes = tuple(dict.fromkeys(_located(lambda v=v: vocab.canonical_dtype(v), f"{field}.dtype")
                                         for v in values))
        elif name in spec.dims:
            dims[name] = DimCondition.parse(value, f"{field}.{name}")
        else:
            raise PolicyError(f"unknown condition {short_repr(key)} for op {op!r}", field=f"{field}.{_text(key)}",
                              expected=f"dtype or one of the dims {', '.join(spec.dims)}",
                              received=short_repr(key), hint=did_you_mean(name, ("dtype", *spec.dims)))
    return dtypes, tuple(sorted(dims.items()))


def _parse_rule(op: str, raw: object, field: str) -> Rule:
    keys = ("when", "use", "params")
    if not isinstance(raw, Mapping) or not {"when", "use"} <= set(raw) or not set(raw) <= set(keys):
        extra = [k for k in raw if k not in keys] if isinstance(raw, Mapping) else []
        raise PolicyError("invalid rule", field=field, expected="a mapping with 'when' and 'use' (and optionally "
                          "'params')", received=short_repr(raw),
                          hint=did_you_mean(_text(extra[0]), keys) if extra else None)
    dtypes, dims = _parse_when(op, raw["when"], f"{field}.when")
    use = _parse_kernels(op, raw["use"], f"{field}.use")
    params = _parse_params(op, raw["params"], use, f"{field}.params") if "params" in raw else {}
    return Rule(use=use, dtypes=dtypes, dims=dims, params=params)


def parse_preference(op: str, raw: KernelSpecLike, field: str = "") -> Preference:
    """Validate one op's preference from any accepted spelling into a :class:`Preference`."""
    field = field or op
    op = _located(lambda: vocab.canonical_op(op), field)
    if isinstance(raw, Preference):
        return Preference(op, raw.prefer, raw.rules, raw.params)
    if not isinstance(raw, Mapping):
        return Preference(op, _parse_kernels(op, raw, field))
    unknown = [k for k in raw if k not in ("prefer", "rules", "params")]
    if unknown:
        raise PolicyError(f"unknown key {short_repr(unknown[0])}", field=f"{field}.{_text(unknown[0])}",
                          expected="'prefer', 'rules' and/or 'params'", received=short_repr(unknown[0]),
                          hint=did_you_mean(_text(unknown[0]), ("prefer", "rules", "params")))
    prefer = _parse_kernels(op, raw.get("prefer", vocab.DEFAULT), f"{field}.prefer")
    params = _parse_params(op, raw["params"], prefer, f"{field}.params") if "params" in raw else {}
    rules_raw = raw.get("rules", [])
    if not isinstance(rules_raw, (list, tuple)):
        raise PolicyError("rules must be a list", field=f"{field}.rules", expected="a list of {when, use}",
                          received=short_repr(rules_raw))
    rules = tuple(_parse_rule(op, r, f"{field}.rules[{i}]") for i, r in enumerate(rules_raw))
    return Preference(op, prefer, rules, params)


class KernelPolicy:
    """Op -> kernel preferences, validated against the vocabulary.

    >>> kp = KernelPolicy(matmul="cublasLt", attention="flash_v2")
    >>> kp
    KernelPolicy(matmul=cublaslt, attention=flash)
    >>> kp.set("attention", ["flash", "efficient"]).get("attention")
    ('flash', 'efficient')
    >>> kp.set("matmul", "cublaslt", when={"dtype": "bf16", "k": ">=4096"}).resolve("matmul", "bf16", k=8192)
    ('cublaslt',)
    """

    __hash__ = None  # type: ignore[assignment]  # mutable; use .hash for the content hash

    def __init__(self, preferences: Mapping[str, KernelSpecLike] | None = None, /, *,
                 auto_strategy: str | None = None, **ops: KernelSpecLike) -> None:
        self._prefs: dict[str, Preference] = {}
        self.auto_strategy = auto_strategy
        if preferences is not None and not isinstance(preferences, Mapping):
            raise PolicyError("invalid kernel policy", field="kernels", expected="a mapping of op -> kernel",
                              received=type(preferences).__name__)
        items = [*(preferences or {}).items(), *ops.items()]
        check_plain_data(dict(items), "kernels")
        spelled: dict[str, str] = {}
        for op, raw in items:
            pref = parse_preference(str(op), raw, f"kernels.{op}")
            if pref.op in spelled:  # `matmul` + `MatMul`, `matmul` + `gemm`: one would silently win
                raise PolicyError(f"op {pref.op!r} is given twice", field=f"kernels.{op}",
                                  expected="each op once (aliases and spellings name the same op)",
                                  received=f"{spelled[pref.op]!r} and {str(op)!r}",
                                  hint=f"keep one of them, spelled {pref.op!r}")
            spelled[pref.op] = str(op)
            self._put(pref)

    def _put(self, pref: Preference) -> None:
        self._prefs[pref.op] = pref

    # -- editing -------------------------------------------------------------------------
    def set(self, op: str, kernels: KernelSpecLike, *, when: Mapping[str, Any] | None = None,
            params: Params | None = None) -> KernelPolicy:
        """Set an op's preference; with ``when``, append a rule instead. Returns self (chainable).

        ``params`` maps a kernel named in ``kernels`` to its parameters, e.g.
        ``kp.set("matmul", ["nvmath", "default"], when={"m": 8192}, params={"nvmath": {"algorithm": {...}}})``.
        """
        extra = {} if params is None else {"params": params}
        check_plain_data(extra, f"kernels.{op}")
        if when is None:
            raw = {"prefer": kernels, **extra} if extra else kernels
            self._put(parse_preference(op, raw, f"kernels.{op}"))
            return self
        current = self.preference(op) or Preference(vocab.canonical_op(op))
        index = len(current.rules)
        rule = _parse_rule(current.op, {"when": when, "use": kernels, **extra}, f"kernels.{op}.rules[{index}]")
        self._put(Preference(current.op, current.prefer, current.rules + (rule,), current.params))
        return self

    def remove(self, op: str) -> KernelPolicy:
        """Drop an op's preference (the engine default applies again). Returns self."""
        self._prefs.pop(vocab.canonical_op(op), None)
        return self

    def merge(self, other: KernelPolicy | Mapping[str, KernelSpecLike]) -> KernelPolicy:
        """A new policy with ``other``'s preferences replacing this one's, op by op."""
        other = other if isinstance(other, KernelPolicy) else KernelPolicy(other)
        merged = self.copy()
        for pref in other._prefs.values():
            merged._put(pref)
        merged.auto_strategy = other.auto_strategy or self.auto_strategy
        return merged

    def copy(self) -> KernelPolicy:
        new = KernelPolicy(auto_strategy=self.auto_strategy)
        new._prefs = dict(self._prefs)
        return new

    # -- the original design's spellings (aliases) ---------------------------------------------
    @property
    def auto_strategy(self) -> str | None:
        """How ``auto`` is resolved when tuning: ``best_performance`` or ``first_supported`` (None: the tuner's
        default, ``best_performance``). An alias of :class:`~xpuruntime.kernels.tuner.Tuner`'s ``strategy``, used
        when a tuner is given this policy without a strategy; not part of policy files or the hash (what the
        tuner decides is written as rules, which are).

        >>> KernelPolicy(matmul="auto", auto_strategy="FirstSupported").auto_strategy
        'first_supported'
        """
        return self._auto_strategy

    @auto_strategy.setter
    def auto_strategy(self, value: str | None) -> None:
        self._auto_strategy = None if value is None else _strategy(value)

    def to_json(self, indent: int | None = 2) -> str:
        """JSON in the original design's shape: ``{"preferences": {...}, "auto_strategy": ...}`` (an alias;
        policy files are written by :meth:`save`).

        >>> KernelPolicy(matmul="cublasLt").to_json(indent=None)
        '{"preferences": {"matmul": "cublaslt"}, "auto_strategy": null}'
        """
        import json

        return json.dumps({"preferences": self.to_dict(), "auto_strategy": self.auto_strategy}, indent=indent)

    @classmethod
    def from_json(cls, text: str | bytes) -> KernelPolicy:
        """A KernelPolicy from :meth:`to_json`'s text, or from a JSON object of op -> kernel (a ``kernels`` section).

        >>> KernelPolicy.from_json('{"preferences": {"attention": "flash_v2"}, "auto_strategy": "first_supported"}')
        KernelPolicy(attention=flash)
        """
        import json

        try:
            data = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise PolicyError("invalid kernel policy JSON", field="kernels", expected="a JSON object such as "
                              '{"preferences": {"matmul": "cublaslt"}}', received=short_repr(str(exc))) from None
        if not isinstance(data, Mapping):
            raise PolicyError("invalid kernel policy JSON", field="kernels", expected="a JSON object",
                              received=type(data).__name__)
        if "preferences" not in data and "auto_strategy" not in data:
            return cls(data)
        extra = sorted(set(data) - {"preferences", "auto_strategy"})
        if extra:
            raise PolicyError(f"unknown key {extra[0]!r} in kernel policy JSON", field=f"kernels.{extra[0]}",
                              expected="preferences, auto_strategy", received=repr(extra[0]))
        return cls(data.get("preferences") or {}, auto_strategy=data.get("auto_strategy"))

    # -- reading -------------------------------------------------------------------------
    def get(self, op: str, default: Any = None) -> str | tuple[str, ...] | Any:
        """The preferred kernel (a name, or a tuple for an ordered list), ignoring rules."""
        pref = self.preference(op)
        if pref is None:
            return default
        return pref.prefer[0] if len(pref.prefer) == 1 else pref.prefer

    def preference(self, op: str) -> Preference | None:
        """The full :class:`Preference` of an op (with its rules), or None when unset."""
        return self._prefs.get(vocab.canonical_op(op))

    def resolve(self, op: str, dtype: str | None = None, **dims: int) -> tuple[str, ...]:
        """Kernels in order for one call of ``op``; ``("default",)`` when the op is unset."""
        pref = self.preference(op)
        return pref.resolve(dtype, **dims) if pref else (vocab.DEFAULT,)

    def params(self, op: str, dtype: str | None = None, **dims: int) -> Params:
        """Kernel -> params of the entry (rule or ``prefer``) that decides one call of ``op``.

        >>> KernelPolicy().set("matmul", ["nvmath", "default"], when={"m": 64},
        ...                    params={"nvmath": {"algorithm": {"id": 6}}}).params("matmul", m=64)["nvmath"]
        {'algorithm': {'id': 6}}
        """
        pref = self.preference(op)
        return pref.match(dtype, dims)[1] if pref else {}

    @property
    def preferences(self) -> dict[str, str | list[str] | dict[str, Any]]:
        """Op -> preference as plain data (what is written to a policy file)."""
        return self.to_dict()

    @property
    def ops(self) -> list[str]:
        return list(self._prefs)

    def __contains__(self, op: object) -> bool:
        try:
            return vocab.canonical_op(str(op)) in self._prefs
        except PolicyError:
            return False

    def __len__(self) -> int:
        return len(self._prefs)

    def __bool__(self) -> bool:
        return bool(self._prefs)

    # -- data ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {op: pref.to_data() for op, pref in self._prefs.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> KernelPolicy:
        return cls(data or {})

    @property
    def hash(self) -> str:
        """SHA-256 of the normalised content: the same for any key order or alias spelling."""
        return content_hash({"kernels": self.to_dict()})

    def diff(self, other: KernelPolicy) -> list[Change]:
        """Fields that differ, as ``kernels.<op>...`` paths with old and new values."""
        return diff_dicts(self.to_dict(), other.to_dict(), prefix="kernels")

    def save(self, path: str) -> Any:
        """Write a policy file holding this kernel section (YAML or JSON by suffix)."""
        from xpuruntime.policies.policy import Policy

        return Policy(kernels=self).save(path)

    @classmethod
    def load(cls, path: str) -> KernelPolicy:
        """Read the ``kernels`` section of a policy file."""
        from xpuruntime.policies.policy import Policy

        return Policy.load(path).kernels

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KernelPolicy):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        items = [f"{op}={p.describe()}" for op, p in self._prefs.items()]
        items += [f"auto_strategy={self.auto_strategy}"] if self.auto_strategy else []
        return f"KernelPolicy({', '.join(items)})"
