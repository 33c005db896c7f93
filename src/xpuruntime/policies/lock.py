"""Lock files: a tuned policy, the fingerprint it was tuned on, the tuning records, and their hashes.

A lock makes tuning a portable, verified asset. Loading one compares the fingerprint it holds with this
machine's, field by field (:meth:`Lock.drift`: GPU, driver, CUDA, cuDNN, the libraries kernels come from), and
the *caller's* fallback rule decides what a drift means: the ``fallback`` argument of :meth:`Lock.load` /
:meth:`Lock.check` / ``Policy.load``, or the ``fallback`` of the ``exec_policy`` an ``InferenceSession`` is
given beside the lock; without one, :data:`DEFAULT_DRIFT_RULE` (``warn``). Never the lock's own policy: a
lock does not choose how its own drift is judged.

=========  ===================================================================================================
fallback   on drift
=========  ===================================================================================================
error      refused: :class:`~xpuruntime.errors.LockDriftError` lists every field that differs (tune again)
warn       a warning naming the fields; the *untuned* policy is used (the tuned rules and engine results are
           dropped: they were measured elsewhere)
allow      the tuned policy is used anyway; ``lock.drift_found`` keeps the fields
=========  ===================================================================================================

Fields that do not change what kernels do (Python, the OS release, numpy, xpuruntime itself) are reported as
notes, never as drift.

**What the hashes prove, and what they do not.** Every part of a lock (format, version, creation time, the
xpuruntime that wrote it, both policies, the fingerprint, the records, the engine's results) is hashed
(SHA-256 of canonical JSON), and ``hashes.lock`` covers them all. A lock damaged in transit or edited by hand
without recomputing the hashes is refused. The hashes are *unkeyed*: anyone who can edit the file can also
recompute them, so they prove integrity against accidents, not who wrote the lock. For provenance, sign locks
with a key (:func:`lock_key`): ``XPURUNTIME_LOCK_KEY`` (the key itself) or ``XPURUNTIME_LOCK_KEY_FILE`` (a file
holding it; one trailing newline is dropped), at least 16 bytes. A lock saved while a key is set carries
``signature`` (HMAC-SHA256 of the lock hash, and the first 16 hex digits of the key's SHA-256 to tell keys
apart); while a key is set, loading refuses an unsigned lock and one signed with another key. Without a key,
a signature is kept but not checked (``lock.signature_status == "unverified"``).

Locks of ``lock_version`` 1 (before creation time and version were hashed) still load, with a note saying
those two fields are not covered; they cannot be signed: tune again to get a version 2 lock.

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
import hashlib
import hmac
import json
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xpuruntime._io import atomic_write_text, read_bounded
from xpuruntime.errors import LockDriftError, PolicyError, PolicyViolationError, PolicyViolationWarning, short_repr
from xpuruntime.policies._common import content_hash
from xpuruntime.policies.policy import Policy, as_policy
from xpuruntime.policies.records import TuningRecord, records_from_data, records_hash, records_to_data
from xpuruntime.runtime.fingerprint import FieldChange, Fingerprint
from xpuruntime.runtime.fingerprint import fingerprint as current_fingerprint

__all__ = ["Lock", "Drift", "LOCK_FORMAT", "LOCK_VERSION", "DRIFT_FIELDS", "is_lock_document", "as_lock",
           "verify_same_policy", "gather_policy_hashes", "compare_fingerprints", "MAX_LOCK_BYTES", "DEFAULT_DRIFT_RULE",
           "drift_rule", "lock_key", "LOCK_KEY_ENV", "LOCK_KEY_FILE_ENV", "SECTIONS"]

LOCK_FORMAT = "xpuruntime-lock"
LOCK_VERSION = 2  # 2: creation time and xpuruntime version hashed too; optional signature
_READABLE_VERSIONS = (1, 2)
MAX_LOCK_BYTES = 64 << 20
#: the drift rule when the caller gives none (the default ``execution.fallback``): untuned policy, a warning
DEFAULT_DRIFT_RULE = "warn"
LOCK_KEY_ENV = "XPURUNTIME_LOCK_KEY"
LOCK_KEY_FILE_ENV = "XPURUNTIME_LOCK_KEY_FILE"
_MIN_KEY_BYTES = 16
_SIGNATURE_ALG = "hmac-sha256"
#: fingerprint fields (dotted prefixes) whose change means tuned results may no longer hold
DRIFT_FIELDS: tuple[str, ...] = (
    "devices", "driver", "cuda", "cudnn", "nccl", "machine", "libraries.torch", "libraries.triton",
    "libraries.nvmath-python", "libraries.onnxruntime", "libraries.onnxruntime-gpu", "libraries.tensorrt",
    "libraries.cuda-core", "libraries.cuda-python", "libraries.openvino",
)
#: optional hashed sections, present only when written: ``search`` (``xpuruntime tune --search``: every candidate's
#: figures and why each was dropped) and ``end_to_end`` (the tuner's whole-step check of an ``--entry``)
SECTIONS = ("search", "end_to_end")
_KEYS = ("format", "lock_version", "created", "xpuruntime", "policy", "base_policy", "fingerprint", "records",
         "engine_tuning", *SECTIONS, "hashes", "signature")


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
                 created: str | None = None, version: str | None = None, lock_version: int = LOCK_VERSION,
                 sections: Mapping[str, Any] | None = None) -> None:
        self.lock_version = lock_version
        self.sections: dict[str, Any] = {k: _plain(v) for k, v in (sections or {}).items() if v is not None}
        _check_sections(self.sections)
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
        self.drift_rule: str | None = None  # the rule the last check applied
        self.signature: dict[str, str] | None = None
        self.signature_status = "unsigned"  # unsigned | verified | unverified (signed; no key here to check)
        self.notes: list[str] = []

    @classmethod
    def create(cls, policy: Any, records: Sequence[TuningRecord] = (), *, base_policy: Any = None,
               engine_tuning: Mapping[str, Any] | None = None, fingerprint: Fingerprint | None = None,
               search: Mapping[str, Any] | None = None, end_to_end: Mapping[str, Any] | None = None) -> Lock:
        """A lock of ``policy`` tuned here (this machine's fingerprint unless one is given).

        ``base_policy`` is the untuned policy (what ``fallback="warn"`` falls back to); by default the tuned
        policy's execution settings with no kernel preferences. ``search`` and ``end_to_end`` (JSON data) are
        kept as hashed sections (:data:`SECTIONS`).
        """
        return cls(as_policy(policy), fingerprint=fingerprint or current_fingerprint(), records=records,
                   base_policy=None if base_policy is None else as_policy(base_policy), engine_tuning=engine_tuning,
                   sections={"search": search, "end_to_end": end_to_end})

    # -- hashes -----------------------------------------------------------------------------------------------
    def hashes(self) -> dict[str, str]:
        """Each part's content hash, and ``lock`` over all of them (``meta``: format, version, creation time and
        the xpuruntime that wrote it; version 1 locks left ``meta`` out)."""
        parts = {"policy": self.tuned_policy.hash, "base_policy": self.base_policy.hash,
                 "fingerprint": self.fingerprint.hash, "records": records_hash(self.records),
                 "engine_tuning": content_hash(self.locked_engine_tuning)}
        parts.update({name: content_hash(value) for name, value in self.sections.items()})
        if self.lock_version >= 2:
            parts["meta"] = content_hash({"format": LOCK_FORMAT, "lock_version": self.lock_version,
                                          "created": self.created, "xpuruntime": self.version})
        return {**parts, "lock": content_hash(parts)}

    @property
    def hash(self) -> str:
        """The lock's content hash (what ranks of one job compare)."""
        return self.hashes()["lock"]

    @property
    def search(self) -> dict[str, Any] | None:
        """The ``search`` section (``xpuruntime tune --search``), or None."""
        return self.sections.get("search")

    @property
    def end_to_end(self) -> dict[str, Any] | None:
        """The ``end_to_end`` section (the tuner's whole-step check), or None."""
        return self.sections.get("end_to_end")

    @property
    def policy_hash(self) -> str:
        """The hash of the policy to use here (``Policy.hash``)."""
        return self.policy.hash

    # -- drift ------------------------------------------------------------------------------------------------
    def drift(self, current: Fingerprint | None = None) -> Drift:
        """What differs between the fingerprint the lock was tuned on and ``current`` (default: this machine)."""
        return compare_fingerprints(self.fingerprint, current or current_fingerprint())

    def check(self, *, fallback: str | None = None, current: Fingerprint | None = None, stacklevel: int = 2) -> Lock:
        """Apply the caller's drift rule (``fallback``; :data:`DEFAULT_DRIFT_RULE` when None) to the drift (see the
        module notes); returns self. The lock's own ``execution.fallback`` is not consulted.
        """
        rule = self.drift_rule = drift_rule(fallback)
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
                          "policy (tune again here to get tuned kernels back)", PolicyViolationWarning,
                          stacklevel=stacklevel + 1)
        else:
            self.status, self.policy, self.engine_tuning = "drift-allowed", self.tuned_policy, \
                dict(self.locked_engine_tuning)
        return self

    # -- files ------------------------------------------------------------------------------------------------
    def to_dict(self, *, key: bytes | str | None = None) -> dict[str, Any]:
        """The lock document; signed with ``key``, else with :func:`lock_key` when one is set."""
        data = {"format": LOCK_FORMAT, "lock_version": self.lock_version, "created": self.created,
                "xpuruntime": self.version, "policy": self.tuned_policy.to_dict(),
                "base_policy": self.base_policy.to_dict(), "fingerprint": self.fingerprint.to_dict(),
                "records": records_to_data(self.records), "engine_tuning": _plain(self.locked_engine_tuning),
                **self.sections, "hashes": self.hashes()}
        secret = _key_bytes(key) if key is not None else lock_key()
        if secret is not None:
            if self.lock_version < 2:
                raise PolicyError("a version 1 lock cannot be signed", field="lock_version",
                                  expected=f"lock_version {LOCK_VERSION}", received=str(self.lock_version),
                                  hint="tune again to write a version 2 lock")
            data["signature"] = _sign(secret, data["hashes"]["lock"])
        return data

    def dumps(self, *, key: bytes | str | None = None) -> str:
        return json.dumps(self.to_dict(key=key), indent=1, sort_keys=False) + "\n"

    def save(self, path: str | os.PathLike[str], *, key: bytes | str | None = None) -> Path:
        """Write the lock atomically as JSON; signed with ``key``, else with :func:`lock_key` when one is set."""
        path = Path(path)
        if path.is_dir() or not path.parent.is_dir():
            raise PolicyError("cannot write the lock there", file=str(path),
                              expected="a file path in an existing folder",
                              received="a directory" if path.is_dir() else f"no folder {path.parent}")
        return atomic_write_text(path, self.dumps(key=key))

    def receipt(self) -> dict[str, Any]:
        """What a session's receipt records of the lock it was built from: hash, rule, drift, signature."""
        return {"file": self.file, "hash": self.hash, "lock_version": self.lock_version, "status": self.status,
                "drift_rule": self.drift_rule, "drift": self.drift_found.to_dict() if self.drift_found else None,
                "signature": self.signature_status, "policy_hash": self.policy_hash,
                "tuned_policy_hash": self.tuned_policy.hash}

    @classmethod
    def from_dict(cls, data: Any, *, file: str | None = None, key: bytes | str | None = None) -> Lock:
        """Validate a lock document; a part whose hash does not match its content raises PolicyError, and so does
        a missing or wrong signature while a key is set (``key``, else :func:`lock_key`)."""
        try:
            lock = cls._parse(data)
            _verify_signature(lock, data.get("signature"), _key_bytes(key) if key is not None else lock_key())
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
        version = data.get("lock_version")
        if unknown or isinstance(version, bool) or version not in _READABLE_VERSIONS:
            raise PolicyError("unsupported lock", field=str(unknown[0]) if unknown else "lock_version",
                              expected=f"lock_version {' or '.join(map(str, _READABLE_VERSIONS))} with keys "
                                       f"{', '.join(_KEYS)}",
                              received=short_repr(unknown[0] if unknown else version),
                              hint="upgrade xpuruntime, or tune again to write a new lock")
        lock = cls(_policy(data.get("policy"), "policy"), fingerprint=_fingerprint(data.get("fingerprint")),
                   records=records_from_data(data.get("records", [])),
                   base_policy=_policy(data.get("base_policy", {}), "base_policy"),
                   engine_tuning=data.get("engine_tuning") or {}, created=_meta_str(data, "created", version),
                   version=_meta_str(data, "xpuruntime", version), lock_version=version,
                   sections={k: data[k] for k in SECTIONS if k in data})
        _verify_hashes(lock, data.get("hashes"))
        if version == 1:
            lock.notes.append("lock_version 1: its creation time and xpuruntime version are not covered by its hash; "
                              "tune again to write a version 2 lock")
        return lock

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, check: bool = True, fallback: str | None = None,
             current: Fingerprint | None = None, stacklevel: int = 2, key: bytes | str | None = None) -> Lock:
        """Read a lock file; with ``check`` (default), compare it with this machine and apply the caller's drift rule
        (``fallback``, else :data:`DEFAULT_DRIFT_RULE`)."""
        path = Path(path)
        lock = cls.from_dict(_read(path), file=str(path), key=key)
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


