"""The environment fingerprint: stable, hashed over its content, diffable and serialisable."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from xpuruntime.errors import XpuRuntimeError
from xpuruntime.runtime import get_all_devices
from xpuruntime.runtime.fingerprint import FieldChange, Fingerprint, fingerprint

SRC = Path(__file__).resolve().parents[2] / "src"


def test_hash_is_stable_across_calls_and_refresh():
    first = fingerprint()
    assert fingerprint() is first
    again = fingerprint(refresh=True)
    assert again.hash == first.hash and again == first
    assert len(first.hash) == 64 and first.short_hash == first.hash[:12]


def test_fields_describe_this_environment():
    fp = fingerprint()
    assert {"numpy", "onnxruntime", "xpuruntime"} <= set(fp.libraries)
    assert "onnxruntime-gpu" not in fp.libraries or fp.libraries["onnxruntime-gpu"]
    assert fp.python == ".".join(map(str, sys.version_info[:3]))
    assert fp.machine and fp.os
    assert [d["spec"] for d in fp.devices] == [d.spec for d in get_all_devices()]
    assert set(fp.devices[0]) == {"spec", "name", "total_memory", "compute_capability"}


def test_hash_changes_when_a_field_changes():
    fp = fingerprint()
    changed = dataclasses.replace(fp, driver="999.99")
    assert changed.hash != fp.hash
    libs = {**fp.libraries, "onnxruntime": "0.0.1"}
    assert Fingerprint.from_dict({**fp.to_dict(), "libraries": libs, "hash": None}).hash != fp.hash


def test_diff_reports_field_paths():
    fp = fingerprint()
    data = fp.to_dict()
    data["libraries"] = {**fp.libraries, "onnxruntime": "0.0.1", "tensorrt": "10.0.0"}
    data["libraries"].pop("numpy")
    data.pop("hash")
    other = Fingerprint.from_dict(data)
    changes = fp.diff(other)
    assert FieldChange("libraries.onnxruntime", fp.libraries["onnxruntime"], "0.0.1") in changes
    assert FieldChange("libraries.numpy", fp.libraries["numpy"], None) in changes
    assert FieldChange("libraries.tensorrt", None, "10.0.0") in changes
    assert fp.diff(fp) == []
    assert [c.path for c in fp.diff(dataclasses.replace(fp, driver="1.0"))] == ["driver"]


def test_diff_keys_devices_by_spec():
    fp = fingerprint()
    renamed = [{**fp.devices[0], "name": "Other CPU"}, *fp.devices[1:]]
    changes = fp.diff(dataclasses.replace(fp, devices=renamed))
    assert [str(c) for c in changes] == [f"devices.cpu.name: {fp.devices[0]['name']} -> Other CPU"]


def test_json_roundtrip():
    fp = fingerprint()
    text = fp.to_json()
    assert json.loads(text)["hash"] == fp.hash
    back = Fingerprint.from_json(text)
    assert back == fp and back.hash == fp.hash


def test_from_dict_rejects_tampering_and_unknown_fields():
    data = fingerprint().to_dict()
    data["python"] = "2.7.18"
    with pytest.raises(XpuRuntimeError, match="hash does not match"):
        Fingerprint.from_dict(data)
    assert Fingerprint.from_dict(data, verify=False).python == "2.7.18"
    with pytest.raises(XpuRuntimeError, match="did you mean 'driver'"):
        Fingerprint.from_dict({**fingerprint().to_dict(), "drivr": "1"})


def test_import_stays_light():
    code = (
        "import sys, xpuruntime.runtime.fingerprint, xpuruntime.runtime.devices; "
        "heavy = [m for m in ('torch', 'openvino', 'tensorrt', 'pynvml') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
