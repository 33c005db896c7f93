"""ONNX Runtime's private side: the translation table, model variants and the CUDA-graph binding.

- :func:`translate`: policy + device -> the native settings (session options, provider chain and options).
  Pure data in, pure data out (no onnxruntime import), so it is tested without any provider. What ONNX
  Runtime cannot do as asked becomes a :class:`Violation` with the reason, here, before the session is built;
  what it did is checked afterwards from its own evidence.
- :func:`convert`: model variants made with ONNX Runtime's own tools (a float16 copy, a dynamically quantised
  int8 copy), cached by model hash + policy hash + fingerprint under ``cache_dir/onnxruntime`` through
  :mod:`xpuruntime._cache` (a private folder, atomic writes, a checksum per entry, one builder at a time across
  processes); without a cache_dir the last few live in memory. A damaged entry is rebuilt with a warning.
- Plugin providers (ONNX Runtime >= 1.24 loads providers from separate packages, ``onnxruntime-ep-*``):
  :data:`PLUGIN_PACKAGES` names the known ones, :func:`installed_plugins` finds them through their distribution
  metadata, and :func:`translate` takes what registration found (:class:`PluginProvider`, plain data) so the
  plan says which plugin device each provider gets and which options, in the plugin's own option names.
- :class:`GraphBinding`: CUDA graphs on ONNX Runtime, one persistent IO binding whose device buffers never move.
  ONNX Runtime replays a captured graph on the addresses it captured, so host feeds are copied into buffers
  allocated once (``update_inplace``), outputs land in buffers allocated once, and device feeds must be the
  same tensors every run.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import json
import logging
import os
import tempfile
import threading
import warnings
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from xpuruntime import _cache
from xpuruntime._models import ModelSource
from xpuruntime.errors import InputError, ModelLoadError, UnsupportedOperationError
from xpuruntime.inference.feeds import DeviceArray
from xpuruntime.policies import Policy
from xpuruntime.receipts import Violation

__all__ = ["OrtPlan", "translate", "provider_plan", "CPU", "CUDA", "TRT", "OPENVINO", "QNN", "TRT_RTX", "SDPA_BITS",
           "QNN_PERFORMANCE_MODE", "convert", "fuse", "fusion_model_type", "fused_op_counts", "FUSED_OPS",
           "attention_shape", "fusion_summary", "record_fusions",
           "GraphBinding", "ORT_TYPES", "PluginPackage", "PluginProvider", "PLUGIN_PACKAGES", "installed_plugins",
           "cpu_preferred_nodes", "judge_placement", "CPU_PREFERRED_REASON"]

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TRT = "TensorrtExecutionProvider"
OPENVINO = "OpenVINOExecutionProvider"
QNN = "QNNExecutionProvider"
TRT_RTX = "NvTensorRTRTXExecutionProvider"  # a plugin provider only (onnxruntime-ep-nv-tensorrt-rtx)

# onnxruntime/contrib_ops/cpu/bert/attention_common.h, enum AttentionBackend
SDPA_BITS = {"flash": 1, "efficient": 2, "cudnn": 8, "math": 16}
CONV_SEARCH = {"cudnn_exhaustive": "EXHAUSTIVE", "cudnn_heuristic": "HEURISTIC", "cudnn_default": "DEFAULT"}
#: engine_options["provider_selection"]: ONNX Runtime's device policies for automatic provider selection
#: (``SessionOptions.set_provider_selection_policy(OrtExecutionProviderDevicePolicy.<NAME>)``, onnxruntime >= 1.22)
PROVIDER_SELECTION = ("default", "prefer_cpu", "prefer_npu", "prefer_gpu", "max_performance", "max_efficiency",
                      "min_overall_power")
# ORT GraphOptimizationLevel names by xpuruntime optimize_level
GRAPH_LEVELS = {0: "ORT_DISABLE_ALL", 1: "ORT_ENABLE_BASIC", 2: "ORT_ENABLE_EXTENDED", 3: "ORT_ENABLE_ALL"}
_OV_DEVICE = {"cpu": "CPU", "gpu": "GPU", "npu": "NPU", "auto": "AUTO:GPU,CPU"}
_OV_PRECISION = {"fp32": "ACCURACY", "tf32": "FP32", "fp16": "FP16", "bf16": None, "int8": None}
# QNN: latency first (override with provider_options {"QNNExecutionProvider": {"htp_performance_mode": ...}})
QNN_PERFORMANCE_MODE = "burst"
# htp_graph_finalization_optimization_mode by optimize_level: "1" prepares fastest, "0" is QNN's default, "3" slowest
_QNN_FINALIZE = {0: "1", 1: "0", 2: "2", 3: "3"}
_QNN_BF16 = ("the QNN HTP runs bf16 (htp_bf16_enable) only with soc_model >= 88, which xpuruntime cannot detect: pass "
             "engine_options={'provider_options': {'QNNExecutionProvider': {'htp_bf16_enable': '1', 'soc_model': "
             "'<id>'}}} and precision 'fp32'")
_QNN_INT8 = ("the QNN HTP runs int8 only from QuantizeLinear/DequantizeLinear nodes already in the model (quantize it "
             "with onnxruntime.quantization.quantize_static and get_qnn_qdq_config); xpuruntime's dynamic int8 copy "
             "has no QNN kernels, so the model runs as given (for a QDQ model, accept this with fallback 'allow')")
_NPU_MISSING = ("this onnxruntime build has no NPU provider: on a Snapdragon device (Windows on Arm, Android) pip "
                "uninstall onnxruntime && pip install onnxruntime-qnn (QNN provider); on an Intel NPU pip install "
                "onnxruntime-ep-openvino (the OpenVINO plugin provider) or use engine='openvino'")


@dataclass
class OrtPlan:
    """Everything needed to build an ONNX Runtime session for one policy on one device."""

    providers: list[tuple[str, dict[str, str]]]  # passed to ONNX Runtime, in priority order, CPU last
    target: str  # the provider every node is requested on
    asked: list[str] = field(default_factory=list)  # the providers asked for, in order, available or not
    graph_level: str = "ORT_ENABLE_ALL"
    intra_op_threads: int | None = None
    deterministic: bool = False
    config: dict[str, str] = field(default_factory=dict)  # session config entries
    model_variant: str = "original"  # original | fp16 | int8
    fusions: str = "off"  # off | auto | bert | gpt2 | vit: ONNX Runtime's transformers optimizer, before the variant
    cached_model: str | None = None  # a compiled context model (QNN EPContext) to load instead of the model
    plugins: dict[str, str] = field(default_factory=dict)  # plugin provider -> its device (add_provider_for_devices)
    selection: str | None = None  # ONNX Runtime picks the providers by this device policy (PROVIDER_SELECTION)
    violations: list[Violation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def refuse(self, kind: str, subject: str, requested: str, actual: str, reason: str) -> None:
        self.violations.append(Violation(kind, subject, requested, actual, reason))

    def provider_names(self) -> list[str]:
        return [name for name, _ in self.providers]

    def in_use(self, provider: str) -> bool:
        """True when ``provider`` is among those passed to ONNX Runtime."""
        return provider in self.provider_names()


def translate(policy: Policy, device_kind: str, device_index: int | None, *, tensorrt: bool,
              available: list[str], key: str, plugins: Mapping[str, PluginProvider] | None = None,
              providers: Sequence[str] | None = None) -> OrtPlan:
    """Policy + device -> OrtPlan. ``available`` is ``onnxruntime.get_available_providers()``; ``plugins`` the
    registered plugin providers with their devices; ``providers`` the user's own provider list, if any."""
    ex, plugins = policy.execution, dict(plugins or {})
    built_in = [a for a in available if a not in plugins]
    if providers:
        chain = [(n, _base_options(n, device_index)) for n in providers]
        usable = built_in + [n for n, p in plugins.items() if _plugin_device(p, device_kind, device_index)]
    else:
        usable = built_in + [n for n, p in plugins.items()
                             if _plugin_device(p, device_kind, device_index, accelerators_only=True)]
        chain = _chain(device_kind, device_index, tensorrt, usable)
    plan = provider_plan(chain, usable, plugins)
    if not providers:  # a provider the user named keeps its own reason
        _npu_missing(plan, device_kind)
    _plugin_devices(plan, plugins, device_kind, device_index)
    plan.graph_level = GRAPH_LEVELS[ex.optimize_level]
    plan.intra_op_threads = ex.num_threads
    plan.deterministic = ex.deterministic
    plan.config["session.record_ep_graph_assignment_info"] = "1"
    _precision(policy, plan)
    _kernels(policy, plan)
    _cuda_options(policy, plan)
    _tensorrt_options(policy, plan, key)
    _openvino_options(policy, plan, device_kind)
    _qnn_options(policy, plan, key, device_index)
    _tensorrt_rtx_options(policy, plan, key)
    _graph_options(policy, plan)
    _compile_and_fusions(policy, plan)
    return plan


