"""The original design's three examples run on a CPU, in seconds, and print what actually ran."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SRC = Path(__file__).resolve().parents[2] / "src"


def run_example(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True,
                          timeout=180, env=env, cwd=EXAMPLES)


def test_inference_basic(tmp_path):
    page = tmp_path / "receipt.html"
    result = run_example("inference_basic.py", "--html", str(page), "--trace", str(tmp_path / "t.json"))
    assert result.returncode == 0, result.stderr
    assert "KernelPolicy(matmul=cublaslt, attention=flash)" in result.stdout
    assert "onnxruntime on " in result.stdout and "output y: shape (8, 64)" in result.stdout
    assert page.read_text().startswith("<!DOCTYPE html>")


def test_training_kernel_policy():
    pytest.importorskip("torch")
    result = run_example("training_kernel_policy.py")
    assert result.returncode == 0, result.stderr
    assert "policy set: KernelPolicy(attention=flash, matmul=cublaslt)" in result.stdout
    assert "captured as a CUDA graph:" in result.stdout and "torch on " in result.stdout
    assert "attention" in result.stdout and "matmul" in result.stdout


def test_npu_inference_falls_back_honestly():
    result = run_example("npu_inference.py")
    assert result.returncode == 0, result.stderr
    assert "NPUs found:" in result.stdout
    if "NPUs found: 0" in result.stdout:
        assert "device_unavailable" in result.stdout or "provider_unavailable" in result.stdout
        if importlib.util.find_spec("openvino") is not None:
            assert "== openvino: asked ['NPU']" in result.stdout and "ran on: CPU" in result.stdout
