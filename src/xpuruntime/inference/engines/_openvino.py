"""The one table from xpuruntime policy to OpenVINO: device string, compile properties, static reshape.

Pure data in, pure data out (no openvino import), so it is tested without OpenVINO. What
OpenVINO cannot do as asked becomes a :class:`Violation` here, before compilation; what it
did is judged afterwards from its runtime model (:func:`judge_layer`).

===================  ==========================================================================
policy               OpenVINO
===================  ==========================================================================
device               ``cpu`` CPU, ``gpu[:N]`` GPU[.N], ``npu[:N]`` NPU[.N], ``auto`` AUTO;
                     ``engine_options["device"]`` (``"HETERO:GPU,CPU"``...) passes through
precision fp32       ``INFERENCE_PRECISION_HINT=f32`` + ``EXECUTION_MODE_HINT=ACCURACY``
precision tf32       as fp32, with a note (OpenVINO has no TF32)
precision fp16/bf16  ``INFERENCE_PRECISION_HINT=f16/bf16`` + ``EXECUTION_MODE_HINT=PERFORMANCE``
precision int8       needs a quantised model (QuantizeLinear/DequantizeLinear, FakeQuantize);
                     on the CPU the rest is kept IEEE with ``INFERENCE_PRECISION_HINT=f32``
num_threads          ``INFERENCE_NUM_THREADS``
static/fixed_shapes  ``Model.reshape`` before compilation
cache_dir            ``CACHE_DIR=<cache_dir>/openvino/<hash of openvino build, fingerprint, policy, model>``
                     (private, one compile at a time, blobs checked against recorded checksums)
performance          ``PERFORMANCE_HINT`` LATENCY, or ``engine_options["performance_hint"]``
===================  ==========================================================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from xpuruntime.errors import DeviceError, PolicyError, did_you_mean
from xpuruntime.policies import Policy
from xpuruntime.receipts import Violation

__all__ = [
    "OvPlan", "translate", "resolve_device", "device_present", "check_fixed_shapes", "is_quantized",
    "runtime_precision", "precision_from_primitive", "layer_precision", "integer_only", "judge_layer", "same_device", "finish", "filter_supported",
    "check_user_config", "OPTION_KEYS",
    "PERFORMANCE_HINTS", "COMPUTE_LAYERS", "QUANT_OPS",
]

OPTION_KEYS = ("device", "performance_hint", "config", "num_requests")
PERFORMANCE_HINTS = ("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT")
META_DEVICES = ("AUTO", "HETERO", "MULTI", "BATCH")
CORE_PROPERTIES = frozenset({"CACHE_DIR", "CACHE_MODE", "ENABLE_MMAP"})  # taken by the Core, for every device
# layers where precision matters (CPU and GPU plugin spellings); elementwise layers follow their inputs
COMPUTE_LAYERS = frozenset(s.lower() for s in (
    "Convolution", "GroupConvolution", "Deconvolution", "BinaryConvolution", "FullyConnected", "MatMul",
    "Gemm", "ScaledDotProductAttention", "MHA", "PagedAttention", "RNNSeq", "RNNCell", "LLMMLP",
    "QKVProjection", "fully_connected", "convolution", "deconvolution", "gemm"))
QUANT_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv",
                       "QLinearMatMul", "MatMulInteger", "ConvInteger", "FakeQuantize"})
_KIND_DEVICE = {"cpu": "CPU", "gpu": "GPU", "npu": "NPU", "auto": "AUTO"}
_HINTS = {"fp32": "f32", "tf32": "f32", "fp16": "f16", "bf16": "bf16"}
_PRECISIONS = {"f32": "fp32", "bf16": "bf16", "f16": "fp16", "i8": "int8", "u8": "int8", "f64": "fp64",
               "i32": "int32", "i64": "int64", "i16": "int16", "u16": "uint16", "boolean": "bool", "i4": "int4",
               "u4": "uint4"}
_EXPECTED = {"fp32": "fp32", "tf32": "fp32", "fp16": "fp16", "bf16": "bf16", "int8": "int8"}


@dataclass
class OvPlan:
    """Everything needed to read, reshape and compile a model with OpenVINO for one policy."""

    device: str  # passed to compile_model
    asked: str  # the device asked for, present or not
    target: str | None  # the device every layer is requested on (None for AUTO and other meta devices)
    config: dict[str, str] = field(default_factory=dict)  # compile_model properties
    reshape: dict[str, list[int]] = field(default_factory=dict)
    cache_folder: str | None = None
    performance_hint: str = "LATENCY"
    num_requests: int = 0  # AsyncInferQueue jobs; 0 lets OpenVINO choose
    quantized: bool = False
    violations: list[Violation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def refuse(self, kind: str, subject: str, requested: str, actual: str, reason: str) -> None:
        self.violations.append(Violation(kind, subject, requested, actual, reason))

    @property
    def base(self) -> str:
        """The compile device without its index (``GPU.1`` -> ``GPU``)."""
        return self.device.split(".")[0].split(":")[0]


def translate(policy: Policy, device_kind: str, device_index: int | None, *, available: Sequence[str],
              options: Mapping[str, Any], inputs: Mapping[str, Sequence[int | None]], op_types: set[str],
              key: str) -> OvPlan:
    """Policy + device -> OvPlan. ``available`` is ``openvino.Core().available_devices``.

    ``inputs`` maps model input names to dims (None where dynamic); ``op_types`` are the model's
    op types (to tell a quantised model); ``key`` names the cache folder.
    """
    plan = _device_plan(policy, device_kind, device_index, available, options.get("device"))
    plan.performance_hint = _performance_hint(options.get("performance_hint"))
    plan.num_requests = _num_requests(options.get("num_requests"))
    plan.config["PERFORMANCE_HINT"] = plan.performance_hint
    plan.quantized = is_quantized(op_types)
    _precision(policy, plan)
    _threads_and_cache(policy, plan, key)
    _shapes(policy, plan, inputs)
    _kernels(policy, plan)
    _unsupported(policy, plan)
    return plan


def finish(plan: OvPlan, supported: Sequence[str] | None, user_config: Any) -> None:
    """Fit the plan to the compile device: drop what it does not support, then apply ``engine_options.config``.

    ``supported`` is the device's SUPPORTED_PROPERTIES (None for meta devices, which pass properties on).
    """
    check_user_config(user_config, supported, plan.device)
    filter_supported(plan, supported)
    plan.config.update({str(k): _text(v) for k, v in (user_config or {}).items()})


# -- device ---------------------------------------------------------------------------------
def device_present(name: str, available: Sequence[str]) -> bool:
    """True when OpenVINO lists ``name`` (``GPU`` matches ``GPU.0``; ``GPU.0`` matches a lone ``GPU``)."""
    base, _, index = name.partition(".")
    if name in available:
        return True
    if not index:
        return any(a.split(".")[0] == base for a in available)
    return index == "0" and base in available


def _meta_members(device: str) -> list[str]:
    """``HETERO:GPU,CPU`` -> [GPU, CPU]; a plain device -> [itself]; bare ``AUTO`` -> []."""
    head, sep, tail = device.partition(":")
    if head.upper() in META_DEVICES:
        return [d.strip() for d in tail.split(",") if d.strip()] if sep else []
    return [device]


def resolve_device(kind: str, index: int | None, override: str | None) -> tuple[str, str | None]:
    """(device string for compile_model, target device per layer or None for meta devices)."""
    if override:
        device = str(override).strip()
        return device, None if device.partition(":")[0].upper() in META_DEVICES else device
    name = _KIND_DEVICE.get(kind, kind.upper())
    if index is not None:
        name = f"{name}.{index}"
    return name, None if name == "AUTO" else name


def _device_plan(policy: Policy, kind: str, index: int | None, available: Sequence[str], override: Any) -> OvPlan:
    if override is not None and (not isinstance(override, str) or not override.strip()):
        raise PolicyError("engine_options.device must be an OpenVINO device string", field="engine_options.device",
                          expected="e.g. 'CPU', 'GPU.1', 'NPU', 'AUTO:GPU,CPU' or 'HETERO:GPU,CPU'",
                          received=repr(override))
    device, target = resolve_device(kind, index, override)
    missing = [m for m in _meta_members(device) if not device_present(m, available)]
    plan = OvPlan(device=device, asked=device, target=target)
    if override is not None:
        asked = kind if index is None else f"{kind}:{index}"
        plan.notes.append(f"engine_options.device {device!r} replaces device={asked!r}")
    if missing:
        _missing_device(plan, missing, available, policy.execution.fallback)
    return plan


def _missing_device(plan: OvPlan, missing: list[str], available: Sequence[str], fallback: str) -> None:
    present = ", ".join(available) or "none"
    if fallback == "error":
        raise DeviceError(f"OpenVINO device {', '.join(missing)} is not present", expected=f"one of {present}",
                          received=plan.asked, hint=f"use one of {present} (or device='auto'), or set "
                          "fallback='warn' or 'allow' to run on the CPU with a violation in the receipt")
    members = [m for m in _meta_members(plan.device) if m not in missing]
    head = plan.device.partition(":")[0]
    plan.device = f"{head}:{','.join(members)}" if members and plan.target is None else "CPU"
    reason = (f"OpenVINO lists only {present} (openvino.Core().available_devices): no {', '.join(missing)} "
              f"plugin or driver on this machine")
    for name in missing:
        plan.refuse("device_unavailable", name, name, plan.device, reason)


def same_device(requested: str | None, actual: str | None) -> bool:
    """``GPU`` and ``GPU.0`` are one device; ``GPU.1`` is another."""
    if requested is None or actual is None:
        return requested == actual
    return requested == actual or device_present(requested, [actual]) and device_present(actual, [requested])


# -- options --------------------------------------------------------------------------------
def _performance_hint(value: Any) -> str:
    if value is None:
        return "LATENCY"
    hint = str(value).strip().upper()
    if hint not in PERFORMANCE_HINTS:
        raise PolicyError(f"unknown performance_hint {value!r}", field="engine_options.performance_hint",
                          expected=f"one of {', '.join(PERFORMANCE_HINTS)}", received=repr(value),
                          hint=did_you_mean(str(value).upper(), PERFORMANCE_HINTS))
    return hint


def _num_requests(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PolicyError("engine_options.num_requests must be an integer >= 0", field="engine_options.num_requests",
                          expected="0 (OpenVINO's optimal number) or a count of infer requests", received=repr(value))
    return value


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "YES" if value else "NO"
    return str(value)


def _precision(policy: Policy, plan: OvPlan) -> None:
    precision = policy.execution.precision
    if precision in ("fp32", "tf32"):
        plan.config.update(INFERENCE_PRECISION_HINT="f32", EXECUTION_MODE_HINT="ACCURACY")
    elif precision in ("fp16", "bf16"):
        plan.config.update(INFERENCE_PRECISION_HINT=_HINTS[precision], EXECUTION_MODE_HINT="PERFORMANCE")
    if precision == "tf32":
        plan.notes.append("tf32 has no OpenVINO equivalent: float32 layers run IEEE f32 (INFERENCE_PRECISION_HINT=f32)")
    if precision == "int8":
        _int8(plan)


def _int8(plan: OvPlan) -> None:
    if plan.base == "CPU":
        plan.config["INFERENCE_PRECISION_HINT"] = "f32"  # layers the model does not quantise stay IEEE f32
    else:
        plan.notes.append(f"int8: layers the model does not quantise run at {plan.base}'s default precision")
    if not plan.quantized:
        plan.refuse("precision", "model", "int8", "fp32" if plan.base == "CPU" else "device default",
                    "OpenVINO runs int8 only on a quantised model (QuantizeLinear/DequantizeLinear or FakeQuantize "
                    "nodes) and this model has none: quantise it first (NNCF, or "
                    "onnxruntime.quantization.quantize_static with QuantFormat.QDQ)")


def _threads_and_cache(policy: Policy, plan: OvPlan, key: str) -> None:
    ex = policy.execution
    if ex.num_threads:
        plan.config["INFERENCE_NUM_THREADS"] = str(ex.num_threads)
    if ex.cache_dir:
        plan.cache_folder = os.path.join(os.path.expanduser(ex.cache_dir), "openvino", key)
        plan.config["CACHE_DIR"] = plan.cache_folder


def _unsupported(policy: Policy, plan: OvPlan) -> None:
    ex = policy.execution
    if ex.deterministic:
        plan.refuse("option", "deterministic", "deterministic kernels", "no guarantee",
                    "OpenVINO has no determinism switch; results are usually repeatable on one machine with a fixed "
                    "thread count, but nothing guarantees it")
    if ex.cuda_graphs:
        plan.refuse("option", "cuda_graphs", "CUDA graph capture", "no capture", "OpenVINO does not run on CUDA")
    if ex.compile_timeout_ms:
        plan.refuse("option", "compile_timeout_ms", f"{ex.compile_timeout_ms} ms", "no limit",
                    "OpenVINO's compile_model cannot be cancelled")
    if ex.compile != "off":
        plan.refuse("option", "compile", ex.compile, "OpenVINO's own compile_model",
                    "execution.compile names a torch.compile mode; OpenVINO always compiles with its plugin and has "
                    "no such modes (use engine='torch' for torch.compile)")
    if ex.fusions not in ("off", "auto"):
        plan.refuse("option", "fusions", ex.fusions, "OpenVINO's own transformations",
                    "fusions names an ONNX Runtime transformers-optimizer model type; OpenVINO fuses transformer "
                    "patterns itself (use fusions 'auto' or 'off')")
    elif ex.fusions == "auto":
        plan.notes.append("fusions 'auto': OpenVINO applies its own transformer fusions (SDPA, MHA) while compiling")
    if ex.optimize_level < 3:
        plan.refuse("option", "optimize_level", str(ex.optimize_level), "all transformations",
                    "OpenVINO has no optimisation levels: its plugins always apply their own transformations")


def _kernels(policy: Policy, plan: OvPlan) -> None:
    kp = policy.kernels
    for op in kp.ops:
        pref = kp.preference(op)
        if pref is None or set(pref.prefer) <= {"default", "auto"}:
            continue
        plan.refuse("kernel", op, "/".join(pref.prefer), "engine default",
                    f"OpenVINO picks its own primitive for {op} (the receipt's kernel column shows the primitiveType "
                    "it chose); it has no switch to select one")


def filter_supported(plan: OvPlan, supported: Sequence[str] | None) -> None:
    """Drop properties the device does not list in SUPPORTED_PROPERTIES, each as an ``option`` violation."""
    if supported is None:
        return
    for name in [k for k in plan.config if k not in supported and k not in CORE_PROPERTIES]:
        value = plan.config.pop(name)
        plan.refuse("option", name, value, "not set", f"{plan.device} does not support {name} (not in its "
                    "SUPPORTED_PROPERTIES)")


def check_user_config(config: Any, supported: Sequence[str] | None, device: str) -> None:
    """engine_options.config: a mapping of property names the device knows (typos get a suggestion)."""
    if config is None:
        return
    if not isinstance(config, Mapping):
        raise PolicyError("engine_options.config must be a mapping", field="engine_options.config",
                          expected="OpenVINO property name -> value", received=type(config).__name__)
    from xpuruntime._cache import refuse_path_options

    refuse_path_options(config, "engine_options.config")  # CACHE_DIR: only through cache_dir and its checks
    for name in config:
        if supported is not None and name not in supported and name not in CORE_PROPERTIES:
            raise PolicyError(f"{device} has no property {name!r}", field=f"engine_options.config.{name}",
                              expected=f"one of {', '.join(sorted(supported))}", received=repr(name),
                              hint=did_you_mean(str(name), supported))


# -- shapes ---------------------------------------------------------------------------------
def check_fixed_shapes(fixed: Mapping[str, Sequence[int]], inputs: Mapping[str, Sequence[int | None]]) -> None:
    """fixed_shapes must name model inputs, with their rank and their static dims."""
    for name, shape in fixed.items():
        where = f"execution.fixed_shapes.{name}"
        if name not in inputs:
            raise PolicyError(f"fixed_shapes names {name!r}, which is not a model input", field=where,
                              expected=f"one of {', '.join(inputs)}", received=repr(name),
                              hint=did_you_mean(name, inputs))
        dims = list(inputs[name])
        if len(shape) != len(dims) or any(d is not None and d != s for d, s in zip(dims, shape)):
            shown = ["?" if d is None else d for d in dims]
            raise PolicyError(f"fixed_shapes[{name!r}] does not fit the model's input", field=where,
                              expected=f"a shape like {shown} (dynamic dims replaced by sizes)",
                              received=str(list(shape)))


def _shapes(policy: Policy, plan: OvPlan, inputs: Mapping[str, Sequence[int | None]]) -> None:
    ex = policy.execution
    fixed = dict(ex.fixed_shapes or {})
    check_fixed_shapes(fixed, inputs)
    plan.reshape = {name: [int(d) for d in shape] for name, shape in fixed.items()}
    for name, dims in inputs.items() if ex.static_shape else ():
        if name not in fixed and any(d is None for d in dims):
            plan.refuse("static_shape", name, "static shapes", "dynamic dims left free",
                        f"set execution.fixed_shapes[{name!r}] to fix them (Model.reshape before compilation)")
    dynamic = [n for n, dims in inputs.items() if n not in fixed and any(d is None for d in dims)]
    if plan.base == "NPU" and dynamic:
        plan.notes.append(f"the NPU compiles static shapes: set fixed_shapes for {', '.join(dynamic)}")


# -- evidence -------------------------------------------------------------------------------
def is_quantized(op_types: set[str]) -> bool:
    """True when the model carries quantisation nodes OpenVINO turns into int8 layers."""
    return bool(set(op_types) & QUANT_OPS)


def runtime_precision(raw: str | None) -> str | None:
    """OpenVINO's ``runtimePrecision`` (``f32``, ``bf16``, ``u8``...) in xpuruntime's words (``fp32``, ``int8``)."""
    if not raw:
        return None
    text = str(raw).strip()
    if text.lower() in ("dynamic", "undefined", "unspecified", "?"):
        return None
    return _PRECISIONS.get(text.lower(), text.lower())


def precision_from_primitive(primitive: str | None) -> str | None:
    """``brgemm_avx512_bf16`` -> bf16, ``jit_avx512_I8`` -> int8; None when the name carries no type."""
    suffix = (primitive or "").rsplit("_", 1)[-1].lower()
    return runtime_precision(suffix) if "_" in (primitive or "") and suffix in _PRECISIONS else None


_FLOATS = ("fp32", "fp16", "bf16", "fp64")


def _types(raw: Sequence[str] | str | None) -> list[str]:
    """OpenVINO element type names (``"f32,u8"``, ``["u8", "f32"]``) in xpuruntime's words."""
    items = raw.replace(",", " ").split() if isinstance(raw, str) else list(raw or ())
    return [t for t in (runtime_precision(i) for i in items) if t]