def provider_plan(chain: list[tuple[str, dict[str, str]]], available: list[str],
                  plugins: Mapping[str, PluginProvider] | None = None) -> OrtPlan:
    """A plan for a provider chain: unavailable providers are refused by name; CPU is always last."""
    chain = [(n, o) for n, o in chain if n != CPU]
    plan = OrtPlan(providers=[], target=chain[0][0] if chain else CPU, asked=[n for n, _ in chain] + [CPU])
    for name, opts in chain:
        if name in available:
            plan.providers.append((name, dict(opts)))
        else:
            plugin = (plugins or {}).get(name)
            plan.refuse("provider_unavailable", name, name, "not in onnxruntime.get_available_providers()"
                        if plugin is None else "no usable plugin device", _missing_reason(name, plugin))
    plan.providers.append((CPU, {}))
    return plan


def _base_options(name: str, index: int | None) -> dict[str, str]:
    return {"device_id": str(index or 0)} if name in (CUDA, TRT) else {}


def _chain(kind: str, index: int | None, tensorrt: bool, available: list[str]) -> list[tuple[str, dict[str, str]]]:
    index = index or 0
    if tensorrt:
        chain = [(TRT, {"device_id": str(index)}), (CUDA, {"device_id": str(index)})]
    elif kind == "cuda":
        chain = [(CUDA, {"device_id": str(index)})]
    elif kind in ("npu", "gpu") or kind == "auto" and OPENVINO in available:
        chain = _npu_gpu_chain(kind, available)
    else:
        chain = []
    if kind == "auto" and not chain and CUDA in available:
        chain = [(CUDA, {"device_id": "0"})]
    return chain


def _npu_gpu_chain(kind: str, available: list[str]) -> list[tuple[str, dict[str, str]]]:
    if kind == "npu" and QNN in available and OPENVINO not in available:
        return [(QNN, {})]
    return [(OPENVINO, {"device_type": _OV_DEVICE.get(kind, "AUTO:GPU,CPU")})]


def _missing_reason(provider: str, plugin: PluginProvider | None = None) -> str:
    if plugin is not None:
        return plugin.reason or f"{provider} ({plugin.distribution} {plugin.version}) lists no device of the kind asked " \
                                f"for; ONNX Runtime lists {', '.join(l for _, l in plugin.devices) or 'none'}"
    return {
        CUDA: "this onnxruntime build has no CUDA provider, or no CUDA device/driver is present "
              "(pip install 'xpuruntime[gpu]' on a machine with an NVIDIA GPU)",
        TRT: "this onnxruntime build has no TensorRT provider (needs onnxruntime-gpu and the TensorRT libraries)",
        OPENVINO: "the OpenVINO provider is not in this onnxruntime build: pip install onnxruntime-ep-openvino "
                  "(its plugin package, onnxruntime >= 1.23; or pip install 'xpuruntime[openvino-ep]'), or use "
                  "engine='openvino'",
        TRT_RTX: "the TensorRT RTX provider is a plugin package: pip install onnxruntime-ep-nv-tensorrt-rtx "
                 "(onnxruntime >= 1.24; RTX GPUs of compute capability 8.6, 8.9 or 12.0 and newer)",
        QNN: "the QNN provider is not in this onnxruntime build (pip uninstall onnxruntime && pip install "
             "onnxruntime-qnn, on a Snapdragon device: Windows on Arm or Android)",
    }.get(provider, "provider not available in this onnxruntime build")


def _precision(policy: Policy, plan: OrtPlan) -> None:
    precision = policy.execution.precision
    on_gpu = plan.target in (CUDA, TRT)
    if precision == "fp16":
        plan.model_variant = "fp16" if plan.target != TRT else "original"  # TRT converts itself
        if plan.target == CPU:
            plan.notes.append("the CPU provider has float16 kernels for few ops and runs the others in float32 "
                              "behind Casts it inserts; explain() reads each node's precision from a profiled run")
    elif precision == "int8":
        plan.model_variant = "int8" if plan.target != TRT else "original"  # TRT int8 needs calibration
        if plan.target == TRT:
            plan.notes.append("TensorRT int8 builds need a calibration table (engine_options provider_options)")
    elif precision == "bf16" and plan.target not in (TRT, OPENVINO):
        plan.refuse("precision", "model", "bf16", "fp32",
                    "ONNX Runtime has no bf16 model converter; bf16 is honoured only by the TensorRT provider "
                    "(trt_bf16_enable) or engine='openvino'")
    elif precision == "tf32" and not on_gpu:
        plan.notes.append("tf32 has no meaning on the CPU provider; float32 math is IEEE there")


def _kernels(policy: Policy, plan: OrtPlan) -> None:
    kp = policy.kernels
    for op in kp.ops:
        kernels = kp.preference(op).prefer  # type: ignore[union-attr]
        if set(kernels) <= {"default", "auto"}:
            continue
        reason = _kernel_reason(op, kernels, plan.target)
        if reason:
            plan.refuse("kernel", op, "/".join(kernels), "engine default", reason)
        if kp.preference(op).rules:  # type: ignore[union-attr]
            plan.notes.append(f"{op}: per-shape rules are not applied by ONNX Runtime (it picks one kernel per op)")


def _kernel_reason(op: str, kernels: tuple[str, ...], target: str) -> str | None:
    named = [k for k in kernels if k not in ("auto", "default")]
    if target != CUDA:
        return f"kernel choice for {op} is only translated for the CUDA provider; {target} picks its own"
    if op == "attention":
        unknown = [k for k in named if k not in SDPA_BITS]
        return f"the CUDA provider's sdpa_kernel has no {unknown[0]!r} backend" if unknown else None
    if op == "conv":
        return None if named[0] in CONV_SEARCH else f"no cudnn_conv_algo_search value for {named[0]!r}"
    if op == "matmul":
        return (f"the CUDA provider always calls cuBLAS; {named[0]!r} cannot be selected "
                "(use 'auto' for TunableOp, or engine='torch')") if named[0] != "cublas" else None
    return f"ONNX Runtime has no switch for the {op} kernel"


