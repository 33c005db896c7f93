"""Locks: everything hashed, the drift rule the caller's, receipts that name the lock, optional keyed signatures.

What the unkeyed hash proves is pinned too: a lock edited *and re-hashed* still loads without a key (the hash
is integrity against accidents, not provenance); with a key set it is refused.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from xpuruntime import InferenceSession, LockDriftError, Policy, PolicyError
from xpuruntime.receipts import PolicyViolationWarning
from xpuruntime.policies.lock import LOCK_KEY_ENV, LOCK_KEY_FILE_ENV, Lock, drift_rule, lock_key
from xpuruntime.policies._common import content_hash
from xpuruntime.runtime.fingerprint import Fingerprint, fingerprint

KEY = "a-team-key-of-32-characters-...."
TUNED = Policy(kernels={"matmul": "default"}, execution={"fallback": "allow"})  # the lock's own rule: allow


@pytest.fixture(autouse=True)
def no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(LOCK_KEY_ENV, raising=False)
    monkeypatch.delenv(LOCK_KEY_FILE_ENV, raising=False)


def _drifted() -> Any:
    return dataclasses.replace(fingerprint(), driver="535.104.05", libraries={**fingerprint().libraries,
                                                                             "onnxruntime": "1.0.0"})


def _save(path: Path, fp: Any = None, **kw: Any) -> Path:
    return Lock.create(TUNED, base_policy=Policy(), fingerprint=fp).save(path, **kw)


def _rehash(data: dict[str, Any]) -> dict[str, Any]:
    """What anyone who can edit a lock can do: recompute every unkeyed hash after an edit."""
    lock = Lock(Policy.from_dict(data["policy"]), fingerprint=Fingerprint.from_dict(data["fingerprint"]),
                base_policy=Policy.from_dict(data["base_policy"]), created=data["created"], version=data["xpuruntime"],
                engine_tuning=data["engine_tuning"])
    return {**data, "hashes": lock.hashes()}


# -- everything is hashed --------------------------------------------------------------------------------------
@pytest.mark.parametrize("field, value", [("created", "2020-01-01T00:00:00+00:00"), ("xpuruntime", "0.0.1")])
def test_creation_time_and_version_are_inside_the_hash(tmp_path: Path, field: str, value: str) -> None:
    path = _save(tmp_path / "t.lock.json")
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, field: value}))
    with pytest.raises(PolicyError, match="meta does not match its hash") as err:
        Lock.load(path)
    assert err.value.field == "hashes.meta"


def test_an_edited_and_rehashed_lock_loads_without_a_key_and_is_refused_with_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _save(tmp_path / "t.lock.json")
    data = json.loads(path.read_text())
    data["policy"]["kernels"]["matmul"] = "cublas"
    path.write_text(json.dumps(_rehash(data)))
    lock = Lock.load(path)  # documented: the unkeyed hash cannot tell
    assert lock.tuned_policy.kernels.get("matmul") == "cublas" and lock.signature_status == "unsigned"
    monkeypatch.setenv(LOCK_KEY_ENV, KEY)
    with pytest.raises(PolicyError, match="not signed, and a lock key is set"):
        Lock.load(path)


# -- signatures ----------------------------------------------------------------------------------------------
def test_a_signed_lock_verifies_with_its_key_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LOCK_KEY_ENV, KEY)
    path = _save(tmp_path / "t.lock.json")
    signature = json.loads(path.read_text())["signature"]
    assert signature["alg"] == "hmac-sha256" and len(signature["value"]) == 64
    assert Lock.load(path).signature_status == "verified"
    monkeypatch.setenv(LOCK_KEY_ENV, "another-key-of-32-characters-...")
    with pytest.raises(PolicyError, match="signed with another key"):
        Lock.load(path)
    monkeypatch.delenv(LOCK_KEY_ENV)
    assert Lock.load(path).signature_status == "unverified"  # kept, not checkable without the key


def test_a_signed_lock_edited_and_rehashed_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LOCK_KEY_ENV, KEY)
    path = _save(tmp_path / "t.lock.json")
    data = json.loads(path.read_text())
    data["policy"]["execution"]["precision"] = "fp16"
    path.write_text(json.dumps(_rehash(data)))
    with pytest.raises(PolicyError, match="edited after signing") as err:
        Lock.load(path)
    assert err.value.field == "signature"


def test_the_key_may_come_from_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "key").write_text(KEY + "\n")
    monkeypatch.setenv(LOCK_KEY_FILE_ENV, str(tmp_path / "key"))
    assert lock_key() == KEY.encode()  # one trailing newline dropped
    path = _save(tmp_path / "t.lock.json")
    monkeypatch.delenv(LOCK_KEY_FILE_ENV)
    assert Lock.load(path, key=KEY).signature_status == "verified"


@pytest.mark.parametrize("env, value, message", [
    (LOCK_KEY_ENV, "short", "too short"),
    (LOCK_KEY_FILE_ENV, "/nonexistent/key", "cannot read the lock key file"),
    (LOCK_KEY_FILE_ENV, "/dev/null", "cannot read the lock key file"),
])
def test_a_bad_key_is_a_policy_error(monkeypatch: pytest.MonkeyPatch, env: str, value: str, message: str) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(PolicyError, match=message):
        lock_key()


def test_two_keys_are_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(LOCK_KEY_ENV, KEY)
    monkeypatch.setenv(LOCK_KEY_FILE_ENV, str(tmp_path / "key"))
    with pytest.raises(PolicyError, match="two lock keys"):
        lock_key()


# -- the drift rule is the caller's ----------------------------------------------------------------------------
def test_a_lock_does_not_choose_its_own_drift_rule(tmp_path: Path) -> None:
    path = _save(tmp_path / "t.lock.json", fp=_drifted())  # the lock says fallback: allow
    with pytest.warns(PolicyViolationWarning, match="untuned policy"):
        lock = Lock.load(path)  # no rule from the caller: the default, warn
    assert lock.status == "drift-untuned" and lock.drift_rule == "warn" and lock.policy == Policy()
    with pytest.raises(LockDriftError):
        Lock.load(path, fallback="error")
    with pytest.raises(LockDriftError):
        Policy.load(path, fallback="error")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Lock.load(path, fallback="allow").status == "drift-allowed"
    assert drift_rule(None) == "warn" and drift_rule("ERROR") == "error"
    with pytest.raises(PolicyError, match="unknown fallback"):
        drift_rule("sometimes")


def test_a_session_takes_the_drift_rule_from_its_exec_policy(tmp_path: Path, mm: Any) -> None:
    path = _save(tmp_path / "t.lock.json", fp=_drifted())
    with pytest.raises(LockDriftError, match="driver"):
        InferenceSession(mm, policy=path, exec_policy={"fallback": "error"})
    with pytest.warns(PolicyViolationWarning):
        sess = InferenceSession(mm, policy=path)
    assert sess.report.requested["lock"]["drift_rule"] == "warn"


# -- receipts ------------------------------------------------------------------------------------------------
def test_the_receipt_names_the_lock_its_hash_and_drift(tmp_path: Path, mm: Any) -> None:
    clean = _save(tmp_path / "clean.lock.json")
    sess = InferenceSession(mm, policy=clean)
    record = sess.report.requested["lock"]
    assert record["hash"] == Lock.load(clean).hash and record["drift"] is None and record["status"] == "verified"
    assert any(n.startswith(f"built from lock {record['hash'][:12]}") and "no drift" in n for n in sess.report.notes)
    drifted = _save(tmp_path / "drifted.lock.json", fp=_drifted())
    sess = InferenceSession(mm, policy=drifted, exec_policy={"fallback": "allow"})
    record = sess.report.requested["lock"]
    assert record["status"] == "drift-allowed" and record["drift_rule"] == "allow"
    assert {c["path"] for c in record["drift"]["changes"]} >= {"driver", "libraries.onnxruntime"}
    assert any("driver: 535.104.05 -> " in n for n in sess.report.notes)
    explained = sess.explain({"x": np.ones((2, 8), np.float32)})
    assert explained.requested["lock"]["hash"] == record["hash"]
    assert json.loads(sess.report.to_json())["requested"]["lock"]["file"] == str(drifted)


# -- version 1 locks -----------------------------------------------------------------------------------------
def _version_1(tmp_path: Path) -> Path:
    lock = Lock.create(TUNED, base_policy=Policy())
    lock.lock_version = 1
    data = {**lock.to_dict(), "lock_version": 1}
    assert "meta" not in data["hashes"] and data["hashes"]["lock"] == content_hash(
        {k: v for k, v in data["hashes"].items() if k != "lock"})
    path = tmp_path / "v1.lock.json"
    path.write_text(json.dumps(data))
    return path


def test_a_version_1_lock_loads_with_a_note_and_is_refused_under_a_key(tmp_path: Path, mm: Any,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    path = _version_1(tmp_path)
    lock = Lock.load(path)
    assert lock.lock_version == 1 and "not covered by its hash" in lock.notes[0]
    sess = InferenceSession(mm, policy=path)
    assert any("lock_version 1" in n for n in sess.report.notes)
    monkeypatch.setenv(LOCK_KEY_ENV, KEY)
    with pytest.raises(PolicyError, match="not signed"):
        Lock.load(path)