def _check_sections(sections: Mapping[str, Any]) -> None:
    for name, value in sections.items():
        if name not in SECTIONS or not isinstance(value, Mapping):
            raise PolicyError(f"invalid lock section {name!r}", field=name,
                              expected=f"a mapping under one of {', '.join(SECTIONS)}", received=short_repr(value))


def _verify_hashes(lock: Lock, stored: Any) -> None:
    if not isinstance(stored, Mapping):
        raise PolicyError("the lock has no hashes", field="hashes", expected="the hashes xpuruntime wrote",
                          received=short_repr(stored))
    extra = [k for k in stored if k in SECTIONS and k not in lock.sections]
    if extra:  # a section removed by hand: its hash is left behind
        raise PolicyError(f"the lock's {extra[0]} section is missing but hashed (edited or corrupt)", field=extra[0],
                          expected="the section xpuruntime wrote", received="none")
    for part, value in lock.hashes().items():
        if stored.get(part) != value:
            raise PolicyError(f"the lock's {part} does not match its hash (edited or corrupt)", field=f"hashes.{part}",
                              expected=value, received=short_repr(stored.get(part)),
                              hint="locks are written by `xpuruntime tune`; tune again instead of editing one")


def _meta_str(data: Mapping[str, Any], name: str, version: int) -> str | None:
    value = data.get(name)
    if version >= 2 and not isinstance(value, str):  # hashed since version 2: refuse rather than invent one
        raise PolicyError(f"invalid {name}", field=name, expected="the text xpuruntime wrote", received=short_repr(value))
    return _str(value)


