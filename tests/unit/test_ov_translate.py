"""The policy -> OpenVINO table, as pure data: no Core, no device, no openvino import."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from xpuruntime._cache import cache_key
from xpuruntime.errors import DeviceError, PolicyError
from xpuruntime.inference.engines._openvino import (
    OvPlan,
    device_present,
    finish,
    is_quantized,
    judge_layer,
    precision_from_primitive,
    resolve_device,
    runtime_precision,
    same_device,
    translate,
)
from xpuruntime.policies import Policy

KEY = cache_key("2026.4.1-build", "fingerprint-hash", "policy-hash")
DYNAMIC = {"x": [None, 256]}
CPU_PROPS = ["PERFORMANCE_HINT", "INFERENCE_PRECISION_HINT", "EXECUTION_MODE_HINT", "INFERENCE_NUM_THREADS",
             "NUM_STREAMS", "PERF_COUNT"]


def plan_for(device: str = "cpu", index: int | None = None, *, kernels: dict | None = None,
             available: list[str] | None = None, options: dict | None = None, inputs: dict | None = None,
             ops: set[str] | None = None, **execution: Any) -> OvPlan:
    policy = Policy(kernels=kernels, execution=execution or None)
    return translate(policy, device, index, available=available or ["CPU"], options=options or {},
                     inputs=DYNAMIC if inputs is None else inputs, op_types=ops or {"MatMul", "Relu"}, key=KEY)


def kinds(plan: OvPlan) -> list[str]:
    return [v.kind for v in plan.violations]


# -- precision ------------------------------------------------------------------------------
def test_fp32_pins_f32_and_accuracy_so_a_bf16_cpu_cannot_lower_it() -> None:
    plan = plan_for(precision="fp32")
    assert plan.config["INFERENCE_PRECISION_HINT"] == "f32"
    assert plan.config["EXECUTION_MODE_HINT"] == "ACCURACY"
    assert plan.violations == []


def test_tf32_runs_as_f32_with_a_note() -> None:
    plan = plan_for(precision="tf32")
    assert plan.config["INFERENCE_PRECISION_HINT"] == "f32" and plan.violations == []
    assert any("tf32" in n and "IEEE" in n for n in plan.notes)


@pytest.mark.parametrize(("precision", "hint"), [("fp16", "f16"), ("bf16", "bf16")])
def test_reduced_precisions_set_the_hint_and_performance_mode(precision: str, hint: str) -> None:
    plan = plan_for(precision=precision)
    assert plan.config["INFERENCE_PRECISION_HINT"] == hint
    assert plan.config["EXECUTION_MODE_HINT"] == "PERFORMANCE"


def test_int8_on_a_float_model_is_a_violation_that_says_how_to_quantise() -> None:
    plan = plan_for(precision="int8", ops={"MatMul", "Relu"})
    (v,) = plan.violations
    assert (v.kind, v.subject, v.requested, v.actual) == ("precision", "model", "int8", "fp32")
    assert "quantised model" in v.reason and "NNCF" in v.reason
    assert plan.quantized is False


@pytest.mark.parametrize("op", ["FakeQuantize", "QuantizeLinear", "DequantizeLinear", "QLinearConv", "MatMulInteger"])
def test_int8_on_a_quantised_model_keeps_the_rest_ieee_on_the_cpu(op: str) -> None:
    plan = plan_for(precision="int8", ops={"MatMul", op})
    assert plan.violations == [] and plan.quantized
    assert plan.config["INFERENCE_PRECISION_HINT"] == "f32" and "EXECUTION_MODE_HINT" not in plan.config


def test_int8_on_the_npu_leaves_the_device_its_precision() -> None:
    plan = plan_for("npu", precision="int8", ops={"FakeQuantize"}, available=["CPU", "NPU"])
    assert "INFERENCE_PRECISION_HINT" not in plan.config
    assert any("NPU's default precision" in n for n in plan.notes)


def test_is_quantized() -> None:
    assert is_quantized({"FakeQuantize", "Convolution"}) and not is_quantized({"Convolution", "Relu"})


# -- options --------------------------------------------------------------------------------
def test_latency_by_default_and_throughput_from_engine_options() -> None:
    assert plan_for().config["PERFORMANCE_HINT"] == "LATENCY"
    plan = plan_for(options={"performance_hint": "throughput", "num_requests": 4})
    assert plan.config["PERFORMANCE_HINT"] == "THROUGHPUT" and plan.num_requests == 4


def test_unknown_performance_hint_has_a_did_you_mean() -> None:
    with pytest.raises(PolicyError, match="unknown performance_hint") as info:
        plan_for(options={"performance_hint": "THROUGHPT"})
    assert "THROUGHPUT" in str(info.value.hint)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "4"])
def test_num_requests_must_be_a_count(bad: Any) -> None:
    with pytest.raises(PolicyError, match="num_requests"):
        plan_for(options={"num_requests": bad})


def test_num_threads_becomes_inference_num_threads() -> None:
    assert plan_for(num_threads=3).config["INFERENCE_NUM_THREADS"] == "3"
    assert "INFERENCE_NUM_THREADS" not in plan_for().config


def test_cache_dir_is_keyed_by_openvino_build_fingerprint_and_policy(tmp_path: Path) -> None:
    plan = plan_for(cache_dir=str(tmp_path))
    assert plan.cache_folder == os.path.join(str(tmp_path), "openvino", KEY)
    assert plan.config["CACHE_DIR"] == plan.cache_folder
    assert len({cache_key("2026.4.1", "f", "p"), cache_key("2026.4.2", "f", "p"), cache_key("2026.4.1", "g", "p"),
                cache_key("2026.4.1", "f", "q")}) == 4
    assert "CACHE_DIR" not in plan_for().config


def test_what_openvino_cannot_do_is_refused_by_name() -> None:
    plan = plan_for(deterministic=True, static_shape=True, fixed_shapes={"x": [2, 256]}, cuda_graphs=True,
                    compile_timeout_ms=1000, optimize_level=1)
    by_subject = {v.subject: v for v in plan.violations}
    assert set(by_subject) == {"deterministic", "cuda_graphs", "compile_timeout_ms", "optimize_level"}
    assert "no determinism switch" in by_subject["deterministic"].reason


def test_kernel_choices_are_violations_but_auto_and_default_are_not() -> None:
    plan = plan_for(kernels={"matmul": "cublaslt", "attention": ["flash", "efficient"], "conv": "auto",
                             "layernorm": "default"})
    assert sorted((v.kind, v.subject, v.requested) for v in plan.violations) == [
        ("kernel", "attention", "flash/efficient"), ("kernel", "matmul", "cublaslt")]
    assert all("primitiveType" in v.reason for v in plan.violations)


# -- shapes ---------------------------------------------------------------------------------
def test_fixed_shapes_become_a_static_reshape() -> None:
    plan = plan_for(fixed_shapes={"x": [4, 256]})
    assert plan.reshape == {"x": [4, 256]} and plan.violations == []


def test_static_shape_with_dynamic_dims_left_free_is_a_violation() -> None:
    plan = plan_for(static_shape=True)
    (v,) = plan.violations
    assert (v.kind, v.subject) == ("static_shape", "x") and "fixed_shapes['x']" in v.reason
    assert plan_for(static_shape=True, inputs={"x": [4, 256]}).violations == []


@pytest.mark.parametrize(("fixed", "message"), [({"y": [4, 256]}, "not a model input"),
                                                ({"x": [4, 255]}, "does not fit"), ({"x": [4]}, "does not fit")])
def test_fixed_shapes_that_do_not_fit_are_policy_errors(fixed: dict, message: str) -> None:
    with pytest.raises(PolicyError, match=message) as info:
        plan_for(fixed_shapes=fixed)
    assert info.value.field and info.value.field.startswith("execution.fixed_shapes")


# -- devices --------------------------------------------------------------------------------
@pytest.mark.parametrize(("kind", "index", "device", "target"), [
    ("cpu", None, "CPU", "CPU"), ("gpu", None, "GPU", "GPU"), ("gpu", 1, "GPU.1", "GPU.1"), ("npu", None, "NPU", "NPU"),
    ("auto", None, "AUTO", None)])
def test_device_names(kind: str, index: int | None, device: str, target: str | None) -> None:
    assert resolve_device(kind, index, None) == (device, target)


@pytest.mark.parametrize(("override", "target"), [("HETERO:GPU,CPU", None), ("AUTO:GPU,CPU", None), ("GPU.1", "GPU.1")])
def test_engine_options_device_passes_through(override: str, target: str | None) -> None:
    assert resolve_device("cpu", None, override) == (override, target)
    plan = plan_for(options={"device": override}, available=["CPU", "GPU.0", "GPU.1"])
    assert plan.device == override and plan.violations == []


def test_absent_device_under_error_is_a_device_error_naming_what_is_present() -> None:
    with pytest.raises(DeviceError, match="NPU is not present") as info:
        plan_for("npu", fallback="error", available=["CPU", "GPU"])
    assert "CPU, GPU" in str(info.value.expected) and "fallback='warn'" in str(info.value.hint)


@pytest.mark.parametrize("fallback", ["warn", "allow"])
def test_absent_device_otherwise_runs_on_the_cpu_with_a_violation(fallback: str) -> None:
    plan = plan_for("npu", fallback=fallback)
    assert (plan.device, plan.asked, plan.target) == ("CPU", "NPU", "NPU")
    (v,) = plan.violations
    assert (v.kind, v.subject, v.actual) == ("device_unavailable", "NPU", "CPU") and "lists only CPU" in v.reason


def test_absent_member_of_a_meta_device_is_dropped_with_a_violation() -> None:
    plan = plan_for(options={"device": "AUTO:GPU,CPU"})
    assert plan.device == "AUTO:CPU" and kinds(plan) == ["device_unavailable"]
    with pytest.raises(DeviceError):
        plan_for(options={"device": "HETERO:GPU,CPU"}, fallback="error")


@pytest.mark.parametrize("bad", ["", 3, ["GPU"]])
def test_engine_options_device_must_be_a_string(bad: Any) -> None:
    with pytest.raises(PolicyError, match="engine_options.device"):
        plan_for(options={"device": bad})


def test_device_present_and_same_device() -> None:
    assert device_present("GPU", ["CPU", "GPU.0", "GPU.1"]) and device_present("GPU.1", ["GPU.0", "GPU.1"])
    assert device_present("GPU.0", ["GPU"]) and not device_present("GPU.1", ["GPU"])
    assert not device_present("NPU", ["CPU"])
    assert same_device("GPU", "GPU.0") and same_device("CPU", "CPU") and not same_device("GPU.1", "GPU.0")
    assert not same_device("NPU", "CPU")


# -- fitting the plan to the device ---------------------------------------------------------
def test_finish_drops_what_the_device_does_not_support_as_violations() -> None:
    plan = plan_for(num_threads=2, cache_dir="/tmp/x")
    finish(plan, ["PERFORMANCE_HINT", "INFERENCE_PRECISION_HINT", "EXECUTION_MODE_HINT"], None)
    assert "INFERENCE_NUM_THREADS" not in plan.config and plan.config["CACHE_DIR"]  # a Core property: kept
    (v,) = plan.violations
    assert (v.kind, v.subject, v.requested) == ("option", "INFERENCE_NUM_THREADS", "2")


def test_finish_applies_engine_options_config_last() -> None:
    plan = plan_for(precision="fp32")
    finish(plan, CPU_PROPS, {"INFERENCE_PRECISION_HINT": "bf16", "PERF_COUNT": True, "NUM_STREAMS": 2})
    assert plan.config["INFERENCE_PRECISION_HINT"] == "bf16"
    assert plan.config["PERF_COUNT"] == "YES" and plan.config["NUM_STREAMS"] == "2"


def test_finish_refuses_an_unknown_property_with_a_did_you_mean() -> None:
    with pytest.raises(PolicyError, match="CPU has no property 'INFERENCE_NUM_THREAD'") as info:
        finish(plan_for(), CPU_PROPS, {"INFERENCE_NUM_THREAD": 1})
    assert "INFERENCE_NUM_THREADS" in str(info.value.hint)
    with pytest.raises(PolicyError, match="must be a mapping"):
        finish(plan_for(), CPU_PROPS, ["NUM_STREAMS"])
    meta = plan_for("auto")
    finish(meta, None, {"ANYTHING": 1})  # meta devices pass properties on: OpenVINO judges them
    assert meta.config["ANYTHING"] == "1"


# -- evidence -------------------------------------------------------------------------------
@pytest.mark.parametrize(("raw", "word"), [("f32", "fp32"), ("bf16", "bf16"), ("f16", "fp16"), ("u8", "int8"),
                                           ("i8", "int8"), ("I8", "int8"), ("i32", "int32"), ("dynamic", None),
                                           ("", None), (None, None)])
def test_runtime_precision_words(raw: str | None, word: str | None) -> None:
    assert runtime_precision(raw) == word


@pytest.mark.parametrize(("primitive", "word"), [("brgemm_avx512_bf16", "bf16"), ("jit_avx512_I8", "int8"),
                                                 ("gemm_mlas_f32", "fp32"), ("undef", None), ("ref_any", None),
                                                 (None, None)])
def test_precision_from_primitive(primitive: str | None, word: str | None) -> None:
    assert precision_from_primitive(primitive) == word


def test_judge_layer_judges_compute_layers_only() -> None:
    assert judge_layer("FullyConnected", "bf16", "fp32", quantized=False) is not None
    assert judge_layer("Convolution", "fp32", "fp32", quantized=False) is None
    assert judge_layer("Reorder", "bf16", "fp32", quantized=False) is None
    assert judge_layer("Add", "fp32", "bf16", quantized=False) is None
    assert judge_layer("FullyConnected", None, "fp32", quantized=False) is None  # no evidence: no finding


def test_fused_subgraphs_are_judged_only_under_fp32() -> None:
    assert judge_layer("Subgraph", "bf16", "fp32", quantized=False) is not None
    assert judge_layer("Subgraph", "fp32", "bf16", quantized=False) is None


def test_judge_layer_reasons_name_the_device_capabilities() -> None:
    caps = ["BF16", "FP32", "INT8"]
    reason = judge_layer("MatMul", "bf16", "fp16", quantized=False, capabilities=caps, compiled_hint="bf16")
    assert "no f16 compute" in reason and "BF16, FP32, INT8" in reason and "INFERENCE_PRECISION_HINT=bf16" in reason
    reason = judge_layer("MatMul", "fp32", "bf16", quantized=False, capabilities=["FP32"])
    assert "no bf16 compute" in reason


def test_int8_layers_are_judged_only_on_a_quantised_model() -> None:
    assert judge_layer("FullyConnected", "fp32", "int8", quantized=False) is None  # the model-level violation says it
    assert "does not quantise this layer" in judge_layer("FullyConnected", "fp32", "int8", quantized=True)
    assert judge_layer("Convolution", "int8", "int8", quantized=True) is None


def test_the_table_imports_no_openvino() -> None:
    code = "import sys, xpuruntime.inference.engines._openvino; print('openvino' in sys.modules)"
    src = str(Path(__file__).resolve().parents[2] / "src")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": src})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