def _cuda_options(policy: Policy, plan: OrtPlan) -> None:
    opts = dict(plan.providers)
    if CUDA not in opts:
        return
    cuda, ex, kp = opts[CUDA], policy.execution, policy.kernels
    cuda["use_tf32"] = "1" if ex.precision == "tf32" else "0"
    if ex.precision == "fp32":
        plan.notes.append("precision fp32 is IEEE float32: the CUDA provider's default TF32 math is switched off "
                          "(use_tf32=0), which is slower on tensor-core GPUs (BERT-base, batch 32, H100: 20.9 ms "
                          "against 8.4 ms); set precision: tf32 to accept TF32 rounding for that speed")
    attention = [k for k in kp.resolve("attention") if k in SDPA_BITS]
    if attention:
        cuda["sdpa_kernel"] = str(sum(SDPA_BITS[k] for k in attention))
    conv = kp.resolve("conv")[0]
    if conv in CONV_SEARCH:
        cuda["cudnn_conv_algo_search"] = CONV_SEARCH[conv]
    elif ex.deterministic:
        cuda["cudnn_conv_algo_search"] = "DEFAULT"
    if kp.resolve("matmul")[0] == "auto":
        cuda.update(tunable_op_enable="1", tunable_op_tuning_enable="1")
    if ex.cuda_graphs and plan.target == CUDA:
        cuda["enable_cuda_graph"] = "1"
    plan.providers = [(n, cuda if n == CUDA else o) for n, o in plan.providers]


def _tensorrt_options(policy: Policy, plan: OrtPlan, key: str) -> None:
    opts = dict(plan.providers)
    if plan.target != TRT or TRT not in opts:
        return
    trt, ex = opts[TRT], policy.execution
    trt.update(trt_fp16_enable=_flag(ex.precision == "fp16"), trt_bf16_enable=_flag(ex.precision == "bf16"),
               trt_int8_enable=_flag(ex.precision == "int8"),
               trt_builder_optimization_level=str({0: 0, 1: 2, 2: 3, 3: 5}[ex.optimize_level]))
    if ex.cuda_graphs:
        trt["trt_cuda_graph_enable"] = "1"
    if ex.cache_dir:
        folder = os.path.join(ex.cache_dir, "tensorrt", key)
        trt.update(trt_engine_cache_enable="1", trt_engine_cache_path=folder,
                   trt_timing_cache_enable="1", trt_timing_cache_path=folder)


def _openvino_options(policy: Policy, plan: OrtPlan, kind: str) -> None:
    opts = dict(plan.providers)
    if OPENVINO not in opts:
        return
    if OPENVINO in plan.plugins:
        _openvino_plugin_options(policy, plan, opts[OPENVINO])
        return
    ov, ex = opts[OPENVINO], policy.execution
    hint = _OV_PRECISION[ex.precision]
    if hint:
        ov["precision"] = hint
    else:
        plan.refuse("precision", "model", ex.precision, "provider default",
                    "the OpenVINO provider of ONNX Runtime takes FP32/FP16/ACCURACY only; use engine='openvino'")
    if ex.num_threads:
        ov["num_of_threads"] = str(ex.num_threads)
    if ex.cache_dir:
        ov["cache_dir"] = os.path.join(ex.cache_dir, "openvino-ep")


# the OpenVINO plugin (onnxruntime-ep-openvino) ignores precision/num_of_threads/cache_dir/device_type (it says
# so in its log): OpenVINO properties go in load_config, as JSON {device: {property: value}}, and the device is
# the plugin device chosen with add_provider_for_devices. Same hints as engine='openvino'.
_OV_PLUGIN_HINTS = {"fp32": ("f32", "ACCURACY"), "tf32": ("f32", "ACCURACY"), "fp16": ("f16", "PERFORMANCE"),
                    "bf16": ("bf16", "PERFORMANCE"), "int8": ("f32", None)}


def _openvino_plugin_options(policy: Policy, plan: OrtPlan, ov: dict[str, str]) -> None:
    ex = policy.execution
    ov.pop("device_type", None)  # the plugin device is the device
    hint, mode = _OV_PLUGIN_HINTS[ex.precision]
    props = {"INFERENCE_PRECISION_HINT": hint, **({"EXECUTION_MODE_HINT": mode} if mode else {})}
    if ex.num_threads:
        props["INFERENCE_NUM_THREADS"] = str(ex.num_threads)
    if ex.cache_dir:
        props["CACHE_DIR"] = os.path.join(ex.cache_dir, "openvino-ep")
    ov["load_config"] = json.dumps({plan.plugins[OPENVINO].split(".")[0]: props}, sort_keys=True)
    if plan.target == OPENVINO and ex.precision != "int8":
        plan.model_variant = "original"  # OpenVINO converts itself, by INFERENCE_PRECISION_HINT
    if plan.target == OPENVINO and ex.precision in ("fp16", "bf16"):
        plan.notes.append(f"{ex.precision} on the OpenVINO plugin: INFERENCE_PRECISION_HINT={hint} is configured; "
                          "ONNX Runtime does not report the precision OpenVINO chose per layer (engine='openvino' does)")


def _tensorrt_rtx_options(policy: Policy, plan: OrtPlan, key: str) -> None:
    """NvTensorRTRTXExecutionProvider options (names from the plugin's tensorrt_rtx_provider_options.h)."""
    opts = dict(plan.providers)
    if TRT_RTX not in opts:
        return
    rtx, ex = opts[TRT_RTX], policy.execution
    if ex.cuda_graphs:
        rtx["enable_cuda_graph"] = "1"
    if ex.cache_dir:
        rtx["nv_runtime_cache_path"] = os.path.join(ex.cache_dir, "tensorrt-rtx", key)
    if ex.fixed_shapes:
        shapes = ",".join(f"{name}:{'x'.join(str(int(d)) for d in dims)}" for name, dims in ex.fixed_shapes.items())
        rtx.update(nv_profile_min_shapes=shapes, nv_profile_opt_shapes=shapes, nv_profile_max_shapes=shapes)
    if plan.target == TRT_RTX:
        _rtx_precision(ex.precision, plan)


def _rtx_precision(precision: str, plan: OrtPlan) -> None:
    if precision == "int8":
        plan.model_variant = "original"
        plan.refuse("precision", "model", "int8", "the model's own precision",
                    "TensorRT RTX builds int8 only from QuantizeLinear/DequantizeLinear nodes already in the model "
                    "(quantise it statically, e.g. onnxruntime.quantization.quantize_static, and pass precision "
                    "'fp32'); xpuruntime's dynamic int8 copy is not such a model")
    elif precision == "fp16":
        plan.notes.append("the TensorRT RTX provider has no precision switch: the float16 copy of the model sets it")
    elif precision in ("fp32", "tf32"):
        plan.notes.append("the TensorRT RTX provider has no precision switch: it builds the model's own types")


def _qnn_options(policy: Policy, plan: OrtPlan, key: str, index: int | None) -> None:
    """QNN provider options (names as ONNX Runtime 1.31 reads them; backend_type exists since 1.22)."""
    opts = dict(plan.providers)
    if QNN not in opts:
        return
    qnn, ex = opts[QNN], policy.execution
    qnn.update(backend_type="htp", htp_performance_mode=QNN_PERFORMANCE_MODE,
               htp_graph_finalization_optimization_mode=_QNN_FINALIZE[ex.optimize_level],
               enable_htp_fp16_precision=_flag(ex.precision == "fp16"))
    if index:
        qnn["device_id"] = str(index)
    if plan.target == QNN:
        _qnn_precision(ex.precision, plan)
    _qnn_context_cache(ex.cache_dir, plan, key)


def _qnn_precision(precision: str, plan: OrtPlan) -> None:
    plan.model_variant = "original"  # fp16: the HTP converts itself; int8: quantize_dynamic's ops have no QNN kernels
    if precision in ("fp32", "tf32"):
        plan.notes.append("fp32 on the QNN HTP: its fp16 conversion is off (enable_htp_fp16_precision=0); nodes it "
                          "cannot run in fp32 show as placed on another provider")
    elif precision == "bf16":
        plan.violations = [v for v in plan.violations if not (v.kind == "precision" and v.requested == "bf16")]
        plan.refuse("precision", "model", "bf16", "fp32", _QNN_BF16)
    elif precision == "int8":
        plan.refuse("precision", "model", "int8", "the model's own precision", _QNN_INT8)