def integer_only(inputs: Sequence[str] | str | None, outputs: Sequence[str] | str | None) -> bool:
    """True when a layer's tensors are all integer or boolean (masks, shape math, indices): its precision is not
    a float precision, so it is never judged as float compute. Unknown types (nothing given) are not integer.

    >>> integer_only(["i64", "i64"], "i64"), integer_only(["u8", "f32"], "f32")
    (True, False)
    """
    types = _types(inputs) + _types(outputs)
    return bool(types) and not any(t in _FLOATS for t in types)


def layer_precision(layer_type: str, runtime: str | None, inputs: Sequence[str] | str | None = None,
                    outputs: Sequence[str] | str | None = None) -> str | None:
    """The precision a layer computes in, from its floating tensors.

    OpenVINO's ``runtimePrecision`` of a CPU Subgraph is its first input's type: a boolean attention mask
    (``u8``) makes a layer that computes f32 scores read ``u8``. Outside the compute layers (where an integer
    runtimePrecision is real int8 compute), an integer runtimePrecision gives way to the layer's floating
    outputs (rt_info ``outputPrecisions``), then its floating inputs.

    >>> layer_precision("Subgraph", "u8", ["u8", "f32"], "f32")
    'fp32'
    """
    own = runtime_precision(runtime)
    if own in _FLOATS or layer_type.lower() in COMPUTE_LAYERS and own is not None:
        return own
    floating = [t for t in _types(outputs) + _types(inputs) if t in _FLOATS]
    return floating[0] if floating else own


