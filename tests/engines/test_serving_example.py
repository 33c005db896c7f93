"""The serving example (examples/ray_serve): one session per replica, one policy file, one receipt per replica.

The replica plumbing runs here on ONNX Runtime (CPU). Ray Serve itself is not a CI dependency (a 470 MB install
that takes ~20 s to start two replicas on two cores); where it is installed, the whole example runs too.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

import xpuruntime as xrt
from xpuruntime.receipts import PolicyViolationWarning
from xpuruntime.inference.samples import tiny_transformer

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ray_serve"
SPEC = importlib.util.spec_from_file_location("xrt_example_replica", EXAMPLE / "replica.py")
replica = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(replica)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("serve") / "tiny.onnx"
    onnx.save(tiny_transformer(), path)
    return path


def test_each_replica_leaves_one_receipt_under_the_one_policy(model, tmp_path):
    policy = EXAMPLE / "policy.yaml"
    with pytest.warns(PolicyViolationWarning):  # the example policy asks for CUDA kernels; this is a CPU
        replicas = [replica.Replica(model, policy, receipts=tmp_path, name=str(i), device="cpu") for i in range(2)]
    receipts = sorted(tmp_path.glob("replica-*.json"))
    assert [p.name for p in receipts] == ["replica-0.json", "replica-1.json"]
    saved = [json.loads(p.read_text()) for p in receipts]
    assert {s["policy_hash"] for s in saved} == {xrt.Policy.load(policy).hash}
    assert all(s["report"]["providers_used"] == ["CPUExecutionProvider"] for s in saved)
    assert all(not s["honored"] and any("attention" in str(v) for v in s["report"]["violations"]) for s in saved)
    x = np.random.default_rng(0).standard_normal((1, 4, 64)).astype(np.float32)
    first, second = (r({"x": x.tolist()}) for r in replicas)
    assert first.keys() == second.keys() and np.allclose(next(iter(first.values())), next(iter(second.values())))


def test_the_ray_serve_app_starts_two_replicas_with_a_receipt_each(model, tmp_path):
    pytest.importorskip("ray.serve")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(EXAMPLE.parents[1] / "src"),
                                                        os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(EXAMPLE / "serve_app.py"), str(model), "--replicas", "2", "--gpus",
                           "0", "--receipts", str(tmp_path), "--once"], check=False, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(list(tmp_path.glob("replica-*.json"))) == 2
