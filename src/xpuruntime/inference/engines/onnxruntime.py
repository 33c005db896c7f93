"""ONNX Runtime: the CPU, CUDA, TensorRT, OpenVINO and QNN providers behind one policy.

Names: ``onnxruntime`` (aliases ``onnxrt``, ``ort``) and ``onnxrt+trt`` (the TensorRT provider
first, CUDA then CPU behind it). Receipts come from ONNX Runtime's own graph assignment
(``get_provider_graph_assignment_info``) and, for ``explain``, its profiling JSON.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xpuruntime.errors import (
    InputError,
    ModelLoadError,
    PolicyError,
    UnsupportedOperationError,
    XpuRuntimeError,
    did_you_mean,
)
from xpuruntime.inference.engine import Engine, register_engine
from xpuruntime.inference.engines import _ort_translate as tr
from xpuruntime.inference.feeds import DeviceArray, TensorInfo
from xpuruntime.inference.models import ModelSource
from xpuruntime.inference.report import ExecutionReport, NodeRecord, Violation

__all__ = ["OnnxRuntimeEngine", "OnnxRuntimeTensorRTEngine", "ExecutionTimeoutError"]

_OPTION_KEYS = ("providers", "provider_options", "session_config", "log_severity_level")
_SHAPE_OPS = {"Shape", "Size"}  # ORT places these on the CPU on purpose: never a fallback
_ORT_TYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int16)": "int16", "tensor(int8)": "int8",
    "tensor(uint8)": "uint8", "tensor(uint16)": "uint16", "tensor(uint32)": "uint32", "tensor(uint64)": "uint64",
    "tensor(bool)": "bool", "tensor(bfloat16)": "bfloat16", "tensor(string)": "object",
}


class ExecutionTimeoutError(XpuRuntimeError, TimeoutError):
    """A run or a compilation passed ``execution_timeout_ms`` / ``compile_timeout_ms``."""


def _ort() -> Any:
    import onnxruntime

    return onnxruntime


@register_engine
class OnnxRuntimeEngine(Engine):
    """ONNX Runtime with the provider chain chosen from the device and the policy."""

    name = "onnxruntime"
    aliases = ("onnxrt", "ort")
    package = "onnxruntime"
    module = "onnxruntime"
    extra = "gpu"
    devices = ("cpu", "cuda", "gpu", "npu")
    tensorrt = False

    @classmethod
    def version(cls) -> str | None:
        for dist in ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-qnn"):
            with contextlib.suppress(Exception):
                from importlib.metadata import version

                return version(dist)
        return None

    # -- build ---------------------------------------------------------------------------
    def load_impl(self) -> None:
        ort = _ort()
        self._check_options()
        key = tr.cache_key(self.model.hash, self.policy.hash, self.fingerprint_hash)
        self.plan = tr.translate(self.policy, self.device.kind, self.device.index, tensorrt=self.tensorrt,
                                 available=ort.get_available_providers(), key=key)
        self._apply_engine_options()
        self.model = self._model_variant(self.model, key)
        self.session = self._create(self._session_options())
        self._run_lock = threading.Lock()  # IO binding + CUDA graphs replay must not interleave

    def _check_options(self) -> None:
        for name in self.options:
            if name not in _OPTION_KEYS:
                raise PolicyError(f"unknown engine option {name!r} for onnxruntime", field=f"engine_options.{name}",
                                  expected=", ".join(_OPTION_KEYS), received=repr(name),
                                  hint=did_you_mean(name, _OPTION_KEYS))

    def _apply_engine_options(self) -> None:
        """User overrides win, and are recorded in the receipt's ``requested``."""
        for name, extra in (self.options.get("provider_options") or {}).items():
            self.plan.providers = [(n, {**o, **{k: str(v) for k, v in extra.items()}}) if n == name else (n, o)
                                   for n, o in self.plan.providers]
        if self.options.get("providers"):
            wanted = list(self.options["providers"])
            opts = dict(self.plan.providers)
            self.plan.providers = [(n, opts.get(n, {})) for n in wanted]
            self.plan.target = wanted[0]
        self.plan.config.update({k: str(v) for k, v in (self.options.get("session_config") or {}).items()})

    def _session_options(self, profile_dir: str | None = None) -> Any:
        ort = _ort()
        so = ort.SessionOptions()
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, self.plan.graph_level)
        if self.plan.intra_op_threads:
            so.intra_op_num_threads = self.plan.intra_op_threads
            so.inter_op_num_threads = 1
        so.use_deterministic_compute = self.plan.deterministic
        so.log_severity_level = int(self.options.get("log_severity_level", 3))
        for key, value in self.plan.config.items():
            so.add_session_config_entry(key, value)
        self._fix_shapes(so)
        if profile_dir:
            so.enable_profiling = True
            so.profile_file_prefix = os.path.join(profile_dir, "xpuruntime")
        return so

    def _fix_shapes(self, so: Any) -> None:
        ex = self.policy.execution
        for inp in self.model.proto.graph.input:
            dims = inp.type.tensor_type.shape.dim
            fixed = (ex.fixed_shapes or {}).get(inp.name)
            for axis, dim in enumerate(dims):
                if dim.dim_param and fixed and axis < len(fixed):
                    so.add_free_dimension_override_by_name(dim.dim_param, int(fixed[axis]))
                elif dim.dim_param and ex.static_shape and not fixed:
                    self.plan.refuse("static_shape", inp.name, "static shapes", f"symbolic dim {dim.dim_param!r}",
                                     f"set execution.fixed_shapes[{inp.name!r}] to fix it")

    def _create(self, so: Any) -> Any:
        ort = _ort()
        source = str(self.model.path) if self.model.path else self.model.data
        try:
            with _timeout(self.policy.execution.compile_timeout_ms, so.set_load_cancellation_flag
                          if hasattr(so, "set_load_cancellation_flag") else None, "compile"):
                return ort.InferenceSession(source, sess_options=so, providers=self.plan.providers)
        except XpuRuntimeError:
            raise
        except Exception as exc:  # ORT raises its own pybind exception types
            return self._retry_or_raise(exc, so)

    def _retry_or_raise(self, exc: Exception, so: Any) -> Any:
        text = str(exc)
        if "Unsupported model IR version" in text and self.model.data is not None or "IR version" in text:
            self.model = _downgrade_ir(self.model, text)
            return _ort().InferenceSession(self.model.data, sess_options=so, providers=self.plan.providers)
        if self.plan.model_variant != "original" and "NOT_IMPLEMENTED" in text:
            raise UnsupportedOperationError(
                f"ONNX Runtime has no {self.plan.model_variant} kernels for this model on {self.plan.target}",
                expected=f"{self.plan.model_variant} kernels for every node", received=_first_line(text),
                hint="use another precision or device for this model") from None
        if "cancel" in text.lower():
            raise ExecutionTimeoutError("model compilation was cancelled by compile_timeout_ms",
                                        expected=f"done within {self.policy.execution.compile_timeout_ms} ms",
                                        received="still compiling") from None
        raise ModelLoadError(f"ONNX Runtime could not load the model: {_first_line(text)}",
                             expected="a valid ONNX model that this onnxruntime supports",
                             received=self.model.description, hint=_load_hint(text)) from None

    def _model_variant(self, model: ModelSource, key: str) -> ModelSource:
        variant = self.plan.model_variant
        if variant == "original":
            return model
        from xpuruntime.inference.engines import _ort_convert

        return _ort_convert.convert(model, variant, self.policy.execution.cache_dir, key)

    # -- introspection -------------------------------------------------------------------
    def inputs_impl(self) -> list[TensorInfo]:
        return [_info(a) for a in self.session.get_inputs()]

    def outputs_impl(self) -> list[TensorInfo]:
        return [_info(a) for a in self.session.get_outputs()]

    @property
    def providers(self) -> list[str]:
        return self.plan.provider_names()

    # -- run -----------------------------------------------------------------------------
    def run_impl(self, feeds: dict[str, Any], output_names: Sequence[str], outputs: dict[str, Any] | None) -> list[Any]:
        on_device = outputs or any(isinstance(v, DeviceArray) for v in feeds.values())
        if on_device or self.policy.execution.cuda_graphs:
            return self._run_bound(feeds, output_names, outputs or {})
        return self._guarded(lambda ro: self.session.run(list(output_names), feeds, ro))

    def _guarded(self, call: Any) -> Any:
        ort = _ort()
        ro = ort.RunOptions()
        try:
            with _timeout(self.policy.execution.execution_timeout_ms, lambda _: setattr(ro, "terminate", True), "run"):
                return call(ro)
        except XpuRuntimeError:
            raise
        except Exception as exc:
            raise _run_error(exc, ro) from None

    def _run_bound(self, feeds: dict[str, Any], names: Sequence[str], outputs: dict[str, Any]) -> list[Any]:
        """IO binding: device inputs and caller-owned outputs without host copies."""
        with self._run_lock:
            binding = self.session.io_binding()
            for name, value in feeds.items():
                _bind_input(binding, name, value, self._device_type())
            for name in names:
                _bind_output(binding, name, outputs.get(name), self._device_type(), self.device.index or 0)
            self._guarded(lambda ro: self.session.run_with_iobinding(binding, ro))
            values = binding.get_outputs()
            return [outputs[n] if n in outputs else _from_ortvalue(v) for n, v in zip(names, values)]

    def _device_type(self) -> str:
        return "cuda" if self.plan.target in (tr.CUDA, tr.TRT) else "cpu"

    # -- receipts ------------------------------------------------------------------------
    def _base_report(self) -> ExecutionReport:
        return ExecutionReport(
            engine=self.name, device=str(self.device), policy_hash=self.policy.hash,
            fingerprint_hash=self.fingerprint_hash, engine_version=self.version(),
            requested={"providers": self.plan.provider_names(), "target": self.plan.target,
                       "provider_options": {n: dict(o) for n, o in self.plan.providers},
                       "graph_optimization_level": self.plan.graph_level, "model_variant": self.plan.model_variant,
                       "precision": self.policy.execution.precision, "session_config": dict(self.plan.config)},
            notes=[*self.model.notes, *self.plan.notes])

    def report_impl(self) -> ExecutionReport:
        report = self._base_report()
        report.evidence.append("onnxruntime.InferenceSession.get_provider_graph_assignment_info")
        for sub in self.session.get_provider_graph_assignment_info():
            for node in sub.get_nodes():
                report.nodes.append(self._node(node.name, node.op_type, sub.ep_name))
        self._judge(report)
        return report

    def _node(self, name: str, op_type: str, provider: str) -> NodeRecord:
        kernel = _requested_kernel(self.policy, op_type)
        return NodeRecord(name=name, op_type=op_type, provider=provider, requested=self.plan.target,
                          requested_kernel=kernel, precision=_node_precision(op_type, self.plan.model_variant))

    def _judge(self, report: ExecutionReport) -> None:
        for v in self.plan.violations:
            report.add(v)
        for node in report.nodes:
            if node.provider != self.plan.target and node.op_type in _SHAPE_OPS:
                node.requested = node.provider  # a deliberate ORT placement, not a fallback
            elif node.provider != self.plan.target:
                report.add(Violation("provider_fallback", node.name, self.plan.target, node.provider or "?",
                                     self._fallback_reason(node)))
        if not report.nodes:
            report.notes.append("onnxruntime reported no node assignment (is this onnxruntime >= 1.24?)")

    def _fallback_reason(self, node: NodeRecord) -> str:
        missing = [v for v in self.plan.violations if v.kind == "provider_unavailable" and v.subject == self.plan.target]
        if missing:
            return missing[0].reason
        return f"{self.plan.target} has no kernel for {node.op_type} in this model (ONNX Runtime assigned it elsewhere)"

    def profile_impl(self, feeds: dict[str, Any], output_names: Sequence[str]) -> ExecutionReport:
        with tempfile.TemporaryDirectory(prefix="xpuruntime-profile-") as folder:
            session = self._create(self._session_options(profile_dir=folder))
            session.run(list(output_names), _host_feeds(feeds))  # warm-up: first runs allocate and tune
            session.run(list(output_names), _host_feeds(feeds))
            events = json.loads(Path(session.end_profiling()).read_text())
        report = self._base_report()
        report.profiled = True
        report.evidence.append("onnxruntime profiling JSON (enable_profiling)")
        for name, (op, provider, dur, calls) in _node_events(events).items():
            node = self._node(name, op, provider)
            node.time_us, node.calls = dur, calls
            report.nodes.append(node)
        self._judge(report)
        return report

    def close(self) -> None:
        self.session = None