def _qnn_context_cache(cache_dir: str | None, plan: OrtPlan, key: str) -> None:
    """Compile once: ONNX Runtime writes an EPContext model; it never overwrites one, nor loads it by itself."""
    if not cache_dir:
        return
    path = os.path.join(cache_dir, "qnn", f"{key}_ctx.onnx")
    if os.path.exists(path):  # keyed by model, policy and fingerprint hashes: safe to load instead
        plan.cached_model = path
        plan.notes.append(f"loaded the compiled QNN context model {path} (no recompilation)")
        return
    _make_private(cache_dir, "qnn")  # ONNX Runtime writes the file but not its folder; 0o700 like every cache level
    plan.config.update({"ep.context_enable": "1", "ep.context_file_path": path, "ep.context_embed_mode": "0"})
    plan.notes.append(f"the compiled QNN context is written to {path} (its .bin beside it)")


def _make_private(cache_dir: str, name: str) -> None:
    from xpuruntime import _cache

    try:
        _cache.private_folder(cache_dir, name)
    except (OSError, ValueError):  # the session's own check warns and drops the cache
        pass


def _npu_missing(plan: OrtPlan, kind: str) -> None:
    """device='npu' with no NPU provider: name both packages that bring one."""
    if kind == "npu":
        plan.violations = [replace(v, reason=_NPU_MISSING) if v.kind == "provider_unavailable" else v
                           for v in plan.violations]


def _graph_options(policy: Policy, plan: OrtPlan) -> None:
    if policy.execution.cuda_graphs and plan.target not in (CUDA, TRT, TRT_RTX):
        plan.refuse("option", "cuda_graphs", "CUDA graph capture", "no capture",
                    f"CUDA graphs are captured only by the CUDA and TensorRT providers; {plan.target} runs "
                    "the graph op by op")


def _compile_and_fusions(policy: Policy, plan: OrtPlan) -> None:
    ex = policy.execution
    if ex.compile != "off":
        plan.refuse("option", "compile", ex.compile, "ONNX Runtime's own graph optimiser",
                    "execution.compile names a torch.compile mode; ONNX Runtime has no model compiler to run it "
                    "(its graph optimisations follow optimize_level; use engine='torch' for torch.compile)")
    if ex.fusions == "off":
        return
    if plan.target in (TRT, OPENVINO, QNN):
        plan.refuse("option", "fusions", ex.fusions, "the provider's own fusions",
                    f"{plan.target} compiles the whole graph and fuses it itself; ONNX Runtime's transformer "
                    "fusions would hide the patterns it looks for")
        return
    if plan.model_variant == "int8":
        plan.refuse("option", "fusions", ex.fusions, "no fusions",
                    "the transformer fusions run before quantisation only on float models; int8 copies are not fused")
        return
    plan.fusions = ex.fusions


def _flag(value: bool) -> str:
    return "1" if value else "0"


# -- plugin providers ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class PluginPackage:
    """A plugin provider package: its module, the function returning its library path, the providers it brings."""

    distribution: str
    module: str
    providers: tuple[str, ...] = ()  # () for packages not in PLUGIN_PACKAGES: read from module.get_ep_names()
    library: str = "get_library_path"
    version: str = ""
    hint: str = ""  # which devices it lists (said when it lists none)


_RTX_HINT = "it lists only NVIDIA RTX GPUs of compute capability 8.6, 8.9 or 12.0 and newer (not data-centre GPUs)"
#: the plugin packages xpuruntime knows, by distribution name; any other ``onnxruntime-ep-*`` distribution is
#: tried by the convention these share (a module with get_library_path() and get_ep_names())
PLUGIN_PACKAGES: dict[str, PluginPackage] = {p.distribution: p for p in (
    PluginPackage("onnxruntime-ep-openvino", "onnxruntime_ep_openvino", (OPENVINO,),
                  hint="it lists the Intel CPU, GPU and NPU devices OpenVINO finds"),
    PluginPackage("onnxruntime-ep-nv-tensorrt-rtx-cu13", "onnxruntime_ep_nv_tensorrt_rtx", (TRT_RTX,), hint=_RTX_HINT),
    PluginPackage("onnxruntime-ep-nv-tensorrt-rtx-cu12", "onnxruntime_ep_nv_tensorrt_rtx", (TRT_RTX,), hint=_RTX_HINT),
)}
_META_PACKAGES = {"onnxruntime-ep-nv-tensorrt-rtx"}  # installs a -cuNN variant and holds no module itself


@dataclass(frozen=True)
class PluginProvider:
    """One provider of a registered plugin package and the devices ONNX Runtime lists for it (plain data).

    ``devices`` holds ``(kind, label)`` pairs: kind ``cpu``/``gpu``/``npu``; the label is OpenVINO's own device
    name (``ov_device``) where the plugin gives one, else ``<kind>:<n>``.
    """

    name: str
    distribution: str
    version: str
    devices: tuple[tuple[str, str], ...] = ()
    reason: str | None = None  # why it is unusable (failed to register, or no device)


def installed_plugins(distributions: Iterable[Any] | None = None) -> list[PluginPackage]:
    """The installed ``onnxruntime-ep-*`` plugin packages (``importlib.metadata``), sorted by name."""
    found: dict[str, PluginPackage] = {}
    for dist in importlib.metadata.distributions() if distributions is None else distributions:
        name = _normalise(dist.metadata["Name"] or "")
        if not name.startswith("onnxruntime-ep-") or name in _META_PACKAGES or name in found:
            continue
        known = PLUGIN_PACKAGES.get(name)
        module = known.module if known else _top_level(dist) or name.replace("-", "_")
        found[name] = replace(known, version=dist.version) if known else PluginPackage(name, module,
                                                                                        version=dist.version)
    return [found[n] for n in sorted(found)]


def _normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(".", "-")


def _top_level(dist: Any) -> str | None:
    text = dist.read_text("top_level.txt") or ""
    names = [line.strip() for line in text.splitlines() if line.strip()]
    return names[0] if names else None


_KIND_ORDER = {"auto": ("gpu", "npu", "cpu"), "cuda": ("gpu",)}


def _plugin_device(plugin: PluginProvider, kind: str, index: int | None, *,
                   accelerators_only: bool = False) -> str | None:
    """The label of the plugin device for an xpuruntime device: kind ``cuda`` is a GPU, ``auto`` the first
    GPU, NPU (or, unless ``accelerators_only``, CPU) it lists; ``index`` counts devices of that kind."""
    kinds = _KIND_ORDER.get(kind, (kind,))
    if kind == "auto" and accelerators_only:
        kinds = ("gpu", "npu")
    for wanted in kinds:
        labels = [label for k, label in plugin.devices if k == wanted]
        if len(labels) > (index or 0):
            return labels[index or 0]
    return None


def _plugin_devices(plan: OrtPlan, plugins: Mapping[str, PluginProvider], kind: str, index: int | None) -> None:
    """Record the device each plugin provider gets, and say where it comes from."""
    for name, _ in plan.providers:
        plugin = plugins.get(name)
        label = _plugin_device(plugin, kind, index) if plugin else None
        if plugin and label:
            plan.plugins[name] = label
            plan.notes.append(f"{name} is the plugin provider of {plugin.distribution} {plugin.version} "
                              f"(register_execution_provider_library), on its device {label}")

#: ONNX Runtime's type strings -> numpy dtype names
ORT_TYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int16)": "int16", "tensor(int8)": "int8",
    "tensor(uint8)": "uint8", "tensor(uint16)": "uint16", "tensor(uint32)": "uint32", "tensor(uint64)": "uint64",
    "tensor(bool)": "bool", "tensor(bfloat16)": "bfloat16", "tensor(string)": "object",
}