def judge_layer(layer_type: str, precision: str | None, requested: str, *, quantized: bool,
                capabilities: Sequence[str] = (), compiled_hint: str | None = None,
                integer: bool = False) -> str | None:
    """Why a layer's runtime precision breaks the policy, or None when it does not (or is not judged).

    ``integer``: the layer has no floating tensor (:func:`integer_only`): never judged as float compute.
    """
    kind = layer_type.lower()
    judged = kind in COMPUTE_LAYERS or kind == "subgraph" and requested in ("fp32", "tf32")
    want = _EXPECTED[requested]
    if integer or not judged or precision is None or precision == want or requested == "int8" and not quantized:
        return None
    return _precision_reason(want, precision, capabilities, compiled_hint)


def _precision_reason(want: str, got: str, capabilities: Sequence[str], hint: str | None) -> str:
    caps = ", ".join(capabilities) or "unknown"
    readback = f" (compiled model INFERENCE_PRECISION_HINT={hint})" if hint else ""
    if want == "fp16" and "FP16" not in capabilities:
        return f"the device has no f16 compute (OPTIMIZATION_CAPABILITIES: {caps}); OpenVINO ran {got}{readback}"
    if want == "bf16" and "BF16" not in capabilities:
        return f"the device has no bf16 compute (OPTIMIZATION_CAPABILITIES: {caps}); OpenVINO ran {got}{readback}"
    if want == "int8":
        return "the model does not quantise this layer (no FakeQuantize in front of it), so it ran in " + got
    return f"OpenVINO ran this layer in {got}{readback}"
