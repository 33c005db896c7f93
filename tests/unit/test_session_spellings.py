"""The original API's session spellings: ``fp16=True`` and ``backend=``, on the real ONNX Runtime engine."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import xpuruntime as xrt
from xpuruntime.errors import EngineUnavailableError, PolicyError, PolicyViolationError
from xpuruntime.inference.samples import matmul_relu

pytest.importorskip("onnxruntime")
QNN = "QNNExecutionProvider"


@pytest.fixture(scope="module")
def mm() -> Any:
    return matmul_relu(k=16, n=8)


def test_fp16_true_is_precision_fp16(mm: Any) -> None:
    with xrt.InferenceSession(mm, fp16=True) as s:
        assert s.policy.execution.precision == "fp16"
        assert s.report.requested["model_variant"] == "fp16"
        assert s.policy.hash == xrt.InferenceSession(mm, exec_policy={"precision": "fp16"}).policy.hash
        y = s.run({"x": np.ones((2, 16), np.float32)})["y"]
    assert y.dtype == np.float32 and y.shape == (2, 8)


def test_fp16_agrees_with_an_explicit_fp16_and_keeps_the_rest_of_the_policy(mm: Any) -> None:
    with xrt.InferenceSession(mm, fp16=True, exec_policy={"precision": "fp16", "num_threads": 1}) as s:
        assert s.policy.execution.precision == "fp16" and s.policy.execution.num_threads == 1


@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8"])
def test_fp16_against_another_explicit_precision_names_both(mm: Any, precision: str) -> None:
    with pytest.raises(PolicyError, match=f"fp16=True conflicts with precision '{precision}'") as info:
        xrt.InferenceSession(mm, fp16=True, exec_policy={"precision": precision})
    assert info.value.field == "execution.precision"


def test_fp16_against_a_policy_files_precision(mm: Any, tmp_path: Any) -> None:
    path = tmp_path / "policy.yaml"
    xrt.Policy(execution={"precision": "bf16"}).save(path)
    with pytest.raises(PolicyError, match="conflicts with precision 'bf16'"):
        xrt.InferenceSession(mm, policy=str(path), fp16=True)


def test_fp16_false_or_none_asks_nothing_and_other_values_are_refused(mm: Any) -> None:
    for value in (False, None):
        with xrt.InferenceSession(mm, fp16=value, exec_policy={"precision": "bf16", "fallback": "allow"}) as s:
            assert s.policy.execution.precision == "bf16"
    with pytest.raises(PolicyError, match="fp16 must be True, False or None"):
        xrt.InferenceSession(mm, fp16="yes")


@pytest.mark.parametrize(("backend", "engine"), [("onnxruntime", "onnxruntime"), ("ORT", "onnxruntime"),
                                                 ("openvino", "openvino")])
def test_backend_is_an_alias_of_engine(mm: Any, backend: str, engine: str) -> None:
    if engine == "openvino":
        pytest.importorskip("openvino")
    with xrt.InferenceSession(mm, backend=backend) as s:
        assert s.engine_name == engine
        assert s.run({"x": np.ones((1, 16), np.float32)})["y"].shape == (1, 8)


def test_backend_and_engine_may_both_name_the_same_engine_but_not_two(mm: Any) -> None:
    with xrt.InferenceSession(mm, engine="ort", backend="onnxruntime") as s:
        assert s.engine_name == "onnxruntime"
    with pytest.raises(PolicyError, match="engine='onnxruntime' and backend='openvino' name different engines"):
        xrt.InferenceSession(mm, engine="onnxruntime", backend="openvino")


def test_an_unknown_backend_lists_the_supported_spellings(mm: Any) -> None:
    with pytest.raises(EngineUnavailableError, match="unknown backend 'tensorflow'") as info:
        xrt.InferenceSession(mm, backend="tensorflow")
    assert "qnn" in str(info.value) and "onnxruntime" in str(info.value) and "openvino" in str(info.value)


def test_backend_qnn_asks_onnx_runtime_for_the_qnn_provider_on_the_npu(mm: Any) -> None:
    with xrt.InferenceSession(mm, backend="qnn", exec_policy={"fallback": "allow"}) as s:
        assert s.engine_name == "onnxruntime" and s.device.kind == "npu"
        assert s.providers == [QNN, "CPUExecutionProvider"]
        assert s.report.requested["target"] == QNN
        y = s.run({"x": np.ones((1, 16), np.float32)})["y"]
    assert y.shape == (1, 8)


def test_backend_qnn_without_the_qnn_provider_says_what_to_install(mm: Any) -> None:
    ort = pytest.importorskip("onnxruntime")
    if QNN in ort.get_available_providers():
        pytest.skip("this onnxruntime build has the QNN provider")
    with pytest.raises(PolicyViolationError) as info:
        xrt.InferenceSession(mm, backend="qnn", exec_policy={"fallback": "error"})
    [missing] = [v for v in info.value.violations if v.kind == "provider_unavailable"]
    assert missing.subject == QNN and "pip install onnxruntime-qnn" in missing.reason


def test_backend_qnn_checks_the_device_and_the_providers(mm: Any) -> None:
    with pytest.raises(PolicyError, match="backend='qnn' runs on device 'npu', not 'cuda'"):
        xrt.InferenceSession(mm, backend="qnn", device="cuda")
    with pytest.raises(PolicyError, match="backend='qnn' means provider QNNExecutionProvider"):
        xrt.InferenceSession(mm, backend="qnn", engine_options={"providers": ["CPUExecutionProvider"]})
    with pytest.raises(PolicyError, match="different engines"):
        xrt.InferenceSession(mm, backend="qnn", engine="openvino")