# -- model variants --------------------------------------------------------------------------------
_memory: OrderedDict[str, ModelSource] = OrderedDict()  # only without a cache_dir: the disk is the cache
_MEMORY_ENTRIES = 4
_lock = threading.Lock()


def convert(model: ModelSource, variant: str, cache_dir: str | None, key: str) -> ModelSource:
    """The ``fp16`` or ``int8`` variant of a model, from the cache when present."""
    if model.has_external_data():
        raise UnsupportedOperationError(f"{variant} conversion of a model with external data is not supported",
                                        expected="a self-contained .onnx model", received=model.description,
                                        hint="convert it offline, or use precision='fp32'")
    name = f"{key}-{variant}.onnx"
    with _lock:
        if cache_dir:
            return _from_disk(cache_dir, name, model, variant)
        if name not in _memory:
            _memory[name] = _build(model, variant)
        _memory.move_to_end(name)
        while len(_memory) > _MEMORY_ENTRIES:
            _memory.popitem(last=False)
        return _memory[name]


def _from_disk(cache_dir: str, name: str, model: ModelSource, variant: str) -> ModelSource:
    """Under the entry's lock: a second process building the same copy waits, then reads it."""
    try:
        folder = _cache.private_folder(cache_dir, "onnxruntime")
    except _cache.CacheUnavailable as exc:
        warnings.warn(f"{exc}; the {variant} copy is built without a cache", RuntimeWarning, stacklevel=6)
        return _build(model, variant)
    with _cache.entry_lock(folder, name):
        cached = _read_cache(folder, name, model, variant)
        if cached is not None:
            return cached
        result = _build(model, variant)
        _cache.write_entry(folder, name, result.data or b"", warn_stacklevel=7)
    return result


#: op types ONNX Runtime's transformers optimizer writes (contrib ops, domain com.microsoft)
FUSED_OPS = ("Attention", "MultiHeadAttention", "SkipLayerNormalization", "EmbedLayerNormalization", "BiasGelu",
             "FastGelu", "Gelu", "BiasSplitGelu", "BiasAdd", "LayerNormalization", "SkipSimplifiedLayerNormalization",
             "GroupQueryAttention", "RotaryEmbedding", "FusedMatMul", "QuickGelu")


def fusion_model_type(proto: Any, fusions: str) -> str | None:
    """The optimizer's model type for ``fusions``; ``auto``: vit for a graph with a Conv (a patch embedding) and
    attention, bert for other graphs with attention (a Softmax or a fused attention op), None for the rest."""
    if fusions != "auto":
        return fusions
    ops = {n.op_type for n in proto.graph.node}
    if not ops & {"Softmax", "Attention", "MultiHeadAttention"}:
        return None
    return "vit" if "Conv" in ops else "bert"


def fuse(model: ModelSource, fusions: str, use_gpu: bool, cache_dir: str | None, key: str) -> ModelSource | None:
    """The model rewritten by ONNX Runtime's transformers optimizer (cached like the fp16 copy); None when
    ``fusions='auto'`` finds no transformer in the graph. The optimizer's ``num_heads``/``hidden_size`` come from
    the graph (:func:`attention_shape`) and are part of the cache entry's name."""
    model_type = fusion_model_type(model.proto, fusions)
    if model_type is None:
        return None
    heads, hidden = attention_shape(model.proto)
    return convert(model, f"fused-{model_type}-{'gpu' if use_gpu else 'cpu'}-{heads}x{hidden}", cache_dir, key)


def fused_op_counts(proto: Any) -> dict[str, int]:
    """How many nodes of each fused op type the graph holds."""
    counts: dict[str, int] = {}
    for node in proto.graph.node:
        if node.op_type in FUSED_OPS and node.domain == "com.microsoft":
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def attention_shape(proto: Any) -> tuple[int, int]:
    """(num_heads, hidden_size) read from a transformer graph, (0, 0) when it shows none.

    Exports from transformers >= 4.48 reshape Q/K/V to ``(*input_shape, -1, head_size)``: the head count is not in
    the graph, and ONNX Runtime's optimizer, asked to detect it (``num_heads=0``), fuses no attention. The hidden
    size is the width of the LayerNormalization scales; the head size the last constant of the Concat that shapes
    those Reshapes (a constant head count there is taken as is). Read only: the graph is not changed.

    Example: ``attention_shape(onnx.load("bert-base.onnx"))`` -> ``(12, 768)``.
    """
    consts = _constants(proto)
    producers = {out: n for n in proto.graph.node for out in n.output}
    shapes = [shape for node in proto.graph.node if (shape := _head_shape(node, consts, producers)) is not None]
    if not shapes:
        return 0, 0
    heads, head_size = _most_common(shapes)
    if heads > 0:  # a constant head count: nothing to work out
        return heads, heads * head_size
    widths = [consts[n.input[1]].size for n in proto.graph.node
              if n.op_type == "LayerNormalization" and len(n.input) > 1 and n.input[1] in consts]
    hidden = _most_common(widths) if widths else 0
    return (hidden // head_size, hidden) if hidden and hidden % head_size == 0 else (0, 0)


def _head_shape(node: Any, consts: dict[str, np.ndarray], producers: dict[str, Any]) -> tuple[int, int] | None:
    """(heads or -1, head_size) of a Reshape whose shape is Concat(batch, seq, heads, head_size)."""
    if node.op_type != "Reshape" or len(node.input) < 2:
        return None
    concat = producers.get(node.input[1])
    if concat is None or concat.op_type != "Concat" or len(concat.input) != 4:
        return None
    last = [consts.get(name) for name in concat.input[2:]]
    if any(v is None or v.size != 1 for v in last) or int(last[1].item()) <= 0:
        return None
    return int(last[0].item()), int(last[1].item())


def _most_common(values: list[Any]) -> Any:
    return max(set(values), key=values.count)


def _constants(proto: Any) -> dict[str, np.ndarray]:
    """Initializers and Constant node values by name (small ones only: shapes and norm scales)."""
    from onnx import numpy_helper

    out = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer if _small(t.dims)}
    for node in proto.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            tensor = node.attribute[0].t
            if _small(tensor.dims):
                out[node.output[0]] = numpy_helper.to_array(tensor)
    return out


def _small(dims: Sequence[int]) -> bool:
    return len(dims) <= 1 and (not dims or dims[0] <= 65536)


def fusion_summary(proto: Any, model_type: str) -> str:
    """What the optimizer made, and when the graph has attention (a Softmax) but no fused attention op, why."""
    counts = fused_op_counts(proto)
    made = _counted(counts) or "no fused ops (no pattern matched)"
    if counts.keys() & {"Attention", "MultiHeadAttention"} or not any(n.op_type == "Softmax" for n in proto.graph.node):
        return made
    return f"{made}; no attention fused: {_attention_reason(proto, model_type)}"


def _attention_reason(proto: Any, model_type: str) -> str:
    softmax = {n.output[0] for n in proto.graph.node if n.op_type == "Softmax"}
    after = {n.op_type for n in proto.graph.node if softmax & set(n.input)}
    if "IsNaN" in after:  # torch's scaled_dot_product_attention, decomposed by the TorchScript exporter
        return ("the graph holds torch's scaled_dot_product_attention as exported (a Softmax guarded by IsNaN/Where), "
                "a pattern ONNX Runtime's optimizer does not match; export the transformers model with "
                "attn_implementation='eager' (BERT-style encoders then fuse)")
    return (f"ONNX Runtime's {model_type!r} attention patterns do not match this graph's attention subgraph "
            "(transformers 5 GPT-2 and ViT exports, for example: scores scaled by Mul, a float32 Cast after Softmax)")


