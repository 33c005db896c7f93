"""ONNX Runtime's plugin providers as pure data: discovery, device choice and option translation.

The TensorRT RTX plugin (``onnxruntime-ep-nv-tensorrt-rtx``) lists only RTX GPUs (compute capability 8.6, 8.9,
12.0 and newer), so on the project's machines (CPU here, H100 on the GPU runner) it is translated and checked here,
as data; the OpenVINO plugin runs for real in tests/engines/test_ort_plugin_eps.py.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import pytest

from xpuruntime._cache import cache_key
from xpuruntime.inference.engines._onnxruntime import (
    CPU,
    CUDA,
    OPENVINO,
    PLUGIN_PACKAGES,
    TRT_RTX,
    OrtPlan,
    PluginProvider,
    installed_plugins,
    translate,
)
from xpuruntime.policies import Policy

KEY = cache_key("model-hash", "policy-hash", "fingerprint-hash")
RTX = PluginProvider(TRT_RTX, "onnxruntime-ep-nv-tensorrt-rtx-cu13", "0.5.0", (("gpu", "gpu:0"),))
RTX_TWO = PluginProvider(TRT_RTX, "onnxruntime-ep-nv-tensorrt-rtx-cu13", "0.5.0", (("gpu", "gpu:0"), ("gpu", "gpu:1")))
RTX_ON_H100 = PluginProvider(TRT_RTX, "onnxruntime-ep-nv-tensorrt-rtx-cu13", "0.5.0", (),
                             reason="NvTensorRTRTXExecutionProvider is registered, but ONNX Runtime lists no device")
OV_CPU = PluginProvider(OPENVINO, "onnxruntime-ep-openvino", "1.8.1", (("cpu", "CPU"),))
OV_GPU = PluginProvider(OPENVINO, "onnxruntime-ep-openvino", "1.8.1", (("cpu", "CPU"), ("gpu", "GPU.0")))


def plan_for(device: str = "cuda", *, plugins: dict[str, PluginProvider], providers: list[str] | None = None,
             available: list[str] | None = None, index: int | None = None, **execution: object) -> OrtPlan:
    policy = Policy(execution=execution or None)
    return translate(policy, device, index, tensorrt=False, available=available or [CPU], key=KEY,
                     plugins=plugins, providers=providers)


def rtx(**execution: object) -> OrtPlan:
    return plan_for(plugins={TRT_RTX: RTX}, providers=[TRT_RTX], **execution)


def kinds(plan: OrtPlan) -> list[str]:
    return [v.kind for v in plan.violations]


# -- TensorRT RTX ---------------------------------------------------------------------------------
def test_tensorrt_rtx_is_given_its_gpu_device_and_comes_first() -> None:
    plan = rtx()
    assert plan.target == TRT_RTX and plan.provider_names() == [TRT_RTX, CPU]
    assert plan.plugins == {TRT_RTX: "gpu:0"}
    assert plan.violations == []
    assert any("onnxruntime-ep-nv-tensorrt-rtx-cu13 0.5.0" in n for n in plan.notes)


def test_the_device_index_picks_the_plugins_gpu() -> None:
    assert plan_for(plugins={TRT_RTX: RTX_TWO}, providers=[TRT_RTX], index=1).plugins == {TRT_RTX: "gpu:1"}
    missing = plan_for(plugins={TRT_RTX: RTX_TWO}, providers=[TRT_RTX], index=2)
    assert missing.provider_names() == [CPU] and kinds(missing) == ["provider_unavailable"]
    assert "gpu:0, gpu:1" in missing.violations[0].reason


def test_tensorrt_rtx_options_from_the_policy(tmp_path: object) -> None:
    plan = rtx(cuda_graphs=True, cache_dir=str(tmp_path), fixed_shapes={"x": [2, 64], "mask": [2, 1, 8]})
    opts = dict(plan.providers)[TRT_RTX]
    assert opts["enable_cuda_graph"] == "1"
    assert opts["nv_runtime_cache_path"] == os.path.join(str(tmp_path), "tensorrt-rtx", KEY)
    for bound in ("min", "opt", "max"):
        assert opts[f"nv_profile_{bound}_shapes"] == "x:2x64,mask:2x1x8"
    assert "option" not in kinds(plan)  # CUDA graphs are the TensorRT RTX provider's own


def test_tensorrt_rtx_defaults_pass_no_options() -> None:
    assert dict(rtx().providers)[TRT_RTX] == {}


def test_fp16_on_tensorrt_rtx_is_the_float16_model_copy() -> None:
    plan = rtx(precision="fp16")
    assert plan.model_variant == "fp16" and plan.violations == []
    assert any("no precision switch" in n for n in plan.notes)


@pytest.mark.parametrize(("precision", "words"), [("int8", "QuantizeLinear/DequantizeLinear"), ("bf16", "bf16")])
def test_tensorrt_rtx_refuses_what_it_cannot_build_by_name(precision: str, words: str) -> None:
    plan = rtx(precision=precision)
    [refused] = [v for v in plan.violations if v.kind == "precision"]
    assert refused.requested == precision and words in refused.reason
    assert plan.model_variant == "original"


def test_kernel_choices_are_refused_on_tensorrt_rtx() -> None:
    policy = Policy(kernels={"matmul": "cublaslt"})
    plan = translate(policy, "cuda", None, tensorrt=False, available=[CPU], key=KEY, plugins={TRT_RTX: RTX},
                     providers=[TRT_RTX])
    assert "kernel" in kinds(plan)


def test_on_an_h100_the_registered_plugin_lists_no_device_and_says_so() -> None:
    plan = plan_for(plugins={TRT_RTX: RTX_ON_H100}, providers=[TRT_RTX, CUDA], available=[CUDA, CPU])
    assert plan.provider_names() == [CUDA, CPU] and plan.plugins == {}
    assert plan.target == TRT_RTX  # what was asked: nodes that land elsewhere are fallbacks
    [missing] = plan.violations
    assert missing.kind == "provider_unavailable" and "lists no device" in missing.reason


def test_tensorrt_rtx_without_its_package_names_the_install_line() -> None:
    plan = plan_for(plugins={}, providers=[TRT_RTX])
    [missing] = plan.violations
    assert "pip install onnxruntime-ep-nv-tensorrt-rtx" in missing.reason
    assert "8.6, 8.9 or 12.0" in missing.reason


def test_the_device_alone_never_picks_tensorrt_rtx() -> None:
    plan = plan_for(plugins={TRT_RTX: RTX}, available=[CUDA, CPU])
    assert plan.target == CUDA and plan.plugins == {}


# -- the OpenVINO plugin ---------------------------------------------------------------------------
def test_openvino_plugin_options_are_load_config_by_device(tmp_path: object) -> None:
    plan = plan_for("gpu", plugins={OPENVINO: OV_GPU}, precision="fp16", num_threads=4, cache_dir=str(tmp_path))
    assert plan.target == OPENVINO and plan.plugins == {OPENVINO: "GPU.0"}
    opts = dict(plan.providers)[OPENVINO]
    assert set(opts) == {"load_config"}  # device_type, precision, num_of_threads, cache_dir: ignored by the plugin
    assert json.loads(opts["load_config"]) == {"GPU": {
        "INFERENCE_PRECISION_HINT": "f16", "EXECUTION_MODE_HINT": "PERFORMANCE", "INFERENCE_NUM_THREADS": "4",
        "CACHE_DIR": os.path.join(str(tmp_path), "openvino-ep")}}
    assert plan.model_variant == "original" and plan.violations == []


@pytest.mark.parametrize(("precision", "hint", "mode"), [("fp32", "f32", "ACCURACY"), ("tf32", "f32", "ACCURACY"),
                                                         ("bf16", "bf16", "PERFORMANCE")])
def test_openvino_plugin_precision_hints(precision: str, hint: str, mode: str) -> None:
    plan = plan_for("cpu", plugins={OPENVINO: OV_CPU}, providers=[OPENVINO], precision=precision)
    config = json.loads(dict(plan.providers)[OPENVINO]["load_config"])
    assert config == {"CPU": {"INFERENCE_PRECISION_HINT": hint, "EXECUTION_MODE_HINT": mode}}
    assert "precision" not in kinds(plan)


def test_auto_takes_the_openvino_plugin_only_for_an_accelerator() -> None:
    assert plan_for("auto", plugins={OPENVINO: OV_CPU}).target == CPU
    on_gpu = plan_for("auto", plugins={OPENVINO: OV_GPU})
    assert on_gpu.target == OPENVINO and on_gpu.plugins == {OPENVINO: "GPU.0"}


def test_a_device_the_openvino_plugin_does_not_list_is_refused_with_what_it_lists() -> None:
    plan = plan_for("gpu", plugins={OPENVINO: OV_CPU})
    [missing] = plan.violations
    assert missing.subject == OPENVINO and "lists CPU" in missing.reason


# -- discovery -------------------------------------------------------------------------------------
@dataclass
class Dist:
    """The part of importlib.metadata.Distribution that discovery reads."""

    name: str
    version: str
    top_level: str | None = None
    metadata: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.metadata = {"Name": self.name}

    def read_text(self, filename: str) -> str | None:
        return self.top_level if filename == "top_level.txt" else None


def test_installed_plugins_reads_distribution_metadata() -> None:
    found = installed_plugins([
        Dist("onnxruntime-ep-openvino", "1.8.1"), Dist("onnxruntime_ep_nv_tensorrt_rtx_cu13", "0.5.0"),
        Dist("onnxruntime-ep-nv-tensorrt-rtx", "0.5.0"),  # the meta package: no module of its own
        Dist("onnxruntime-ep-webgpu", "0.4.0", top_level="onnxruntime_ep_webgpu\n"),
        Dist("onnxruntime", "1.32.0"), Dist("onnxruntime-ep-openvino", "1.7.0"),  # a second copy: the first wins
    ])
    assert [(p.distribution, p.version, p.module, p.providers) for p in found] == [
        ("onnxruntime-ep-nv-tensorrt-rtx-cu13", "0.5.0", "onnxruntime_ep_nv_tensorrt_rtx", (TRT_RTX,)),
        ("onnxruntime-ep-openvino", "1.8.1", "onnxruntime_ep_openvino", (OPENVINO,)),
        ("onnxruntime-ep-webgpu", "0.4.0", "onnxruntime_ep_webgpu", ()),  # names from its get_ep_names()
    ]


def test_every_known_package_names_its_library_function_and_providers() -> None:
    for package in PLUGIN_PACKAGES.values():
        assert package.distribution.startswith("onnxruntime-ep-") and package.library == "get_library_path"
        assert package.providers and package.hint
