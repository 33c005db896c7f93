"""Policy: a KernelPolicy and an ExecutionPolicy in one versioned file.

>>> p = Policy(kernels={"matmul": "cublasLt"}, execution={"precision": "bf16"})
>>> p.save("policy.yaml")            # doctest: +SKIP
>>> Policy.load("policy.yaml") == p  # doctest: +SKIP
True
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from xpuruntime._io import atomic_write_text, read_bounded
from xpuruntime.errors import PolicyError, did_you_mean, short_repr
from xpuruntime.policies import _yaml
from xpuruntime.policies._common import Change, check_plain_data, content_hash, diff_dicts
from xpuruntime.policies.communication import CommunicationPolicy
from xpuruntime.policies.execution import ExecutionPolicy
from xpuruntime.policies.kernel import KernelPolicy

__all__ = ["Policy", "SCHEMA_VERSION", "MAX_POLICY_BYTES", "PolicyLike", "coerce_policy", "as_policy", "is_lock_file"]

SCHEMA_VERSION = 1
MAX_POLICY_BYTES = 1 << 20  # a policy is a page of settings; 1 MiB is generous
_SUFFIXES = {".yaml": "yaml", ".yml": "yaml", ".json": "json"}
_TOP_KEYS = ("schema_version", "kernels", "execution", "communication")


class Policy:
    """Both halves of a policy, with a schema version; hashable by content, diffable, mergeable.

    >>> a = Policy(kernels={"attention": "flash_v2"})
    >>> b = Policy(kernels={"attention": "flash"})
    >>> a.hash == b.hash
    True
    >>> [str(c) for c in a.diff(a.merge(Policy(execution={"precision": "tf32"})))]
    ["execution.precision: 'fp32' -> 'tf32'"]
    """

    __hash__ = None  # type: ignore[assignment]

    def __init__(
        self,
        kernels: KernelPolicy | Mapping[str, Any] | None = None,
        execution: ExecutionPolicy | Mapping[str, Any] | None = None,
        *,
        communication: CommunicationPolicy | Mapping[str, Any] | None = None,
        schema_version: int = SCHEMA_VERSION,
    ) -> None:
        self.schema_version = _check_version(schema_version)
        self.kernels = kernels.copy() if isinstance(kernels, KernelPolicy) else KernelPolicy.from_dict(kernels)
        self.execution = execution if isinstance(execution, ExecutionPolicy) else ExecutionPolicy.from_dict(execution)
        self.communication = (communication if isinstance(communication, CommunicationPolicy)
                              else CommunicationPolicy.from_dict(communication))

    # -- data ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Normalised plain data: canonical names, every execution field spelled out (``communication`` when set)."""
        data = {"schema_version": self.schema_version, "kernels": self.kernels.to_dict(),
                "execution": self.execution.to_dict()}
        return {**data, **_communication(self.communication)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Policy:
        """Validate plain data (as read from a file) into a Policy; errors name the field path."""
        if not isinstance(data, Mapping):
            raise PolicyError("a policy must be a mapping", expected="keys schema_version, kernels, execution",
                              received=type(data).__name__)
        check_plain_data(data)
        for key in data:
            if key not in _TOP_KEYS:
                text = key if isinstance(key, str) else short_repr(key)
                raise PolicyError(f"unknown top-level key {short_repr(key)}", field=text,
                                  expected=f"one of {', '.join(_TOP_KEYS)}", received=short_repr(key),
                                  hint=did_you_mean(text, _TOP_KEYS))
        return cls(data.get("kernels"), data.get("execution"), communication=data.get("communication"),
                   schema_version=data.get("schema_version", SCHEMA_VERSION))

    @property
    def hash(self) -> str:
        """SHA-256 of the normalised content (defaults left out, so new fields and sections keep hashes)."""
        return content_hash({"schema_version": self.schema_version, "kernels": self.kernels.to_dict(),
                             "execution": self.execution.to_dict(exclude_defaults=True),
                             **_communication(self.communication)})

    @property
    def short_hash(self) -> str:
        return self.hash[:12]

    def diff(self, other: Policy) -> list[Change]:
        """Every leaf field that differs, e.g. ``execution.precision: 'fp32' -> 'bf16'``.

        Never empty for two policies whose hashes differ: should the fields agree while the hashes do not (two
        representations of one setting that normalisation missed), a ``hash`` change says so.
        """
        changes = diff_dicts(self.to_dict(), other.to_dict())
        if not changes and self.hash != other.hash:
            changes = [Change("hash", self.hash, other.hash)]
        return changes

    def merge(self, other: Policy) -> Policy:
        """A new policy: ``other``'s kernel preferences win op by op, its explicit execution and communication
        fields win."""
        return Policy(self.kernels.merge(other.kernels), self.execution.merge(other.execution),
                      communication=self.communication.merge(other.communication))

    def replace(self, *, kernels: KernelPolicy | None = None, execution: ExecutionPolicy | None = None,
                communication: CommunicationPolicy | None = None) -> Policy:
        return Policy(kernels if kernels is not None else self.kernels,
                      execution if execution is not None else self.execution,
                      communication=communication if communication is not None else self.communication)

    # -- files ---------------------------------------------------------------------------
    def dumps(self, fmt: str = "yaml") -> str:
        """The policy as YAML or JSON text."""
        data = self.to_dict()
        if fmt == "json":
            return json.dumps(data, indent=2) + "\n"
        return _yaml.dump(data)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write atomically; the suffix (.yaml, .yml, .json) chooses the format."""
        path = Path(path)
        if path.is_dir():
            raise PolicyError("cannot write a policy over a directory", file=str(path),
                              expected="a file path ending in .yaml, .yml or .json", received="a directory")
        if not path.parent.is_dir():
            raise PolicyError("the folder to save the policy in does not exist", file=str(path),
                              expected="an existing folder", received=str(path.parent),
                              hint=f"create it first: mkdir -p {path.parent}")
        return atomic_write_text(path, self.dumps(_format_for(path)))

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, fallback: str | None = None) -> Policy:
        """Read and validate a policy file; every error is a PolicyError naming the file and field.

        A lock file (``xpuruntime tune --lock``) gives its policy after the drift check
        (:class:`~xpuruntime.policies.lock.Lock`): ``fallback`` is the drift rule (error, warn, allow; default
        warn), never the lock's own.
        """
        path = Path(path)
        if is_lock_file(path):
            from xpuruntime.policies.lock import Lock

            return Lock.load(path, fallback=fallback, stacklevel=3).policy
        try:
            return cls.from_dict(parse_document(path))
        except PolicyError as exc:
            raise exc.located(file=str(path)) from None

    @classmethod
    def loads(cls, text: str, fmt: str = "yaml") -> Policy:
        """Validate a policy from YAML or JSON text."""
        return cls.from_dict(_parse_text(text, fmt))

    @staticmethod
    def json_schema() -> dict[str, Any]:
        """A JSON Schema (draft 2020-12) for policy files, for editors and CI linters."""
        from xpuruntime.policies._schema import policy_json_schema

        return policy_json_schema()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Policy):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        comm = "" if self.communication.is_default else f", communication={self.communication!r}"
        return f"Policy(kernels={self.kernels!r}, execution={self.execution!r}{comm})"


PolicyLike = Policy | str | os.PathLike | Mapping[str, Any] | None


def coerce_policy(policy: PolicyLike = None, kernel_policy: Any = None, exec_policy: Any = None) -> Policy:
    """Resolve the ``policy=`` / ``kernel_policy=`` / ``exec_policy=`` trio every API accepts.

    ``policy`` may be a Policy, a path to a policy file or a mapping; explicit
    ``kernel_policy`` / ``exec_policy`` are merged over it.
    """
    if policy is None:
        base = Policy()
    elif isinstance(policy, Policy):
        base = policy
    elif isinstance(policy, (str, os.PathLike)):
        base = Policy.load(policy)
    elif isinstance(policy, Mapping):
        base = Policy.from_dict(policy)
    else:
        raise PolicyError("invalid policy", expected="a Policy, a path to a policy file, a mapping or None",
                          received=type(policy).__name__)
    overlay = Policy(_as_kernels(kernel_policy), _as_execution(exec_policy))
    return base.merge(overlay)


def as_policy(policy: Any) -> Policy:
    """A :class:`Policy` from a Policy, a KernelPolicy, a mapping, a policy file path or None.

    >>> as_policy(KernelPolicy(matmul="cublas")).kernels.get("matmul")
    'cublas'
    """
    if isinstance(policy, KernelPolicy):
        return Policy(kernels=policy)
    if isinstance(policy, Policy):  # immutable: nothing to merge over it (this runs on every torch engine call)
        return policy
    return coerce_policy(policy)


def _as_kernels(value: Any) -> KernelPolicy | None:
    if value is None or isinstance(value, KernelPolicy):
        return value
    if isinstance(value, Mapping):
        return KernelPolicy(value)
    raise PolicyError("invalid kernel_policy", expected="a KernelPolicy, a mapping or None",
                      received=type(value).__name__)


def _as_execution(value: Any) -> ExecutionPolicy | None:
    if value is None or isinstance(value, ExecutionPolicy):
        return value
    if isinstance(value, Mapping):
        return ExecutionPolicy.from_dict(value)
    raise PolicyError("invalid exec_policy", expected="an ExecutionPolicy, a mapping or None",
                      received=type(value).__name__)


def _communication(section: CommunicationPolicy) -> dict[str, Any]:
    """The communication section's non-default content under its key, or nothing (old files and hashes)."""
    data = section.to_dict(exclude_defaults=True)
    return {"communication": data} if data else {}


def _check_version(version: object) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise PolicyError("invalid schema_version", field="schema_version",
                          expected=f"a positive integer (this xpuruntime writes {SCHEMA_VERSION})",
                          received=short_repr(version))
    if version > SCHEMA_VERSION:
        raise PolicyError("policy file is from a newer xpuruntime", field="schema_version",
                          expected=f"schema_version <= {SCHEMA_VERSION}", received=str(version),
                          hint="upgrade xpuruntime (pip install -U xpuruntime)")
    return version


def _format_for(path: Path) -> str:
    fmt = _SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise PolicyError("unsupported policy file suffix", file=str(path),
                          expected="a file ending in .yaml, .yml or .json", received=repr(path.suffix or path.name),
                          hint=f"rename it to {path.with_suffix('.yaml').name}")
    return fmt


def parse_document(path: Path) -> Any:
    """Read a policy file as plain data (safe loaders only; no code, no pickle)."""
    if path.is_dir():
        raise PolicyError("policy path is a directory", file=str(path), expected="a policy file",
                          received="a directory")
    fmt = _format_for(path)
    if not path.exists():
        raise PolicyError("policy file not found", file=str(path), expected="an existing .yaml/.yml/.json file",
                          received="no such path", hint="check the path, or create one with 'xpuruntime policy show'")
    try:
        raw = read_bounded(path, MAX_POLICY_BYTES)
    except (OSError, ValueError) as exc:
        raise PolicyError(f"cannot read policy file: {exc}", file=str(path),
                          expected=f"a regular file of at most {MAX_POLICY_BYTES} bytes",
                          received=_describe(path)) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PolicyError("policy file is not UTF-8 text", file=str(path), expected="UTF-8 YAML or JSON",
                          received=f"undecodable byte at offset {exc.start}") from None
    return _parse_text(text, fmt)


_LOCK_HEAD = re.compile(rb'"format"\s*:\s*"xpuruntime-lock"')


def is_lock_file(path: Path) -> bool:
    """Whether ``path`` is a JSON lock file (``xpuruntime tune --lock``), judged from its first 4 KiB."""
    if path.suffix.lower() != ".json":
        return False
    try:  # opened without blocking and checked before reading: a FIFO named *.json never hangs us
        with os.fdopen(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb") as fh:
            return stat.S_ISREG(os.fstat(fh.fileno()).st_mode) and _LOCK_HEAD.search(fh.read(4096)) is not None
    except OSError:
        return False


def _describe(path: Path) -> str:
    try:
        return f"{path.stat().st_size} bytes" if path.is_file() else "not a regular file"
    except OSError as exc:
        return exc.strerror or "unreadable"


def _parse_text(text: str, fmt: str) -> Any:
    if not text.strip():
        raise PolicyError("policy is empty", expected="a mapping with kernels and/or execution",
                          received="an empty document", hint="start from 'xpuruntime policy show --default'")
    if fmt == "json":
        try:
            return json.loads(text, parse_constant=_reject_constant)
        except (json.JSONDecodeError, ValueError) as exc:
            raise PolicyError(f"malformed JSON: {exc}", expected="valid JSON", received="invalid JSON") from None
        except RecursionError:  # the stdlib decoder recurses once per nesting level
            raise PolicyError("malformed JSON: nested too deeply", expected="valid JSON of a few levels",
                              received="deeply nested JSON") from None
    return _yaml.load(text)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in a policy")