@register_engine
class OnnxRuntimeTensorRTEngine(OnnxRuntimeEngine):
    """ONNX Runtime with the TensorRT provider first (CUDA, then CPU, behind it)."""

    name = "onnxrt+trt"
    aliases = ("onnxruntime+tensorrt", "ort+trt", "tensorrt")
    devices = ("cuda",)
    tensorrt = True


# -- helpers -------------------------------------------------------------------------------
def _info(arg: Any) -> TensorInfo:
    shape = None if arg.shape is None else tuple(d if isinstance(d, int) else (d or None) for d in arg.shape)
    return TensorInfo(arg.name, shape, _ORT_TYPES.get(arg.type, arg.type))


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else text
    return line[:500]


def _load_hint(text: str) -> str | None:
    if "NOT_IMPLEMENTED" in text:
        return "an operator or opset in the model is not supported by this onnxruntime; upgrade it or re-export"
    if "INVALID_PROTOBUF" in text or "Protobuf parsing failed" in text:
        return "the file is not a complete ONNX model (truncated or another format)"
    return "check the model with onnx.checker.check_model(model)"


def _downgrade_ir(model: ModelSource, text: str) -> ModelSource:
    """ONNX Runtime refuses a newer IR version: retry at its maximum when the model passes the checker there."""
    import re

    import onnx

    found = re.search(r"max supported IR version: (\d+)", text)
    if not found or model.has_external_data():
        raise ModelLoadError(f"ONNX Runtime could not load the model: {_first_line(text)}",
                             expected="an IR version this onnxruntime supports", received=model.description,
                             hint="re-save the model with onnx.save(model, path) after setting model.ir_version = 10")
    proto = onnx.ModelProto()
    proto.CopyFrom(model.proto)
    old, proto.ir_version = proto.ir_version, int(found.group(1))
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        raise ModelLoadError(f"the model's IR version {old} is newer than this onnxruntime supports "
                             f"({found.group(1)}) and it does not validate at the older version",
                             expected=f"IR version <= {found.group(1)}", received=f"IR version {old}",
                             hint=f"upgrade onnxruntime, or re-export the model ({_first_line(str(exc))})") from None
    return model.replaced(proto, f"model IR version {old} lowered to {proto.ir_version} for this onnxruntime "
                                 "(the model validates at that version)")