def drift_rule(fallback: str | None = None) -> str:
    """The drift rule to apply: the caller's ``fallback`` (error, warn, allow), else :data:`DEFAULT_DRIFT_RULE`.

    >>> drift_rule(None), drift_rule(" Error ")
    ('warn', 'error')
    """
    if fallback is None:
        return DEFAULT_DRIFT_RULE
    rule = fallback.strip().lower() if isinstance(fallback, str) else fallback
    if rule not in ("error", "warn", "allow"):
        raise PolicyError(f"unknown fallback {short_repr(fallback)}", expected="one of error, warn, allow",
                          received=short_repr(fallback))
    return rule


def lock_key() -> bytes | None:
    """The signing key from ``XPURUNTIME_LOCK_KEY`` (the key) or ``XPURUNTIME_LOCK_KEY_FILE`` (a file holding it;
    one trailing newline dropped); None when neither is set. Both set, or a key under 16 bytes, is a PolicyError.

    >>> os.environ["XPURUNTIME_LOCK_KEY"] = "a team secret of 32 characters.."; len(lock_key())   # doctest: +SKIP
    32
    """
    direct, file = os.environ.get(LOCK_KEY_ENV), os.environ.get(LOCK_KEY_FILE_ENV)
    if direct and file:
        raise PolicyError("two lock keys are set", expected=f"{LOCK_KEY_ENV} or {LOCK_KEY_FILE_ENV}, not both",
                          received="both", hint="unset one of them")
    if file:
        try:
            raw = read_bounded(Path(file), 1 << 16)
        except (OSError, ValueError) as exc:
            raise PolicyError(f"cannot read the lock key file: {exc}", expected=f"{LOCK_KEY_FILE_ENV} naming a regular "
                              "file of at most 64 KiB", received=short_repr(file)) from None
        return _key_bytes(raw[:-1] if raw.endswith(b"\n") else raw)
    return _key_bytes(direct) if direct else None


