"""Lock files: a tuned policy, the fingerprint it was tuned on, the tuning records, and their hashes.

A lock makes tuning a portable, verified asset. Loading one compares the fingerprint it holds with this
machine's, field by field (:meth:`Lock.drift`: GPU, driver, CUDA, cuDNN, the libraries kernels come from), and
the policy's fallback rule decides what a drift means:

=========  ===================================================================================================
fallback   on drift
=========  ===================================================================================================
error      refused: :class:`~xpuruntime.errors.LockDriftError` lists every field that differs (tune again)
warn       a warning naming the fields; the *untuned* policy is used (the tuned rules and engine results are
           dropped: they were measured elsewhere)
allow      the tuned policy is used anyway; ``lock.drift_found`` keeps the fields
=========  ===================================================================================================

Fields that do not change what kernels do (Python, the OS release, numpy, xpuruntime itself) are reported as
notes, never as drift. A lock edited by hand fails its hash check on load.

>>> from xpuruntime.policies.lock import Lock
>>> lock = Lock.load("tuned.lock.json")                     # doctest: +SKIP
>>> lock.policy                                            # the policy to use here  # doctest: +SKIP
>>> [str(c) for c in lock.drift().changes]                 # doctest: +SKIP
['driver: 580.65.06 -> 575.57.08']

``Policy.load("tuned.lock.json")`` and ``InferenceSession(..., policy="tuned.lock.json")`` go through the same
check (the session also replays the engine's own tuning results, e.g. ONNX Runtime's TunableOp). Ranks of a
job compare hashes with :func:`verify_same_policy` (``torch.distributed.all_gather_object`` gives the list).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xpuruntime._io import atomic_write_text, read_bounded
from xpuruntime.errors import LockDriftError, PolicyError, PolicyViolationError, short_repr
from xpuruntime.policies import vocabulary as vocab
from xpuruntime.policies._common import content_hash
from xpuruntime.policies.policy import Policy, as_policy
from xpuruntime.policies.records import TuningRecord, records_from_data, records_hash, records_to_data
from xpuruntime.runtime.fingerprint import FieldChange, Fingerprint
from xpuruntime.runtime.fingerprint import fingerprint as current_fingerprint

__all__ = ["Lock", "Drift", "LOCK_FORMAT", "LOCK_VERSION", "DRIFT_FIELDS", "is_lock_document", "as_lock",
           "verify_same_policy", "gather_policy_hashes", "compare_fingerprints", "MAX_LOCK_BYTES"]

LOCK_FORMAT = "xpuruntime-lock"
LOCK_VERSION = 1
MAX_LOCK_BYTES = 64 << 20
#: fingerprint fields (dotted prefixes) whose change means tuned results may no longer hold
DRIFT_FIELDS: tuple[str, ...] = (
    "devices", "driver", "cuda", "cudnn", "nccl", "machine", "libraries.torch", "libraries.triton",
    "libraries.nvmath-python", "libraries.onnxruntime", "libraries.onnxruntime-gpu", "libraries.tensorrt",
    "libraries.cuda-core", "libraries.cuda-python", "libraries.openvino",
)
_KEYS = ("format", "lock_version", "created", "xpuruntime", "policy", "base_policy", "fingerprint", "records",
         "engine_tuning", "hashes")


@dataclass(frozen=True)
class Drift:
    """Fingerprint differences between a lock (``locked``) and this machine (``here``).

    ``changes`` are the fields in :data:`DRIFT_FIELDS` (tuning may not hold); ``notes`` the others.
    """

    changes: tuple[FieldChange, ...]
    notes: tuple[FieldChange, ...]
    locked: str
    here: str

    def __bool__(self) -> bool:
        return bool(self.changes)

    def describe(self) -> str:
        """One line per relevant field: ``path: locked -> here``."""
        return "; ".join(str(c) for c in self.changes) or "none"

    def to_dict(self) -> dict[str, Any]:
        return {"drift": bool(self), "locked_fingerprint": self.locked, "fingerprint_here": self.here,
                "changes": [_change(c) for c in self.changes], "notes": [_change(c) for c in self.notes]}


def _change(c: FieldChange) -> dict[str, Any]:
    return {"path": c.path, "locked": c.old, "here": c.new}


def _relevant(path: str) -> bool:
    return any(path == f or path.startswith(f + ".") for f in DRIFT_FIELDS)


def compare_fingerprints(old: Fingerprint, new: Fingerprint) -> Drift:
    """What differs from ``old`` to ``new``, split as locks split it: :data:`DRIFT_FIELDS` are ``changes``
    (results may not hold: GPU, driver, CUDA, cuDNN, NCCL, torch, ...), the rest ``notes`` (Python, OS, numpy).

    >>> compare_fingerprints(fp_rank0, fp_rank1).describe()     # doctest: +SKIP
    'driver: 580.65.06 -> 575.57.08'
    """
    changes = old.diff(new)
    return Drift(tuple(c for c in changes if _relevant(c.path)), tuple(c for c in changes if not _relevant(c.path)),
                 old.hash, new.hash)


class Lock:
    """A tuned policy with its provenance; see the module notes.

    >>> lock = Lock.create(tuned_policy, records, base_policy=base)   # doctest: +SKIP
    >>> lock.save("tuned.lock.json")                                   # doctest: +SKIP
    """

    def __init__(self, policy: Policy, *, fingerprint: Fingerprint, records: Sequence[TuningRecord] = (),
                 base_policy: Policy | None = None, engine_tuning: Mapping[str, Any] | None = None,
                 created: str | None = None, version: str | None = None) -> None:
        self.tuned_policy = policy
        self.base_policy = base_policy if base_policy is not None else Policy(execution=policy.execution)
        self.fingerprint = fingerprint
        self.records = list(records)
        self.locked_engine_tuning = _engine_tuning(engine_tuning or {}, "engine_tuning")
        self.created = created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        self.version = version or _xpuruntime_version()
        self.file: str | None = None
        self.status = "unchecked"  # unchecked | verified | drift-allowed | drift-untuned
        self.drift_found: Drift | None = None
        self.policy = self.tuned_policy  # the policy to use here, once checked
        self.engine_tuning: dict[str, Any] = dict(self.locked_engine_tuning)

    @classmethod
    def create(cls, policy: Any, records: Sequence[TuningRecord] = (), *, base_policy: Any = None,
               engine_tuning: Mapping[str, Any] | None = None, fingerprint: Fingerprint | None = None) -> Lock:
        """A lock of ``policy`` tuned here (this machine's fingerprint unless one is given).

        ``base_policy`` is the untuned policy (what ``fallback="warn"`` falls back to); by default the tuned
        policy's execution settings with no kernel preferences.
        """
        return cls(as_policy(policy), fingerprint=fingerprint or current_fingerprint(), records=records,
                   base_policy=None if base_policy is None else as_policy(base_policy), engine_tuning=engine_tuning)

    # -- hashes -----------------------------------------------------------------------------------------------
    def hashes(self) -> dict[str, str]:
        """Each part's content hash, and ``lock`` over all of them (creation time and tool version left out)."""
        parts = {"policy": self.tuned_policy.hash, "base_policy": self.base_policy.hash,
                 "fingerprint": self.fingerprint.hash, "records": records_hash(self.records),
                 "engine_tuning": content_hash(self.locked_engine_tuning)}
        return {**parts, "lock": content_hash(parts)}

    @property
    def hash(self) -> str:
        """The lock's content hash (what ranks of one job compare)."""
        return self.hashes()["lock"]

    @property
    def policy_hash(self) -> str:
        """The hash of the policy to use here (``Policy.hash``)."""
        return self.policy.hash

    # -- drift ------------------------------------------------------------------------------------------------
    def drift(self, current: Fingerprint | None = None) -> Drift:
        """What differs between the fingerprint the lock was tuned on and ``current`` (default: this machine)."""
        return compare_fingerprints(self.fingerprint, current or current_fingerprint())

    def check(self, *, fallback: str | None = None, current: Fingerprint | None = None, stacklevel: int = 2) -> Lock:
        """Apply the fallback rule to the drift (see the module notes); returns self.

        ``fallback`` overrides the tuned policy's own ``execution.fallback``.
        """
        rule = fallback or self.tuned_policy.execution.fallback
        if rule not in vocab.FALLBACKS:
            raise PolicyError(f"unknown fallback {rule!r}", expected=f"one of {', '.join(vocab.FALLBACKS)}", received=repr(rule))
        drift = self.drift(current)
        self.drift_found = drift if drift else None
        if not drift:
            self.status, self.policy, self.engine_tuning = "verified", self.tuned_policy, dict(self.locked_engine_tuning)
            return self
        where = f" ({self.file})" if self.file else ""
        if rule == "error":
            raise LockDriftError(
                f"the lock{where} was tuned on another environment: {len(drift.changes)} field(s) differ",
                changes=drift.changes, expected=f"fingerprint {drift.locked[:12]} (as tuned)",
                received=f"{drift.here[:12]} here: {drift.describe()}",
                hint="tune again here (xpuruntime tune ...), or load it with fallback='warn' (untuned policy) or "
                     "'allow' (tuned policy anyway)")
        if rule == "warn":
            self.status, self.policy, self.engine_tuning = "drift-untuned", self.base_policy, {}
            warnings.warn(f"lock{where} was tuned on another environment ({drift.describe()}); using the untuned "
                          "policy (tune again here to get tuned kernels back)", _warning(), stacklevel=stacklevel + 1)
        else:
            self.status, self.policy, self.engine_tuning = "drift-allowed", self.tuned_policy, \
                dict(self.locked_engine_tuning)
        return self

    # -- files ------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"format": LOCK_FORMAT, "lock_version": LOCK_VERSION, "created": self.created,
                "xpuruntime": self.version, "policy": self.tuned_policy.to_dict(),
                "base_policy": self.base_policy.to_dict(), "fingerprint": self.fingerprint.to_dict(),
                "records": records_to_data(self.records), "engine_tuning": _plain(self.locked_engine_tuning),
                "hashes": self.hashes()}

    def dumps(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=False) + "\n"

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the lock atomically as JSON."""
        path = Path(path)
        if path.is_dir() or not path.parent.is_dir():
            raise PolicyError("cannot write the lock there", file=str(path),
                              expected="a file path in an existing folder",
                              received="a directory" if path.is_dir() else f"no folder {path.parent}")
        return atomic_write_text(path, self.dumps())

    @classmethod
    def from_dict(cls, data: Any, *, file: str | None = None) -> Lock:
        """Validate a lock document; a part whose hash does not match its content raises PolicyError."""
        try:
            lock = cls._parse(data)
        except PolicyError as exc:
            raise exc.located(file=file) from None
        lock.file = file
        return lock

    @classmethod
    def _parse(cls, data: Any) -> Lock:
        if not is_lock_document(data):
            raise PolicyError("not an xpuruntime lock", expected=f"a mapping with format: {LOCK_FORMAT}",
                              received=short_repr(data.get("format") if isinstance(data, Mapping) else data))
        unknown = [k for k in data if k not in _KEYS]
        if unknown or data.get("lock_version") != LOCK_VERSION:
            raise PolicyError("unsupported lock", field=str(unknown[0]) if unknown else "lock_version",
                              expected=f"lock_version {LOCK_VERSION} with keys {', '.join(_KEYS)}",
                              received=short_repr(unknown[0] if unknown else data.get("lock_version")),
                              hint="upgrade xpuruntime, or tune again to write a new lock")
        lock = cls(_policy(data.get("policy"), "policy"), fingerprint=_fingerprint(data.get("fingerprint")),
                   records=records_from_data(data.get("records", [])),
                   base_policy=_policy(data.get("base_policy", {}), "base_policy"),
                   engine_tuning=data.get("engine_tuning") or {}, created=_str(data.get("created")),
                   version=_str(data.get("xpuruntime")))
        _verify_hashes(lock, data.get("hashes"))
        return lock

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, check: bool = True, fallback: str | None = None,
             current: Fingerprint | None = None, stacklevel: int = 2) -> Lock:
        """Read a lock file; with ``check`` (default), compare it with this machine and apply the fallback rule."""
        path = Path(path)
        lock = cls.from_dict(_read(path), file=str(path))
        return lock.check(fallback=fallback, current=current, stacklevel=stacklevel + 1) if check else lock

    def __repr__(self) -> str:
        return (f"Lock(policy={self.tuned_policy.short_hash}, records={len(self.records)}, "
                f"fingerprint={self.fingerprint.short_hash}, status={self.status})")


def _read(path: Path) -> Any:
    if not path.is_file():
        raise PolicyError("lock file not found", file=str(path), expected="an existing lock file (.json)",
                          received="no such file" if not path.exists() else "not a regular file",
                          hint="write one with `xpuruntime tune ... --lock FILE`")
    try:
        return json.loads(read_bounded(path, MAX_LOCK_BYTES).decode("utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise PolicyError(f"cannot read the lock: {exc}", file=str(path), expected="a JSON lock written by xpuruntime",
                          received="unreadable or malformed JSON") from None


def _policy(data: Any, name: str) -> Policy:
    try:
        return Policy.from_dict(data)
    except PolicyError as exc:
        raise exc.located(field_prefix=name) from None


def _fingerprint(data: Any) -> Fingerprint:
    from xpuruntime.errors import XpuRuntimeError

    if not isinstance(data, Mapping):
        raise PolicyError("invalid fingerprint", field="fingerprint", expected="a mapping",
                          received=short_repr(data))
    try:
        return Fingerprint.from_dict(dict(data))
    except (XpuRuntimeError, TypeError, ValueError) as exc:
        raise PolicyError(f"invalid fingerprint: {str(exc).splitlines()[0]}", field="fingerprint",
                          expected="the fingerprint xpuruntime wrote", received="an edited or corrupt one") from None


def _verify_hashes(lock: Lock, stored: Any) -> None:
    if not isinstance(stored, Mapping):
        raise PolicyError("the lock has no hashes", field="hashes", expected="the hashes xpuruntime wrote",
                          received=short_repr(stored))
    for part, value in lock.hashes().items():
        if stored.get(part) != value:
            raise PolicyError(f"the lock's {part} does not match its hash (edited or corrupt)", field=f"hashes.{part}",
                              expected=value, received=short_repr(stored.get(part)),
                              hint="locks are written by `xpuruntime tune`; tune again instead of editing one")


def _engine_tuning(data: Any, field_name: str) -> dict[str, Any]:
    if not isinstance(data, Mapping) or not all(isinstance(k, str) for k in data):
        raise PolicyError("invalid engine tuning results", field=field_name,
                          expected="a mapping of engine name -> its results", received=short_repr(data))
    try:
        return json.loads(json.dumps(dict(data), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise PolicyError(f"engine tuning results are not plain data: {exc}", field=field_name,
                          expected="JSON-able results", received=short_repr(data)) from None


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value))


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _xpuruntime_version() -> str:
    from xpuruntime._version import __version__

    return __version__


def _warning() -> type[Warning]:
    from xpuruntime.errors import PolicyViolationWarning

    return PolicyViolationWarning


# -- helpers for loaders -------------------------------------------------------------------------------------------
def is_lock_document(data: Any) -> bool:
    """Whether parsed file content is a lock (rather than a policy)."""
    return isinstance(data, Mapping) and data.get("format") == LOCK_FORMAT


def as_lock(obj: Any, *, fallback: str | None = None) -> Lock | None:
    """``obj`` as a checked :class:`Lock` when it is one (or a path to a lock file), else None."""
    if isinstance(obj, Lock):
        return obj if obj.status != "unchecked" else obj.check(fallback=fallback, stacklevel=3)
    from xpuruntime.policies.policy import is_lock_file

    if not isinstance(obj, (str, os.PathLike)) or not is_lock_file(Path(obj)):
        return None
    return Lock.load(obj, fallback=fallback, stacklevel=3)


# -- several ranks or machines ---------------------------------------------------------------------------------------
def verify_same_policy(hashes: Iterable[Any], *, what: str = "policy") -> str:
    """The one hash every rank holds; :class:`PolicyViolationError` naming the ranks otherwise.

    Items may be hashes or objects with a ``hash`` (Policy, Lock). With ``torch.distributed``::

        >>> hashes = [None] * dist.get_world_size()                  # doctest: +SKIP
        >>> dist.all_gather_object(hashes, policy.hash)              # doctest: +SKIP
        >>> verify_same_policy(hashes)                               # doctest: +SKIP
    """
    values = [h if isinstance(h, str) else getattr(h, "hash", None) for h in hashes]
    if not values or any(not isinstance(v, str) or not v for v in values):
        raise PolicyViolationError(f"cannot compare {what} hashes", expected="one hash per rank",
                                   received=short_repr(list(values)))
    groups: dict[str, list[int]] = {}
    for rank, value in enumerate(values):
        groups.setdefault(value, []).append(rank)
    if len(groups) == 1:
        return values[0]
    ordered = sorted(groups.items(), key=lambda kv: -len(kv[1]))
    lines = [f"{h[:12]}: ranks {', '.join(map(str, ranks))}" for h, ranks in ordered]
    raise PolicyViolationError(
        f"the ranks do not hold the same {what}: {len(groups)} different hashes", violations=lines,
        expected=f"one {what} hash on all {len(values)} ranks", received="; ".join(lines),
        hint="give every rank the same policy or lock file (xpuruntime lock hash FILE prints its hash)")


def gather_policy_hashes(obj: Any, group: Any = None) -> list[str]:
    """Every rank's hash of ``obj`` (a Policy, Lock or hash) through ``torch.distributed.all_gather_object``;
    just ``[hash]`` when torch.distributed is not initialised."""
    value = obj if isinstance(obj, str) else obj.hash
    try:
        import torch.distributed as dist
    except ImportError:
        return [value]
    if not (dist.is_available() and dist.is_initialized()):
        return [value]
    out: list[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(out, value, group=group)
    return out