def _requested_kernel(policy: Any, op_type: str) -> str | None:
    op = {"MatMul": "matmul", "Gemm": "matmul", "FusedMatMul": "matmul", "Attention": "attention",
          "MultiHeadAttention": "attention", "Conv": "conv", "FusedConv": "conv",
          "LayerNormalization": "layernorm", "SkipLayerNormalization": "layernorm"}.get(op_type)
    if op is None or op not in policy.kernels:
        return None
    return "/".join(policy.kernels.resolve(op))


def _node_precision(op_type: str, variant: str) -> str | None:
    if op_type in ("MatMulInteger", "DynamicQuantizeMatMul", "DynamicQuantizeLinear", "QLinearMatMul",
                   "ConvInteger", "QLinearConv", "MatMulIntegerToFloat"):
        return "int8"
    if op_type == "Cast":
        return None
    return {"fp16": "fp16", "int8": None, "original": None}[variant]


def _node_events(events: list[dict[str, Any]]) -> dict[str, tuple[str, str, float, int]]:
    """Profiling JSON -> node name -> (op, provider, microseconds of the last run, calls)."""
    nodes: dict[str, tuple[str, str, float, int]] = {}
    for ev in events:
        args = ev.get("args") or {}
        if ev.get("cat") != "Node" or not str(ev.get("name", "")).endswith("_kernel_time"):
            continue
        name = ev["name"][: -len("_kernel_time")]
        _, _, _, calls = nodes.get(name, ("", "", 0.0, 0))
        nodes[name] = (args.get("op_name", "?"), args.get("provider", "?"), float(ev.get("dur", 0)), calls + 1)
    return nodes


