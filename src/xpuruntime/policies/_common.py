"""Hashing and diffing shared by every policy object."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from xpuruntime.errors import PolicyError, short_repr

__all__ = ["Change", "canonical_json", "content_hash", "diff_dicts", "flatten", "check_plain_data", "MAX_DEPTH",
           "MAX_INT"]

MAX_DEPTH = 32  # a policy nests about 6 levels (kernels.matmul.rules[0].when.dtype[0])
MAX_INT = 2**63 - 1  # every integer in a policy is a size, a count or milliseconds


@dataclass(frozen=True)
class Change:
    """One field that differs between two policies; ``None`` on a side means absent."""

    path: str
    old: Any
    new: Any

    def __str__(self) -> str:
        return f"{self.path}: {self.old!r} -> {self.new!r}"


def canonical_json(data: Any) -> str:
    """JSON with sorted keys and no whitespace: the byte form that hashes are taken of."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def content_hash(data: Any) -> str:
    """SHA-256 hex digest of :func:`canonical_json`."""
    return hashlib.sha256(canonical_json(data).encode("ascii")).hexdigest()


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> ``{"a.b.c": leaf}``; lists and scalars are leaves."""
    if isinstance(data, dict) and not data:
        return {}
    if not isinstance(data, dict):
        return {prefix: data} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def diff_dicts(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[Change]:
    """Leaf-by-leaf changes between two nested mappings, sorted by path."""
    a, b = flatten(old, prefix), flatten(new, prefix)
    return [Change(p, a.get(p), b.get(p)) for p in sorted(a.keys() | b.keys()) if a.get(p) != b.get(p)]


def check_plain_data(data: Any, field: str = "") -> None:
    """Refuse what no policy holds before validating it: nesting deeper than MAX_DEPTH (which would
    exhaust the interpreter's recursion) and integers beyond int64 (which cannot be printed or hashed).
    Iterative, so the check itself never recurses."""
    stack: list[tuple[Any, int, str]] = [(data, 0, field)]
    while stack:
        value, depth, path = stack.pop()
        if depth > MAX_DEPTH:
            raise PolicyError("the policy nests too deeply", field=path or None,
                              expected=f"at most {MAX_DEPTH} levels of mappings and lists", received="deeper nesting")
        if isinstance(value, (bytes, bytearray, memoryview)):
            raise PolicyError("bytes are not policy data", field=path or None, expected="text, numbers, lists, mappings",
                              received=short_repr(value), hint="decode it to text first")
        if isinstance(value, int) and not isinstance(value, bool) and not -MAX_INT <= value <= MAX_INT:
            raise PolicyError("integer out of range", field=path or None, expected=f"an integer within +-{MAX_INT}",
                              received=short_repr(value))
        if isinstance(value, Mapping):
            for key, item in value.items():
                sub = f"{path}.{_key_text(key)}" if path else _key_text(key)
                stack += [(key, depth + 1, sub), (item, depth + 1, sub)]
        elif isinstance(value, (list, tuple, set, frozenset)):
            stack += [(item, depth + 1, f"{path}[{i}]") for i, item in enumerate(value)]


def _key_text(key: Any) -> str:
    return key if isinstance(key, str) else short_repr(key)