def _counted(counts: Mapping[str, int]) -> str:
    """``"Attention x2, SkipLayerNormalization x4"``: op counts for a note, by name."""
    return ", ".join(f"{op} x{n}" for op, n in sorted(counts.items()))


def record_fusions(report: Any, fusions: str, proto: Callable[[], Any]) -> None:
    """The fused ops (``com.microsoft`` op types of the session's model, ``proto()``) that ONNX Runtime's own node
    assignment lists, as observed evidence of ``execution.fusions``."""
    if fusions == "off":
        return
    fused = fused_op_counts(proto()).keys()
    made = _counted(Counter(n.op_type for n in report.nodes if n.op_type in fused and n.evidence == "observed"))
    made = made or "none"
    report.notes.append(f"fusions {fusions!r}: fused ops in the session (ONNX Runtime's node assignment): {made}")
    report.evidence_of["fusions"] = "observed"


def _note(variant: str) -> str:
    if variant.startswith("fused-"):
        _, model_type, target, shape = variant.split("-")
        heads, hidden = shape.split("x")
        return (f"transformer fusions by onnxruntime.transformers.optimizer.optimize_model(model_type={model_type!r}, "
                f"num_heads={heads}, hidden_size={hidden}, opt_level=0, use_gpu={target == 'gpu'})")
    return {"fp16": "float16 copy made with onnxruntime.transformers.float16 (inputs and outputs kept float32)",
            "int8": "int8 copy made with onnxruntime.quantization.quantize_dynamic (weights QInt8)"}[variant]


def _build(model: ModelSource, variant: str) -> ModelSource:
    if variant.startswith("fused-"):
        _, model_type, target, shape = variant.split("-")
        heads, hidden = (int(v) for v in shape.split("x"))
        proto = _fused(model.proto, model_type, target == "gpu", heads, hidden)
        return model.replaced(proto, f"{_note(variant)}: {fusion_summary(proto, model_type)}")
    proto = _fp16(model.proto) if variant == "fp16" else _int8(model.proto)
    return model.replaced(proto, _note(variant))


def _fused(proto: Any, model_type: str, use_gpu: bool, heads: int, hidden: int) -> Any:
    from onnxruntime.transformers.optimizer import optimize_model

    loggers = [logging.getLogger(n) for n in ("onnxruntime.transformers", "fusion_attention", "fusion_base",
                                               "onnx_model", "optimizer", "fusion_utils")]
    levels = [lg.level for lg in loggers]  # the optimizer logs every fusion (and what it could not fuse)
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        # opt_level=0: the optimizer's Python fusions only; ONNX Runtime's own graph optimisations run when the
        # session is built (optimize_level), on the provider actually used. heads/hidden 0: the optimizer detects.
        return optimize_model(proto, model_type=model_type, num_heads=heads, hidden_size=hidden, opt_level=0,
                              use_gpu=use_gpu).model
    except Exception as exc:  # the optimizer raises plain exceptions on graphs it cannot walk
        raise UnsupportedOperationError(f"ONNX Runtime's transformers optimizer failed ({model_type}): {exc}",
                                        expected=f"a {model_type} graph the optimizer knows",
                                        received="a graph it rejects", hint="set execution.fusions to 'off'") from None
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _fp16(proto: Any) -> Any:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    try:
        if any(n.domain == "com.microsoft" for n in proto.graph.node):  # fused ops: ONNX's shape inference
            from onnxruntime.transformers.onnx_model import OnnxModel  # cannot type them, the symbolic one can

            fused = OnnxModel(proto)
            fused.convert_float_to_float16(keep_io_types=True)
            return fused.model
        return convert_float_to_float16(proto, keep_io_types=True)
    except Exception as exc:  # the converter raises plain exceptions on models it cannot handle
        raise UnsupportedOperationError(f"the float16 converter failed: {exc}", expected="a float32 model",
                                        received="a model the converter rejects") from None


