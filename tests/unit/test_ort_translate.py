"""The policy -> ONNX Runtime table, as pure data: no session, no provider, no onnxruntime import."""

from __future__ import annotations

import os

import pytest

from xpuruntime._cache import cache_key
from xpuruntime.inference.engines._onnxruntime import (
    CPU,
    CUDA,
    OPENVINO,
    TRT,
    OrtPlan,
    translate,
)
from xpuruntime.policies import Policy

ALL_GPU = [TRT, CUDA, CPU]
KEY = cache_key("model-hash", "policy-hash", "fingerprint-hash")


def plan_for(device: str = "cpu", *, kernels: dict | None = None, tensorrt: bool = False,
             available: list[str] | None = None, index: int | None = None, **execution: object) -> OrtPlan:
    policy = Policy(kernels=kernels, execution=execution or None)
    return translate(policy, device, index, tensorrt=tensorrt, available=available or [CPU], key=KEY)


def cuda_options(**kw: object) -> dict[str, str]:
    plan = plan_for("cuda", available=[CUDA, CPU], **kw)
    return dict(plan.providers)[CUDA]


def trt_options(**kw: object) -> dict[str, str]:
    plan = plan_for("cuda", tensorrt=True, available=ALL_GPU, **kw)
    return dict(plan.providers)[TRT]


def kinds(plan: OrtPlan) -> list[str]:
    return [v.kind for v in plan.violations]


# -- session options ----------------------------------------------------------------------
@pytest.mark.parametrize(("level", "name"), [(0, "ORT_DISABLE_ALL"), (1, "ORT_ENABLE_BASIC"),
                                             (2, "ORT_ENABLE_EXTENDED"), (3, "ORT_ENABLE_ALL")])
def test_optimize_level_maps_to_the_graph_optimisation_level(level: int, name: str) -> None:
    assert plan_for(optimize_level=level).graph_level == name


def test_threads_and_determinism_reach_the_session_options() -> None:
    plan = plan_for(num_threads=3, deterministic=True)
    assert plan.intra_op_threads == 3
    assert plan.deterministic is True
    default = plan_for()
    assert default.intra_op_threads is None and default.deterministic is False


def test_graph_assignment_evidence_is_always_recorded() -> None:
    assert plan_for().config["session.record_ep_graph_assignment_info"] == "1"


def test_plain_cpu_plan_is_honoured_and_targets_cpu() -> None:
    plan = plan_for()
    assert plan.target == CPU
    assert plan.provider_names() == [CPU] == plan.asked
    assert plan.violations == []
    assert plan.model_variant == "original"


# -- CUDA provider ------------------------------------------------------------------------
@pytest.mark.parametrize(("attention", "bits"), [
    (["flash", "efficient"], "3"), ("flash", "1"), ("efficient", "2"), ("cudnn", "8"), ("math", "16"),
    (["flash", "efficient", "cudnn", "math"], "27"), ("mem_efficient", "2"),
])
def test_attention_kernels_become_the_sdpa_kernel_bitmask(attention: object, bits: str) -> None:
    opts = cuda_options(kernels={"attention": attention})
    assert opts["sdpa_kernel"] == bits


def test_attention_default_leaves_sdpa_kernel_to_onnxruntime() -> None:
    assert "sdpa_kernel" not in cuda_options()
    assert "sdpa_kernel" not in cuda_options(kernels={"attention": "auto"})


@pytest.mark.parametrize(("conv", "search"), [("cudnn_exhaustive", "EXHAUSTIVE"), ("cudnn_heuristic", "HEURISTIC"),
                                              ("cudnn_default", "DEFAULT")])
def test_conv_kernels_become_cudnn_conv_algo_search(conv: str, search: str) -> None:
    plan = plan_for("cuda", available=[CUDA, CPU], kernels={"conv": conv})
    assert dict(plan.providers)[CUDA]["cudnn_conv_algo_search"] == search
    assert plan.violations == []


def test_deterministic_pins_the_conv_search_to_default() -> None:
    assert cuda_options(deterministic=True)["cudnn_conv_algo_search"] == "DEFAULT"
    assert "cudnn_conv_algo_search" not in cuda_options()


@pytest.mark.parametrize(("precision", "flag"), [("tf32", "1"), ("fp32", "0"), ("fp16", "0")])
def test_tf32_is_use_tf32_and_fp32_turns_it_off(precision: str, flag: str) -> None:
    assert cuda_options(precision=precision)["use_tf32"] == flag


def test_cuda_graphs_enable_cuda_graph() -> None:
    opts = cuda_options(cuda_graphs=True, static_shape=True)
    assert opts["enable_cuda_graph"] == "1"
    assert "enable_cuda_graph" not in cuda_options()


def test_matmul_auto_turns_on_tunable_ops() -> None:
    opts = cuda_options(kernels={"matmul": "auto"})
    assert opts["tunable_op_enable"] == "1"
    assert opts["tunable_op_tuning_enable"] == "1"
    assert "tunable_op_enable" not in cuda_options()


