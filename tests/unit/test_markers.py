"""The suite's own markers (tests/conftest.py): what the machine lacks is a skip, decided in one place.

Without torch, every module that needs it says so and is skipped, never a collection error: CI installs torch, so
this hides it (``sys.modules["torch"] = None``: ``import torch`` fails, ``find_spec`` says it is absent) in a
subprocess that collects the whole suite. The gpu and no_cuda markers run on a sample test file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import xpuruntime

ROOT = Path(__file__).resolve().parents[2]
SRC = str(Path(xpuruntime.__file__).resolve().parents[1])
HIDE_TORCH = "import sys; sys.modules['torch'] = None; import pytest; sys.exit(pytest.main(sys.argv[1:]))"


def test_without_torch_the_suite_collects_and_the_torch_modules_are_skipped():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p)}
    args = ["--collect-only", "-q", "-rs", "-p", "no:cacheprovider", "-p", "no:xdist", "tests"]
    out = subprocess.run([sys.executable, "-c", HIDE_TORCH, *args], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    skipped = {line.split()[2].rpartition(":")[0].rpartition(":")[0] for line in out.stdout.splitlines()
               if line.startswith("SKIPPED") and "needs torch" in line}
    assert {"tests/pytorch/test_torch_engine.py", "tests/kernels/test_tuning.py",
            "tests/gpu/test_pytorch_gpu.py"} <= skipped, out.stdout[-3000:]
    assert "test_dispatcher.py::test_the_custom_ops_are_registered_and_pass_opcheck" in out.stdout


SAMPLE = '''
import pytest


@pytest.mark.gpu
def test_gpu():
    pass


@pytest.mark.gpu("torch")
def test_gpu_torch():
    pass


@pytest.mark.no_cuda("onnxruntime")
def test_no_cuda_onnxruntime():
    pass


@pytest.mark.no_cuda
def test_no_cuda_device():
    pass


def test_plain():
    assert False, "a real failure stays a failure"
'''


def _run_sample(tmp_path: Path, sample: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "conftest.py").write_text((ROOT / "tests" / "conftest.py").read_text())
    (tmp_path / "test_sample.py").write_text(sample)
    markers = "".join(f"\n    {name}" for name in ("gpu", "no_cuda", "torch"))
    (tmp_path / "pytest.ini").write_text(f"[pytest]\naddopts = --strict-markers\nmarkers ={markers}\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p)}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rfs", "-p", "no:cacheprovider", "-p", "no:xdist"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)


@pytest.mark.no_cuda  # what it expects is a machine without a CUDA device
def test_gpu_and_no_cuda_markers_are_decided_by_the_machine(tmp_path: Path):
    out = _run_sample(tmp_path, SAMPLE)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "2 skipped" in out.stdout and "1 failed" in out.stdout and "2 passed" in out.stdout, out.stdout
    skipped = [line.split(": ", 1) for line in out.stdout.splitlines() if line.startswith("SKIPPED")]
    assert [(where.rpartition(" ")[2], why.startswith("needs a CUDA device")) for where, why in skipped] == [
        ("test_sample.py:5", True), ("test_sample.py:10", True)], out.stdout  # test_gpu, test_gpu_torch
    assert "FAILED test_sample.py::test_plain" in out.stdout


def test_a_misspelt_library_in_a_marker_is_a_usage_error(tmp_path: Path):
    out = _run_sample(tmp_path, "import pytest\n\n\n@pytest.mark.no_cuda('onnxruntim')\ndef test_x():\n    pass\n")
    assert out.returncode == 4 and "unknown library 'onnxruntim'" in out.stdout + out.stderr, out.stdout + out.stderr
