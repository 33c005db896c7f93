"""The package as a user first meets it: light import, public names, errors, lazy extras."""

from __future__ import annotations

import subprocess
import sys

import pytest

import xpuruntime as xrt

HEAVY = ("torch", "openvino", "tensorrt", "onnxruntime", "onnx")


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_import_is_light():
    code = f"import sys, xpuruntime; print([m for m in {HEAVY!r} if m in sys.modules])"
    result = _python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_public_names_of_the_original_design():
    for name in ("KernelPolicy", "ExecutionPolicy", "Policy", "InferenceSession", "Device", "get_device_count",
                 "get_all_devices", "get_current_device", "set_current_device", "synchronize", "fingerprint",
                 "list_engines", "XpuRuntimeError", "CudaError", "OutOfMemoryError", "UnsupportedOperationError",
                 "PolicyError", "PolicyViolationError", "ModelLoadError", "InputError", "DeviceError",
                 "EngineUnavailableError"):
        assert name in xrt.__all__, name
        assert getattr(xrt, name) is not None
    assert xrt.__version__ == "0.1.0"
    with pytest.raises(AttributeError):
        xrt.no_such_name  # noqa: B018


def test_error_tree_is_shallow_and_rooted():
    for cls in (xrt.CudaError, xrt.OutOfMemoryError, xrt.UnsupportedOperationError, xrt.PolicyError,
                xrt.PolicyViolationError, xrt.ModelLoadError, xrt.InputError, xrt.DeviceError,
                xrt.EngineUnavailableError):
        assert issubclass(cls, xrt.XpuRuntimeError)
    assert issubclass(xrt.OutOfMemoryError, MemoryError) and issubclass(xrt.PolicyError, ValueError)
    err = xrt.PolicyError("bad", expected="a", received="b", hint="c", field="x.y", file="f.yaml")
    assert str(err).splitlines() == ["f.yaml: x.y: bad", "  expected: a", "  received: b", "  fix: c"]


def test_pytorch_extension_without_torch_names_the_extra():
    result = _python("import sys; sys.modules['torch'] = None; import xpuruntime.pytorch")
    assert result.returncode != 0
    assert "ImportError" in result.stderr and "pip install 'xpuruntime[torch]'" in result.stderr


def test_kernel_policy_reads_like_the_original_design():
    assert repr(xrt.KernelPolicy(matmul="cublasLt", attention="flash_v2")) == \
        "KernelPolicy(matmul=cublaslt, attention=flash)"