def _int8(proto: Any) -> Any:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="xpuruntime-int8-") as folder, _quiet_root_logger():
        out = Path(folder) / "int8.onnx"
        try:
            quantize_dynamic(proto, out, weight_type=QuantType.QInt8)
        except Exception as exc:
            raise UnsupportedOperationError(f"dynamic int8 quantisation failed: {exc}",
                                            expected="a float32 model with MatMul/Gemm/Conv weights",
                                            received="a model quantize_dynamic rejects",
                                            hint="quantise it offline (static QDQ) and pass precision='fp32'") from None
        return onnx.load(str(out))


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """quantize_dynamic logs advice on the root logger at WARNING; keep the user's console clean."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _read_cache(folder: Path, name: str, model: ModelSource, variant: str) -> ModelSource | None:
    data = _cache.read_entry(folder, name, warn_stacklevel=8)
    if data is None:
        return None
    try:
        from xpuruntime._models import load_model_source

        cached = load_model_source(data)
    except ModelLoadError:  # the checksum matched bytes that are not a model: written by someone else
        warnings.warn(f"cache entry {folder / name} is corrupt (not a model); rebuilding it", RuntimeWarning,
                      stacklevel=7)
        return None
    extra = ""
    if variant.startswith("fused-"):
        extra = ": " + fusion_summary(cached.proto, variant.split("-")[1])
    cached.notes = [*model.notes, _note(variant) + extra + f" (cached: {name})"]
    cached.description = model.description
    return cached


# -- CUDA graphs --------------------------------------------------------------------------------
class GraphBinding:
    """The binding of one CUDA-graph session, built on its first run.

    Every output's shape and dtype come from ONNX Runtime itself, never from ONNX shape inference (which knows
    neither ORT's fused contrib ops nor the free-dimension overrides of ``fixed_shapes``): the first call binds
    each output to the device for ORT to allocate, and keeps the buffers ORT allocated. ONNX Runtime's first
    ``Run()`` of a CUDA-graph session runs itself again until the graph is captured (the warm-up runs, then the
    capture and a replay, all inside that one call: ``InferenceSession::Run`` recurses while the provider has not
    captured), so the captured graph writes to the buffers of that first call, and every later call is a bare
    ``ReplayGraph()`` that writes there again and never looks at the binding. Those buffers therefore stay bound
    and alive for the session's life; rebinding an output after the first call would leave it unwritten. Every
    output of the session is bound, whatever a call asks for. Host feeds are copied into device buffers the
    binding owns (``update_inplace``); device feeds must stay at the address they were captured at.

    ``device`` is the OrtValue device (``"cuda"``; ``"cpu"`` lets the CPU tests exercise the same binding).
    """

    def __init__(self, ort: Any, session: Any, device_id: int, device: str = "cuda") -> None:
        self.ort, self.session, self.device_id, self.device = ort, session, device_id, device
        self.binding: Any = None
        self.inputs: dict[str, Any] = {}
        self.outputs: dict[str, Any] = {}
        self.pointers: dict[str, int] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}  # host inputs' shapes at capture

    def run(self, feeds: dict[str, Any], names: Sequence[str], run: Any) -> list[Any]:
        """Copy ``feeds`` in, ``run(binding)`` (the session's run_with_iobinding), return ``names`` as numpy.

        After the first call this is what a hand-written CUDA-graph loop does: ``update_inplace`` per host input,
        one ``run_with_iobinding`` of the same binding, ``numpy()`` per output (a copy from the device)."""
        binding = self.binding
        if binding is None:
            binding = self._build(feeds)
            run(binding)  # warm-up, capture and replay on CUDA: ORT allocates every output, at its own shapes
            self.outputs = dict(zip(self.outputs, binding.get_outputs()))  # the captured addresses, kept alive
            self.binding = binding
            for value in self.outputs.values():
                _ort_type(value)  # an output numpy cannot hold is refused (the graph is captured: no rebuild)
        else:
            inputs, shapes = self.inputs, self.shapes
            for name, value in feeds.items():
                staged = inputs.get(name)
                if staged is not None and type(value) is np.ndarray and value.shape == shapes[name]:
                    staged.update_inplace(value)
                else:
                    self._update(name, value)
            run(binding)
        outputs = self.outputs
        if self.device == "cpu":  # a CPU OrtValue's numpy() is a view of the buffer the next run overwrites
            return [outputs[n].numpy().copy() for n in names]
        return [outputs[n].numpy() for n in names]  # a copy from the device

    def _build(self, feeds: dict[str, Any]) -> Any:
        binding = self.session.io_binding()
        for name, value in feeds.items():
            if isinstance(value, DeviceArray):
                binding.bind_input(name, self.device, value.device_id, value.dtype, list(value.shape), value.ptr)
                self.pointers[name] = value.ptr
            else:
                owned = value.copy() if self.device == "cpu" else value  # a CPU OrtValue wraps the array itself
                ov = self.ort.OrtValue.ortvalue_from_numpy(owned, self.device, self.device_id)
                self.inputs[name] = ov
                self.shapes[name] = tuple(ov.shape())
                binding.bind_ortvalue_input(name, ov)
        self.outputs = {o.name: None for o in self.session.get_outputs()}
        for name in self.outputs:
            binding.bind_output(name, self.device, self.device_id)
        return binding

    def _update(self, name: str, value: Any) -> None:
        """One feed off the fast path of :meth:`run`: a device tensor at its captured address, else refused."""
        if isinstance(value, DeviceArray):
            if value.ptr != self.pointers.get(name):
                raise InputError(f"input {name!r} moved to another device buffer between CUDA-graph runs",
                                 expected="the same tensor every run (update it in place)",
                                 received=f"a tensor at 0x{value.ptr:x}",
                                 hint="copy new data into the first tensor: x.copy_(new_x)")
        elif name not in self.inputs:
            raise InputError(f"input {name!r} was a device tensor when the CUDA graph was captured",
                             expected="the same kind of feed every run", received="a host array",
                             hint="use one session per kind of feed")
        elif tuple(value.shape) != tuple(self.inputs[name].shape()):
            raise InputError(f"input {name!r} changed shape under cuda_graphs",
                             expected=f"shape {list(self.inputs[name].shape())} (captured)",
                             received=f"shape {list(value.shape)}", hint="use one session per shape")
        else:
            self.inputs[name].update_inplace(value)


def c_session(session: Any) -> Any:
    """The C-extension session behind an ``onnxruntime.InferenceSession`` (its ``_sess``), or None.

    ONNX Runtime's Python ``run`` and ``run_with_iobinding`` check their arguments on every call (input names, the
    run options' graph id, WebGPU capture, OrtValue ownership) and then call this object's method of the same name.
    A prepared run has checked all of that once (:mod:`xpuruntime.inference.prepared`), so it calls the C method
    itself: the same work, without the Python frames the hand loop pays right after the engine's work. None (use
    the public methods) when the layout is not that one (another ONNX Runtime) or a WebGPU graph capture is on
    (its per-call checks keep captured bindings safe)."""
    inner = getattr(session, "_sess", None)
    if inner is None or not all(callable(getattr(inner, m, None)) for m in ("run", "run_with_iobinding")):
        return None
    webgpu = getattr(inner, "is_webgpu_graph_capture_enabled", None)
    try:
        if webgpu is not None and webgpu():
            return None
    except Exception:  # noqa: BLE001 - a build without the query: no WebGPU capture
        pass
    return inner


def binding_call(session: Any, binding: Any) -> Callable[[Any], Any]:
    """``run_with_iobinding(binding, run_options)`` as a one-argument call (the run options): the C method of
    :func:`c_session` on the binding's C object, else the public method."""
    inner, native = c_session(session), getattr(binding, "_iobinding", None)
    if inner is not None and native is not None:
        return functools.partial(inner.run_with_iobinding, native)
    return functools.partial(session.run_with_iobinding, binding)


def value_calls(value: Any) -> tuple[Callable[[np.ndarray], None], Callable[[], np.ndarray]]:
    """An OrtValue's ``update_inplace`` and ``numpy`` as its C object has them (the Python methods only forward,
    after type checks a prepared run made once), else the public ones. The update takes C-contiguous numpy arrays
    only (the public method converts others; the caller passes ``np.ascontiguousarray(x)``)."""
    native = getattr(value, "_ortvalue", None)
    update, read = getattr(native, "update_inplace", None), getattr(native, "numpy", None)
    if callable(update) and callable(read):
        return update, read
    return value.update_inplace, value.numpy


def _ort_type(value: Any) -> str:
    """An OrtValue's element type as a numpy dtype name (``data_type()`` says ``tensor(float16)``)."""
    kind = value.data_type()
    if kind not in ORT_TYPES or ORT_TYPES[kind] in ("object", "bfloat16"):
        raise UnsupportedOperationError(f"cuda_graphs cannot hold an output of type {kind}",
                                        expected="numeric outputs numpy can hold", received=kind,
                                        hint="set cuda_graphs=False")
    return ORT_TYPES[kind]


# -- deliberate CPU placement beside CUDA (onnxruntime/core/framework/fallback_cpu_capability.cc) -----------------
#: ONNX Runtime's log line for such a node, quoted in the receipt's note
CPU_PREFERRED_REASON = ("ONNX Runtime places shape computations on the CPU on purpose beside the CUDA provider "
                        "(GetCpuPreferredNodes: 'the CPU execution path is deemed faster than overhead involved "
                        "with execution on other EPs'): their inputs are Shape/Size outputs, graph inputs or small "
                        "initializers")
_CPU_OUTPUT_OPS = frozenset({"Shape", "Size"})  # CUDA kernels whose outputs live in CPU memory
# inputs the CUDA kernels take in CPU memory (KernelDef::IsInputOnCpu): a node fed a CPU tensor there stays on CUDA
_CUDA_CPU_INPUTS = {"Reshape": {1}, "Expand": {1}, "ConstantOfShape": {0}, "Range": {0, 1, 2}, "Tile": {1},
                    "Slice": {1, 2, 3, 4}, "Unsqueeze": {1}, "Squeeze": {1}, "Split": {1}, "TopK": {1},
                    "Pad": {1, 2, 3}, "Resize": {1, 2, 3}, "Upsample": {1}, "OneHot": {1}, "CumSum": {1},
                    "Trilu": {1}, "Clip": {1, 2}, "Dropout": {1, 2}, "ReduceSum": {1}, "ReduceMean": {1},
                    "ReduceMax": {1}, "ReduceMin": {1}, "ReduceProd": {1}, "If": {0}, "Loop": {0, 1}}
_SMALL_INITIALIZER = 100  # elements (kSmallInitializerThreshold)
_HALF_TYPES = frozenset({10, 16})  # TensorProto.FLOAT16, BFLOAT16: never moved to the CPU
_FLOAT_TYPES = frozenset({1, 10, 11, 16})  # FLOAT, FLOAT16, DOUBLE, BFLOAT16
#: float compute never claimed as deliberate, whatever feeds it: on the CPU beside CUDA it is a fallback
_FLOAT_COMPUTE_OPS = frozenset({"MatMul", "Gemm", "Conv", "ConvTranspose", "Attention", "MultiHeadAttention",
                                "LayerNormalization", "SkipLayerNormalization", "Softmax", "Einsum", "FusedMatMul",
                                "MatMulNBits", "BatchNormalization", "InstanceNormalization", "GroupNormalization",
                                "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Erf", "Tanh", "Relu", "Gelu", "Sigmoid"})
