"""Hashing and diffing shared by every policy object."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

__all__ = ["Change", "canonical_json", "content_hash", "diff_dicts", "flatten"]


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
