"""The policy -> ONNX Runtime QNN provider table, as pure data (no QNN build is needed, or present, here).

Option names are those ONNX Runtime 1.31's QNN provider reads: ``backend_type`` (since 1.22; exclusive with
``backend_path``), ``htp_performance_mode``, ``htp_graph_finalization_optimization_mode``,
``enable_htp_fp16_precision``, ``device_id``; the context cache is the session config ``ep.context_*``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from xpuruntime._cache import cache_key
from xpuruntime.inference.engines._onnxruntime import (
    CPU,
    OPENVINO,
    QNN,
    QNN_PERFORMANCE_MODE,
    OrtPlan,
    translate,
)
from xpuruntime.policies import Policy

KEY = cache_key("model-hash", "policy-hash", "fingerprint-hash")
WITH_QNN = [QNN, CPU]


def plan_for(device: str = "npu", *, available: list[str] | None = None, index: int | None = None,
             **execution: object) -> OrtPlan:
    policy = Policy(execution=execution or None)
    return translate(policy, device, index, tensorrt=False, available=WITH_QNN if available is None else available,
                     key=KEY)


def qnn(plan: OrtPlan) -> dict[str, str]:
    return dict(plan.providers)[QNN]


def kinds(plan: OrtPlan) -> list[str]:
    return [v.kind for v in plan.violations]


def test_npu_with_the_qnn_provider_targets_the_htp_backend() -> None:
    plan = plan_for()
    assert plan.target == QNN and plan.provider_names() == [QNN, CPU]
    opts = qnn(plan)
    assert opts["backend_type"] == "htp"
    assert "backend_path" not in opts  # ONNX Runtime refuses both at once
    assert opts["htp_performance_mode"] == QNN_PERFORMANCE_MODE == "burst"
    assert plan.violations == []


def test_openvino_wins_the_npu_when_both_providers_are_listed() -> None:
    plan = plan_for(available=[OPENVINO, QNN, CPU])
    assert plan.target == OPENVINO and QNN not in plan.provider_names()


@pytest.mark.parametrize(("precision", "flag"), [("fp16", "1"), ("fp32", "0"), ("tf32", "0")])
def test_fp16_precision_is_the_htp_fp16_switch(precision: str, flag: str) -> None:
    plan = plan_for(precision=precision)
    assert qnn(plan)["enable_htp_fp16_precision"] == flag
    assert plan.model_variant == "original"  # the HTP converts by itself: no fp16 copy of the model
    assert plan.violations == []


def test_fp32_says_that_the_htp_conversion_is_off() -> None:
    notes = " ".join(plan_for(precision="fp32").notes)
    assert "enable_htp_fp16_precision=0" in notes


def test_bf16_is_refused_with_the_qnn_switch_to_use() -> None:
    plan = plan_for(precision="bf16")
    assert [(v.kind, v.requested) for v in plan.violations] == [("precision", "bf16")]
    assert "htp_bf16_enable" in plan.violations[0].reason and "soc_model" in plan.violations[0].reason
    assert qnn(plan)["enable_htp_fp16_precision"] == "0"


def test_int8_runs_the_model_as_given_and_says_how_to_quantize_for_qnn() -> None:
    plan = plan_for(precision="int8")
    assert plan.model_variant == "original"  # quantize_dynamic's ops have no QNN kernels
    assert kinds(plan) == ["precision"]
    assert "quantize_static" in plan.violations[0].reason and "get_qnn_qdq_config" in plan.violations[0].reason


@pytest.mark.parametrize(("level", "mode"), [(0, "1"), (1, "0"), (2, "2"), (3, "3")])
def test_optimize_level_is_the_htp_graph_finalization_mode(level: int, mode: str) -> None:
    assert qnn(plan_for(optimize_level=level))["htp_graph_finalization_optimization_mode"] == mode


def test_device_index_is_the_qnn_device_id() -> None:
    assert qnn(plan_for(index=1))["device_id"] == "1"
    assert "device_id" not in qnn(plan_for(index=0))


def test_context_cache_is_written_under_cache_dir_keyed_by_model_policy_and_environment(tmp_path: Path) -> None:
    plan = plan_for(cache_dir=str(tmp_path))
    path = os.path.join(str(tmp_path), "qnn", f"{KEY}_ctx.onnx")
    assert plan.config["ep.context_enable"] == "1"
    assert plan.config["ep.context_file_path"] == path
    assert plan.config["ep.context_embed_mode"] == "0"  # the context binary is a .bin beside it
    assert (tmp_path / "qnn").is_dir()  # ONNX Runtime writes the file but does not create its folder
    other = translate(Policy(execution={"cache_dir": str(tmp_path)}), "npu", None, tensorrt=False,
                      available=WITH_QNN, key=cache_key("other-model", "policy-hash", "fingerprint-hash"))
    assert other.config["ep.context_file_path"] != path


def test_an_existing_context_model_is_not_generated_again(tmp_path: Path) -> None:
    (tmp_path / "qnn").mkdir()
    (tmp_path / "qnn" / f"{KEY}_ctx.onnx").write_bytes(b"")
    plan = plan_for(cache_dir=str(tmp_path))
    assert "ep.context_enable" not in plan.config  # ONNX Runtime refuses to overwrite an EPContext model
    assert plan.cached_model == str(tmp_path / "qnn" / f"{KEY}_ctx.onnx")  # loaded instead of recompiling
    assert any("loaded the compiled QNN context" in n for n in plan.notes)


def test_user_backend_path_replaces_our_backend_type() -> None:
    from xpuruntime.inference.engines.onnxruntime import _merge_provider_options

    ours = qnn(plan_for())
    assert ours["backend_type"] == "htp"
    merged = _merge_provider_options(ours, {"backend_path": "/opt/qnn/libQnnHtp.so"})
    assert merged["backend_path"] == "/opt/qnn/libQnnHtp.so" and "backend_type" not in merged
    assert _merge_provider_options(ours, {"htp_performance_mode": "sustained_high_performance"})["backend_type"] == "htp"


def test_no_cache_dir_means_no_context_cache() -> None:
    assert not any(k.startswith("ep.context") for k in plan_for().config)


def test_qnn_options_stay_off_other_devices() -> None:
    for device in ("cpu", "gpu"):
        assert QNN not in plan_for(device).provider_names()


def test_npu_without_an_npu_provider_names_both_packages() -> None:
    plan = plan_for(available=[CPU])
    assert plan.provider_names() == [CPU]
    [violation] = plan.violations
    assert violation.kind == "provider_unavailable"
    assert "pip install onnxruntime-qnn" in violation.reason and "Snapdragon" in violation.reason
    assert "onnxruntime-ep-openvino" in violation.reason and "engine='openvino'" in violation.reason


def test_npu_session_without_an_npu_provider_fails_under_fallback_error_naming_what_to_install() -> None:
    ort = pytest.importorskip("onnxruntime")
    from xpuruntime.inference.engines.onnxruntime import plugin_providers

    plugin = plugin_providers(ort).get(OPENVINO)
    npu_plugin = plugin is not None and any(kind == "npu" for kind, _ in plugin.devices)
    if QNN in ort.get_available_providers() or npu_plugin or (plugin is None and OPENVINO in ort.get_available_providers()):
        pytest.skip("this onnxruntime has an NPU provider")
    import xpuruntime as xrt
    from xpuruntime.inference.samples import matmul_relu

    with pytest.raises(xrt.PolicyViolationError) as info:
        xrt.InferenceSession(matmul_relu(k=8, n=4), device="npu", exec_policy={"fallback": "error"})
    message = str(info.value)
    assert "pip install onnxruntime-qnn" in message and "onnxruntime-ep-openvino" in message
    assert {v.kind for v in info.value.violations} >= {"provider_unavailable"}