#: never constant-folded by ONNX Runtime (non-deterministic or kept for quantisation)
_NOT_FOLDED = frozenset({"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial",
                         "Bernoulli", "Dropout", "QuantizeLinear", "DequantizeLinear"})


def cpu_preferred_nodes(proto: Any) -> set[str]:
    """Names of the nodes ONNX Runtime's CUDA provider hands to the CPU on purpose (``GetCpuPreferredNodes``),
    recomputed on the ONNX graph: starting from the consumers of Shape/Size outputs, a node goes to the CPU when
    every input is a CPU tensor (not one the CUDA kernel takes in CPU memory anyway), a small initializer
    (<= 100 elements) or a graph input, and none is float16/bfloat16; its outputs are then CPU tensors.

    ONNX Runtime partitions after its level-1 constant folding, so a tensor computed from constants only
    (``ConstantOfShape`` of a constant shape, ``Mul`` of it by a constant...) counts as the initializer it becomes
    (:func:`_folded_constants`). Float compute (:data:`_FLOAT_COMPUTE_OPS` on a float tensor) is never claimed: a
    MatMul on the CPU stays a fallback. Approximate where other level-1 rewrites change the graph, and it assumes
    the CUDA provider has a kernel for each node. ``proto`` is an ``onnx.ModelProto``.

    >>> cpu_preferred_nodes(onnx.load("bert_dynamic.onnx"))   # doctest: +SKIP
    {'/model/Gather', '/model/Unsqueeze', ...}
    """
    graph = proto.graph
    types, shapes = _value_info(proto)
    inputs = {v.name for v in graph.input} - {t.name for t in graph.initializer}
    folded = _folded_constants(graph, shapes)
    small = _small_constants(graph) | {n for n in folded if 0 <= _elements(shapes.get(n)) <= _SMALL_INITIALIZER}
    consumers: dict[str, list[int]] = {}
    for index, node in enumerate(graph.node):
        for name in node.input:
            consumers.setdefault(name, []).append(index)
    cpu_args = {o for n in graph.node if n.op_type in _CPU_OUTPUT_OPS for o in n.output}
    todo = sorted({i for arg in cpu_args for i in consumers.get(arg, ())})
    placed: set[int] = set()
    while todo:
        index = todo.pop(0)
        node = graph.node[index]
        if index in placed or node.op_type in _CPU_OUTPUT_OPS or not _to_cpu(node, cpu_args, small, inputs, types):
            continue
        placed.add(index)
        cpu_args.update(o for o in node.output if o)
        todo = sorted(set(todo) | {i for o in node.output for i in consumers.get(o, ())})
    return {graph.node[i].name for i in placed if not set(graph.node[i].output) <= folded}  # folded: gone


def _to_cpu(node: Any, cpu_args: set[str], small: set[str], inputs: set[str], types: dict[str, int]) -> bool:
    held = _CUDA_CPU_INPUTS.get(node.op_type, set())
    if node.op_type in _FLOAT_COMPUTE_OPS and any(types.get(n) in _FLOAT_TYPES for n in node.input if n):
        return False
    for i, name in enumerate(node.input):
        if not name:
            continue
        if types.get(name) in _HALF_TYPES:
            return False
        if name in small or name in inputs:
            continue
        if name not in cpu_args or i in held:
            return False
    return True


def _folded_constants(graph: Any, shapes: dict[str, list[int]]) -> set[str]:
    """Outputs of the nodes ONNX Runtime's constant folding (level 1, before partitioning) turns into initializers:
    every input an initializer that is no graph input, a Constant or another folded tensor (deterministic, no
    subgraph, no (De)QuantizeLinear), and Shape/Size of a tensor whose shape is static. Graph order is
    topological in a valid ONNX model."""
    overridable = {v.name for v in graph.input}
    constant = {t.name for t in graph.initializer} - overridable
    folded: set[str] = set()
    for node in graph.node:
        if node.op_type == "Constant":
            constant.update(node.output)
            continue
        if (node.op_type in _NOT_FOLDED or node.domain not in ("", "ai.onnx") or not any(node.input)
                or any(a.type in (5, 10) for a in node.attribute)):  # GRAPH, GRAPHS: control flow
            continue
        static = node.op_type in _CPU_OUTPUT_OPS and _elements(shapes.get(node.input[0])) >= 0
        if static or all(not name or name in constant for name in node.input):
            outputs = [o for o in node.output if o]
            constant.update(outputs)
            folded.update(outputs)
    return folded


def _elements(shape: list[int] | None) -> int:
    """Element count of a static shape; -1 when unknown or symbolic."""
    if shape is None or any(d < 0 for d in shape):
        return -1
    return int(np.prod(shape or [1]))


def _small_constants(graph: Any) -> set[str]:
    """Initializers and Constant outputs of at most 100 elements (ONNX Runtime turns Constants into initializers)."""
    names = {t.name for t in graph.initializer if int(np.prod(list(t.dims) or [1])) <= _SMALL_INITIALIZER}
    for node in graph.node:
        if node.op_type == "Constant":
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is None or int(np.prod(list(value.dims) or [1])) <= _SMALL_INITIALIZER:
                names.update(node.output)
    return names


def _value_types(proto: Any) -> dict[str, int]:
    """Element type of every tensor ONNX shape inference can tell (empty where it cannot, e.g. > 2 GiB)."""
    return _value_info(proto)[0]


def _value_info(proto: Any) -> tuple[dict[str, int], dict[str, list[int]]]:
    """Element type and shape (-1 for a symbolic or unknown dimension) of every tensor ONNX shape inference, with
    data propagation (shapes computed from constants), can tell; graph inputs only where it cannot."""
    try:
        import onnx

        inferred = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    except Exception:  # a model onnx cannot infer (e.g. > 2 GiB): types and shapes of the graph's own value infos
        inferred = proto
    graph = inferred.graph
    types = {t.name: t.data_type for t in graph.initializer}
    shapes = {t.name: list(t.dims) for t in graph.initializer}
    for v in [*graph.input, *graph.value_info, *graph.output]:
        types.setdefault(v.name, v.type.tensor_type.elem_type)
        if v.type.tensor_type.HasField("shape"):
            shapes.setdefault(v.name, [d.dim_value if d.HasField("dim_value") else -1
                                       for d in v.type.tensor_type.shape.dim])
    return types, shapes


def judge_placement(nodes: Sequence[Any], target: str, proto: Any, reason: Any,
                    beside_cuda: bool) -> tuple[list[Violation], list[str]]:
    """Violations and notes for nodes that ran on another provider than ``target``.

    Shape/Size, and beside the CUDA provider every node of :func:`cpu_preferred_nodes` on the CPU, are ONNX
    Runtime's own choice: their ``requested`` becomes the provider they ran on and one note says why. Any other
    node elsewhere is a ``provider_fallback`` with ``reason(node)``. ``proto``: the ONNX model, or a function
    that returns it (read only when a node is on the CPU beside CUDA).
    """
    preferred: set[str] | None = None
    deliberate, found = [], []
    for node in nodes:
        if node.provider == target:
            continue
        if preferred is None and beside_cuda and node.provider == CPU and proto is not None:
            preferred = cpu_preferred_nodes(proto() if callable(proto) else proto)
        if node.op_type in _CPU_OUTPUT_OPS or node.provider == CPU and node.name in (preferred or ()):
            node.requested = node.provider
            deliberate.append(node.name)
        else:
            found.append(Violation("provider_fallback", node.name, target, node.provider or "?", reason(node)))
    notes = [f"{len(deliberate)} node(s) on {CPU} by ONNX Runtime's choice, not a fallback "
             f"({', '.join(deliberate[:4])}{' and more' if len(deliberate) > 4 else ''}): "
             + (CPU_PREFERRED_REASON if beside_cuda else "Shape and Size outputs live in CPU memory")] if deliberate else []
    return found, notes