def _key_bytes(key: bytes | str) -> bytes:
    raw = key.encode("utf-8") if isinstance(key, str) else bytes(key)
    if len(raw) < _MIN_KEY_BYTES:
        raise PolicyError("the lock key is too short", expected=f"at least {_MIN_KEY_BYTES} bytes (32 random bytes "
                          "are best)", received=f"{len(raw)} bytes",
                          hint="make one with: python -c 'import secrets; print(secrets.token_hex(32))'")
    return raw


def _sign(key: bytes, lock_hash: str) -> dict[str, str]:
    mac = hmac.new(key, f"{LOCK_FORMAT}\0{lock_hash}".encode("ascii"), hashlib.sha256).hexdigest()
    return {"alg": _SIGNATURE_ALG, "key_id": hashlib.sha256(key).hexdigest()[:16], "value": mac}


def _verify_signature(lock: Lock, signature: Any, key: bytes | None) -> None:
    if signature is not None and (not isinstance(signature, Mapping) or signature.get("alg") != _SIGNATURE_ALG
                                  or not all(isinstance(signature.get(k), str) for k in ("key_id", "value"))):
        raise PolicyError("invalid lock signature", field="signature",
                          expected=f"{{alg: {_SIGNATURE_ALG}, key_id, value}} as xpuruntime writes it",
                          received=short_repr(signature))
    lock.signature = dict(signature) if signature is not None else None
    if key is None:
        lock.signature_status = "unsigned" if signature is None else "unverified"
        return
    if signature is None:
        raise PolicyError("the lock is not signed, and a lock key is set", field="signature",
                          expected="a lock signed with the key (HMAC-SHA256)", received="no signature",
                          hint=f"tune again with {LOCK_KEY_ENV} or {LOCK_KEY_FILE_ENV} set, or unset them to accept "
                               "unsigned locks")
    expected = _sign(key, lock.hash)
    if not hmac.compare_digest(expected["value"], str(signature["value"])):
        other = signature["key_id"] != expected["key_id"]
        raise PolicyError("the lock's signature does not match " + ("(signed with another key)" if other else
                          "(edited after signing)"), field="signature", expected=f"key {expected['key_id']}",
                          received=f"key {short_repr(signature['key_id'])}",
                          hint="locks are signed by `xpuruntime tune`; tune again with this key")
    lock.signature_status = "verified"


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