def test_matmul_cublas_is_honoured_and_cublaslt_is_a_kernel_violation() -> None:
    assert plan_for("cuda", available=[CUDA, CPU], kernels={"matmul": "cublas"}).violations == []
    plan = plan_for("cuda", available=[CUDA, CPU], kernels={"matmul": "cublaslt"})
    (violation,) = plan.violations
    assert (violation.kind, violation.subject, violation.requested) == ("kernel", "matmul", "cublaslt")
    assert "cuBLAS" in violation.reason


def test_attention_backend_onnxruntime_lacks_is_a_kernel_violation() -> None:
    plan = plan_for("cuda", available=[CUDA, CPU], kernels={"attention": "triton"})
    assert kinds(plan) == ["kernel"]
    assert "'triton'" in plan.violations[0].reason


def test_device_index_reaches_the_provider() -> None:
    plan = plan_for("cuda", index=1, available=[CUDA, CPU])
    assert dict(plan.providers)[CUDA]["device_id"] == "1"


def test_cuda_plan_keeps_cpu_last() -> None:
    plan = plan_for("cuda", available=[CUDA, CPU])
    assert plan.provider_names() == [CUDA, CPU]
    assert plan.target == CUDA


# -- precision ----------------------------------------------------------------------------
def test_bf16_on_cuda_is_a_precision_violation() -> None:
    plan = plan_for("cuda", available=[CUDA, CPU], precision="bf16")
    (violation,) = plan.violations
    assert (violation.kind, violation.requested, violation.actual) == ("precision", "bf16", "fp32")
    assert "trt_bf16_enable" in violation.reason


@pytest.mark.parametrize(("precision", "variant"), [("fp16", "fp16"), ("int8", "int8"), ("fp32", "original"),
                                                    ("tf32", "original")])
def test_precision_picks_the_model_variant(precision: str, variant: str) -> None:
    assert plan_for("cuda", available=[CUDA, CPU], precision=precision).model_variant == variant


def test_fp16_on_cpu_says_where_precision_evidence_comes_from() -> None:
    plan = plan_for(precision="fp16")
    assert plan.model_variant == "fp16"
    assert any("explain()" in n for n in plan.notes)


def test_tf32_on_cpu_is_a_note_not_a_violation() -> None:
    plan = plan_for(precision="tf32")
    assert plan.violations == []
    assert any("tf32" in n for n in plan.notes)


# -- kernels on the CPU -------------------------------------------------------------------
def test_kernels_on_cpu_are_kernel_violations_one_per_op() -> None:
    plan = plan_for(kernels={"attention": "flash", "conv": "cudnn_exhaustive", "matmul": "cublaslt"})
    assert sorted(v.subject for v in plan.violations) == ["attention", "conv", "matmul"]
    assert set(kinds(plan)) == {"kernel"}
    assert all(CPU in v.reason for v in plan.violations)


def test_auto_and_default_kernels_are_never_violations() -> None:
    assert plan_for(kernels={"attention": "auto", "matmul": "default", "conv": "auto"}).violations == []


def test_per_shape_rules_are_noted_as_unapplied() -> None:
    plan = plan_for("cuda", available=[CUDA, CPU],
                    kernels={"matmul": {"prefer": "cublas", "rules": [{"when": {"m": ">=64"}, "use": "cublaslt"}]}})
    assert any("per-shape rules" in n for n in plan.notes)


# -- unavailable providers ----------------------------------------------------------------
def test_unavailable_cuda_is_refused_by_name_and_cpu_kept_last() -> None:
    plan = plan_for("cuda", available=[CPU])
    assert plan.provider_names() == [CPU]
    assert plan.asked == [CUDA, CPU]
    assert plan.target == CUDA  # still what every node is requested on: the receipt shows the fallback
    (violation,) = plan.violations
    assert (violation.kind, violation.subject) == ("provider_unavailable", CUDA)
    assert "xpuruntime[gpu]" in violation.reason


def test_tensorrt_chain_without_tensorrt_keeps_cuda_then_cpu() -> None:
    plan = plan_for("cuda", tensorrt=True, available=[CUDA, CPU])
    assert plan.provider_names() == [CUDA, CPU]
    assert plan.asked == [TRT, CUDA, CPU]
    assert plan.target == TRT
    assert [(v.kind, v.subject) for v in plan.violations] == [("provider_unavailable", TRT)]


def test_tensorrt_chain_with_nothing_available() -> None:
    plan = plan_for("cuda", tensorrt=True, available=[CPU])
    assert plan.provider_names() == [CPU]
    assert {v.subject for v in plan.violations} == {TRT, CUDA}


def test_cuda_graphs_off_the_gpu_is_an_option_violation() -> None:
    plan = plan_for(cuda_graphs=True, static_shape=True)
    (violation,) = plan.violations
    assert (violation.kind, violation.subject) == ("option", "cuda_graphs")