def _host_feeds(feeds: dict[str, Any]) -> dict[str, Any]:
    if any(isinstance(v, DeviceArray) for v in feeds.values()):
        raise UnsupportedOperationError("explain() takes host (numpy) feeds", expected="numpy arrays",
                                        received="CUDA tensors", hint="pass tensor.cpu().numpy() to explain()")
    return feeds


def _bind_input(binding: Any, name: str, value: Any, device_type: str) -> None:
    if isinstance(value, DeviceArray):
        binding.bind_input(name, "cuda", value.device_id, value.dtype, list(value.shape), value.ptr)
    elif device_type == "cuda":
        binding.bind_ortvalue_input(name, _ort().OrtValue.ortvalue_from_numpy(value, "cuda", 0))
    else:
        binding.bind_cpu_input(name, value)


def _bind_output(binding: Any, name: str, target: Any, device_type: str, device_id: int) -> None:
    if target is None:
        binding.bind_output(name, device_type, device_id)
        return
    from xpuruntime.inference.feeds import as_device_array

    dev = as_device_array(target)
    if dev is not None:
        binding.bind_output(name, "cuda", dev.device_id, dev.dtype, list(dev.shape), dev.ptr)
    elif isinstance(target, np.ndarray) and target.flags.c_contiguous:
        binding.bind_output(name, "cpu", 0, target.dtype, list(target.shape), target.ctypes.data)
    else:
        raise InputError(f"preallocated output {name!r} is not a usable buffer",
                         expected="a C-contiguous numpy array or CUDA tensor", received=type(target).__name__)


def _from_ortvalue(value: Any) -> Any:
    if value.device_name().lower() == "cpu":
        return value.numpy()
    return value  # an OrtValue on the device; users read it through DLPack (torch.from_dlpack) or .numpy()


def _run_error(exc: Exception, ro: Any) -> XpuRuntimeError:
    text = str(exc)
    if getattr(ro, "terminate", False):
        return ExecutionTimeoutError("the run was terminated by execution_timeout_ms",
                                     expected="a run that finishes in time", received="terminated")
    if "INVALID_ARGUMENT" in text or "Invalid" in text:
        return InputError(f"ONNX Runtime refused the inputs: {_first_line(text)}", expected="inputs the model accepts",
                          received="see the message")
    return XpuRuntimeError(f"ONNX Runtime failed during the run: {_first_line(text)}",
                           hint="the session stays usable; check the inputs' values and the device's memory")


@contextlib.contextmanager
def _timeout(ms: int | None, cancel: Any, what: str) -> Iterator[None]:
    """Call ``cancel(True)`` if the block runs longer than ``ms`` milliseconds."""
    if not ms or cancel is None:
        yield
        return
    timer = threading.Timer(ms / 1000.0, cancel, args=(True,))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()