# -- TensorRT provider ---------------------------------------------------------------------
@pytest.mark.parametrize(("precision", "flags"), [
    ("fp16", {"trt_fp16_enable": "1", "trt_bf16_enable": "0", "trt_int8_enable": "0"}),
    ("bf16", {"trt_fp16_enable": "0", "trt_bf16_enable": "1", "trt_int8_enable": "0"}),
    ("int8", {"trt_fp16_enable": "0", "trt_bf16_enable": "0", "trt_int8_enable": "1"}),
    ("fp32", {"trt_fp16_enable": "0", "trt_bf16_enable": "0", "trt_int8_enable": "0"}),
])
def test_tensorrt_precision_flags(precision: str, flags: dict[str, str]) -> None:
    opts = trt_options(precision=precision)
    assert {k: opts[k] for k in flags} == flags


def test_tensorrt_converts_precision_itself_and_bf16_is_honoured() -> None:
    for precision in ("fp16", "int8", "bf16"):
        plan = plan_for("cuda", tensorrt=True, available=ALL_GPU, precision=precision)
        assert plan.model_variant == "original"
        assert "precision" not in kinds(plan)


def test_tensorrt_caches_live_under_cache_dir_keyed_by_hashes(tmp_path: object) -> None:
    opts = trt_options(cache_dir=str(tmp_path))
    folder = os.path.join(str(tmp_path), "tensorrt", KEY)
    assert opts["trt_engine_cache_enable"] == "1" and opts["trt_timing_cache_enable"] == "1"
    assert opts["trt_engine_cache_path"] == folder
    assert opts["trt_timing_cache_path"] == folder


def test_tensorrt_without_cache_dir_sets_no_cache() -> None:
    assert "trt_engine_cache_path" not in trt_options()


@pytest.mark.parametrize(("level", "builder"), [(0, "0"), (1, "2"), (2, "3"), (3, "5")])
def test_tensorrt_builder_optimization_level(level: int, builder: str) -> None:
    assert trt_options(optimize_level=level)["trt_builder_optimization_level"] == builder


def test_tensorrt_cuda_graphs() -> None:
    assert trt_options(cuda_graphs=True, static_shape=True)["trt_cuda_graph_enable"] == "1"


def test_cache_key_is_plain_data_without_path_separators() -> None:
    key = cache_key("../../etc/passwd", "a/b\\c", os.sep * 3)
    assert os.sep not in key and "/" not in key and "\\" not in key and ".." not in key
    assert key == cache_key("../../etc/passwd", "a/b\\c", os.sep * 3)
    assert key != cache_key("other", "a/b\\c", os.sep * 3)
    assert key.isalnum()


# -- OpenVINO and QNN providers -------------------------------------------------------------
@pytest.mark.parametrize(("device", "ov_device"), [("gpu", "GPU"), ("npu", "NPU")])
def test_openvino_provider_device_type(device: str, ov_device: str) -> None:
    plan = plan_for(device, available=[OPENVINO, CPU])
    assert plan.target == OPENVINO
    assert dict(plan.providers)[OPENVINO]["device_type"] == ov_device


def test_openvino_provider_options_from_the_policy(tmp_path: object) -> None:
    plan = plan_for("gpu", available=[OPENVINO, CPU], precision="fp16", num_threads=4, cache_dir=str(tmp_path))
    opts = dict(plan.providers)[OPENVINO]
    assert opts["precision"] == "FP16"
    assert opts["num_of_threads"] == "4"
    assert opts["cache_dir"] == os.path.join(str(tmp_path), "openvino-ep")


@pytest.mark.parametrize(("precision", "hint"), [("fp32", "ACCURACY"), ("tf32", "FP32")])
def test_openvino_precision_hints(precision: str, hint: str) -> None:
    plan = plan_for("npu", available=[OPENVINO, CPU], precision=precision)
    assert dict(plan.providers)[OPENVINO]["precision"] == hint


def test_openvino_provider_refuses_int8_by_name() -> None:
    plan = plan_for("gpu", available=[OPENVINO, CPU], precision="int8")
    assert "precision" in kinds(plan)


def test_auto_prefers_openvino_when_listed() -> None:
    plan = plan_for("auto", available=[OPENVINO, CPU])
    assert dict(plan.providers)[OPENVINO]["device_type"] == "AUTO:GPU,CPU"


def test_auto_takes_cuda_when_available_and_cpu_otherwise() -> None:
    assert plan_for("auto", available=[CUDA, CPU]).target == CUDA
    auto = plan_for("auto")
    assert auto.target == CPU and auto.violations == []


# the QNN provider's options are tested in test_qnn_translate.py


def test_npu_without_openvino_or_qnn_is_refused() -> None:
    plan = plan_for("npu")
    assert plan.provider_names() == [CPU]
    assert [(v.kind, v.subject) for v in plan.violations] == [("provider_unavailable", OPENVINO)]


@pytest.mark.parametrize("precision", ["fp32", "tf32", "fp16"])
def test_ieee_fp32_on_cuda_says_what_it_costs(precision: str) -> None:
    plan = plan_for("cuda", available=[CUDA, CPU], precision=precision)
    told = [n for n in plan.notes if "use_tf32=0" in n and "precision: tf32" in n]
    assert bool(told) == (precision == "fp32")
