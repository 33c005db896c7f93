"""ONNX Runtime: the CPU, CUDA, TensorRT, OpenVINO and QNN providers behind one policy.

Names: ``onnxruntime`` (aliases ``onnxrt``, ``ort``) and ``onnxrt+trt`` (the TensorRT provider
first, CUDA then CPU behind it). Receipts come from ONNX Runtime's own graph assignment
(``get_provider_graph_assignment_info``) and, for ``explain``, its profiling JSON.

Plugin providers (ONNX Runtime >= 1.24 ships providers as packages, e.g. ``onnxruntime-ep-openvino``): every
installed ``onnxruntime-ep-*`` package is registered once per process on the first session
(``register_execution_provider_library``), its devices are read from ``get_ep_devices()``, and a session that
uses one is built with ``SessionOptions.add_provider_for_devices`` (ONNX Runtime ignores plugin providers
passed in the ``providers`` list: the session would run on the CPU).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import os
import re
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xpuruntime._models import ModelSource, load_model_source
from xpuruntime.errors import (
    ExecutionTimeoutError,
    InputError,
    ModelLoadError,
    PolicyError,
    UnsupportedOperationError,
    XpuRuntimeError,
    did_you_mean,
    safe_text,
)
from xpuruntime._graph_checks import refuse_impossible
from xpuruntime.inference.engine import Engine, register_engine
from xpuruntime.inference.engines import _onnxruntime as tr
from xpuruntime.inference.feeds import DeviceArray, TensorInfo, max_input_bytes
from xpuruntime.inference.plan import Plan
from xpuruntime.policies import Policy
from xpuruntime.receipts import ExecutionReport, NodeRecord, Violation
from xpuruntime.runtime.devices import DeviceSpec

__all__ = ["OnnxRuntimeEngine", "OnnxRuntimeTensorRTEngine", "ExecutionTimeoutError", "plugin_providers"]

_OPTION_KEYS = ("providers", "provider_options", "session_config", "log_severity_level", "tuning_results",
                "provider_selection")


@functools.cache
def _ort() -> Any:
    import onnxruntime

    # ONNX Runtime's process-wide logger prints provider-discovery chatter at WARNING; what matters
    # to the user (where nodes ran, what was refused) is in the receipt and our own warnings.
    onnxruntime.set_default_logger_severity(3)
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
    option_keys = _OPTION_KEYS
    tensorrt = False
    contiguous_feeds = False  # session.run and OrtValue.update_inplace copy strided numpy arrays themselves

    @classmethod
    def version(cls) -> str | None:
        """The version of the onnxruntime module that is (or would be) imported.

        Several distributions provide that module (onnxruntime, onnxruntime-gpu, ...); once it is
        imported its own ``__version__`` is the truth, whichever distribution metadata says.
        """
        module = sys.modules.get("onnxruntime")
        if module is not None and getattr(module, "__version__", None):
            return str(module.__version__)
        for dist in ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-qnn"):
            with contextlib.suppress(Exception):
                from importlib.metadata import version

                return version(dist)
        return None

    # -- build ---------------------------------------------------------------------------
    def cache_parts(self) -> tuple[str, ...]:
        return (self.model.hash, self.policy.hash, self.fingerprint_hash)

    def translate(self, policy: Policy, device: DeviceSpec, options: Mapping[str, Any]) -> Plan:
        """The translation table (:func:`._onnxruntime.translate`), the user's engine options over it, private
        cache folders and the static-shape check: everything decided before the session is built."""
        # before anything reads the model, shape inference included (a Split it aborts on)
        refuse_impossible(self.model.proto, self.model.description, "ONNX Runtime", max_input_bytes())
        ort = _ort()
        plugins = plugin_providers(ort)
        wanted = _wanted_providers(ort, options.get("providers"), plugins)
        native = tr.translate(policy, device.kind, device.index, tensorrt=self.tensorrt,
                              available=ort.get_available_providers(), key=self.cache_key(), plugins=plugins,
                              providers=wanted)
        _provider_selection(native, ort, options, device, policy.execution.cache_dir, lambda name: tr.translate(
            policy, "auto", None, tensorrt=False, available=ort.get_available_providers(), key=self.cache_key(),
            plugins=plugins, providers=[name]))
        _apply_engine_options(native, ort, options, plugins)
        _private_caches(native, policy.execution.cache_dir)
        _check_shapes(native, policy, self._graph_inputs())
        return Plan(native, requested=_requested(native, policy), targets=tuple(native.asked),
                    violations=native.violations, notes=native.notes)

    def load_impl(self) -> None:
        self.model = self._model_variant(self.model)
        if self.plan.cached_model:
            self.model = load_model_source(Path(self.plan.cached_model))
        self.session = self._create(self._session_options())
        # ONNX Runtime's Python run() otherwise answers a provider's failure by moving the whole session to the CPU
        # provider and running again, printing two lines: a silent fallback no receipt would show. Failures raise.
        if callable(getattr(self.session, "disable_fallback", None)):
            self.session.disable_fallback()
        if self.plan.selection:
            self.load_notes.append(f"provider_selection {self.plan.selection}: ONNX Runtime chose "
                                   f"{', '.join(self.session.get_providers())}")
        self._replayed = self._replay_tuning(self.session)
        self._run_lock = threading.Lock()  # IO binding + CUDA graphs replay must not interleave
        # per-call constants of run_impl, decided once (the session's providers never change)
        self._device = self._device_type()
        self._graphs = bool(self.policy.execution.cuda_graphs) and self._device == "cuda"
        self._timeout_ms = self.policy.execution.execution_timeout_ms
        self._graph: tr.GraphBinding | None = None

    def _replay_tuning(self, session: Any, *, note: bool = True) -> int:
        """Apply stored TunableOp results (``engine_options["tuning_results"]``, else a lock's); returns how many
        result sets ONNX Runtime accepted. Results it refuses (another device or version) are a note."""
        results = self.options.get("tuning_results")
        results = self.tuning.get("onnxruntime") if results is None else results
        if not results:
            return 0
        if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
            raise PolicyError("invalid tuning_results", field="engine_options.tuning_results",
                              expected="the list InferenceSession.get_tuning_results() returns",
                              received=type(results).__name__)
        try:
            session.set_tuning_results(results, error_on_invalid=True)
        except Exception as exc:  # ORT's own exception types
            if note:
                self.load_notes.append(f"stored TunableOp results not applied: {_first_line(str(exc))}")
            return 0
        if note:
            self.load_notes.append(f"replayed {len(results)} stored TunableOp result set(s) (set_tuning_results)")
        return len(results)

    @classmethod
    def capture_tuning(cls, model: Any, *, device: str = "cpu", policy: Any = None,
                       dims: Mapping[str, int] | None = None, runs: int = 2, seed: int = 0) -> list[dict[str, Any]]:
        """Run ``model`` with TunableOp on (``matmul: auto``) and return ONNX Runtime's tuning results.

        ``InferenceSession.get_tuning_results()`` on the CUDA provider lists what TunableOp chose per GEMM; the CPU
        provider has no TunableOp and returns an empty list. Feeds are seeded random data shaped by ``dims``.
        """
        from xpuruntime.inference.feeds import random_feeds
        from xpuruntime.kernels.tuner import with_tunable_op
        from xpuruntime.policies.policy import as_policy

        base = with_tunable_op(as_policy(policy))
        tuned = Policy(base.kernels, base.execution.with_fallback("allow"))
        engine = cls.create(model, device, tuned)
        try:
            values = dict(dims or {})
            shapes = {i.name: tuple(values.get(d, 1) if isinstance(d, str) else (d if d and d > 0 else 1)
                                    for d in (i.shape or ())) for i in engine.input_info}
            feeds = random_feeds(engine.input_info, shapes, seed=seed)
            for _ in range(max(1, runs)):
                engine.run(feeds)
            return list(engine.tuning_results() or [])
        finally:
            engine.close()

    def tuning_results(self) -> list[dict[str, Any]]:
        """``InferenceSession.get_tuning_results()``: what TunableOp chose (an empty list on the CPU provider)."""
        return list(self.session.get_tuning_results())

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
        if self.plan.plugins:
            _add_providers(ort, so, self.plan.providers, self.plan.plugins)
        if self.plan.selection:  # no providers passed: ONNX Runtime chooses among every registered device
            so.set_provider_selection_policy(getattr(ort.OrtExecutionProviderDevicePolicy, self.plan.selection.upper()))
        self._fix_shapes(so)
        if profile_dir:
            so.enable_profiling = True
            so.profile_file_prefix = os.path.join(profile_dir, "xpuruntime")
        return so

    def _graph_inputs(self) -> dict[str, list[Any]]:
        inits = {i.name for i in self.model.proto.graph.initializer}
        return {i.name: list(i.type.tensor_type.shape.dim) for i in self.model.proto.graph.input if i.name not in inits}

    def _fix_shapes(self, so: Any) -> None:
        inputs = self._graph_inputs()
        for name, shape in (self.policy.execution.fixed_shapes or {}).items():
            for dim, size in zip(inputs[name], shape):
                if dim.dim_param:
                    so.add_free_dimension_override_by_name(dim.dim_param, int(size))

    def _create(self, so: Any) -> Any:
        ort = _ort()
        source = _ort_source(self.model)
        try:
            with _timeout(self.policy.execution.compile_timeout_ms, so.set_load_cancellation_flag
                          if hasattr(so, "set_load_cancellation_flag") else None, "compile"):
                providers = None if self.plan.plugins or self.plan.selection else self.plan.providers  # else in ``so``
                return ort.InferenceSession(source, sess_options=so, providers=providers)
        except XpuRuntimeError:
            raise
        except Exception as exc:  # ORT raises its own pybind exception types
            return self._retry_or_raise(exc, so)

    def _retry_or_raise(self, exc: Exception, so: Any) -> Any:
        text = str(exc)
        if "Unsupported model IR version" in text:
            self.model = _downgrade_ir(self.model, text)
            return self._create(so)  # a second refusal (an opset too new, say) is reported by its own reason
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

    def _model_variant(self, model: ModelSource) -> ModelSource:
        if self.plan.fusions != "off":
            fused = tr.fuse(model, self.plan.fusions, self.plan.target == tr.CUDA, self.policy.execution.cache_dir,
                            self.cache_key())
            if fused is None:
                self.load_notes.append("fusions 'auto': no attention in the graph, so no transformer fusions")
            model = fused or model
        variant = self.plan.model_variant
        if variant == "original":
            return model
        return tr.convert(model, variant, self.policy.execution.cache_dir, self.cache_key())

    # -- introspection -------------------------------------------------------------------
    def inputs_impl(self) -> list[TensorInfo]:
        return [_info(a) for a in self.session.get_inputs()]

    def outputs_impl(self) -> list[TensorInfo]:
        return [_info(a) for a in self.session.get_outputs()]

    # -- run -----------------------------------------------------------------------------
    def run_impl(self, feeds: dict[str, Any], output_names: Sequence[str], outputs: dict[str, Any] | None) -> list[Any]:
        if self._graphs and not outputs:
            return self._run_graph(feeds, output_names)
        if outputs or _has_device_feeds(feeds):
            return self._run_bound(feeds, output_names, outputs or {})
        return self._guarded(self._session_run, list(output_names), feeds)

    @functools.cached_property
    def _run_options(self) -> Any:
        """The RunOptions of every run without a timer (read-only to ONNX Runtime, so shared across calls)."""
        return self._new_run_options()

    def _new_run_options(self) -> Any:
        ro = _ort().RunOptions()
        ro.log_severity_level = 4  # a failed run is raised as an error by us; ORT need not print it too
        # Always name the graph: ONNX Runtime's Python run_with_iobinding reads "gpu_graph_id" on every call, and
        # a missing entry is a C++ exception raised and caught (tens of microseconds). "0" is ONNX Runtime's
        # default graph (kCudaGraphAnnotationDefault), the same as no entry; "-1" captures nothing.
        ro.add_run_config_entry("gpu_graph_id", "0" if self.policy.execution.cuda_graphs else "-1")
        return ro

    def _guarded(self, method: Any, *args: Any) -> Any:
        """``method(*args, run_options)`` with library errors wrapped; under ``execution_timeout_ms`` a fresh
        RunOptions that a timer terminates. The method and its arguments are passed, not a closure: every run comes
        here, and each closure built per run costs several times its warm price between runs
        (``benchmarks/profile_in_situ.py``)."""
        if self._timeout_ms is None:
            ro = self._run_options
            try:
                return method(*args, ro)
            except XpuRuntimeError:
                raise
            except Exception as exc:
                raise _run_error(exc, ro) from None
        ro = self._new_run_options()
        try:
            with _timeout(self._timeout_ms, lambda _: setattr(ro, "terminate", True), "run"):
                return method(*args, ro)
        except XpuRuntimeError:
            raise
        except Exception as exc:
            raise _run_error(exc, ro) from None

    def _run_binding(self, binding: Any) -> None:
        """``run_with_iobinding(binding)`` under :meth:`_guarded` (ONNX Runtime's C method where there is one:
        the binding is ours, built for this session)."""
        native, inner = self._native, getattr(binding, "_iobinding", None)
        if native is not None and inner is not None:
            self._guarded(native.run_with_iobinding, inner)
        else:
            self._guarded(self.session.run_with_iobinding, binding)

    @functools.cached_property
    def _native(self) -> Any:
        """ONNX Runtime's C-extension session (``tr.c_session``), or None: the public methods."""
        return tr.c_session(self.session)

    @functools.cached_property
    def _session_run(self) -> Any:
        """``run(output_names, feeds, run_options)`` of checked feeds: the C method, else the public one."""
        return self._native.run if self._native is not None else self.session.run

    def _run_bound(self, feeds: dict[str, Any], names: Sequence[str], outputs: dict[str, Any]) -> list[Any]:
        """IO binding: device inputs and caller-owned outputs without host copies."""
        with self._run_lock:
            binding = self._binding(feeds, names, outputs)
            self._run_binding(binding)
            if all(n in outputs for n in names):  # every result lands in the caller's buffers: nothing to read back
                return [outputs[n] for n in names]
            values = binding.get_outputs()
            return [outputs[n] if n in outputs else _from_ortvalue(v) for n, v in zip(names, values)]

    def again_impl(self, feeds: dict[str, Any], output_names: Sequence[str],
                   outputs: dict[str, Any]) -> Callable[[], None] | None:
        """The run just made, device feeds into caller-owned outputs, as ``run_with_iobinding`` of its binding
        (what a hand-written IO-binding loop calls). Not under CUDA graphs, nor with host feeds (copied in per run)."""
        bound = getattr(self, "_bound", None)
        if self._graphs or bound is None or bound[2] or not all(isinstance(v, DeviceArray) for v in feeds.values()):
            return None
        binding, lock, run = bound[1], self._run_lock, self._run_binding

        def again() -> None:
            with lock:
                run(binding)
        return again

    def prepare_impl(self, feeds: dict[str, Any], output_names: Sequence[str],
                     outputs: dict[str, Any] | None) -> Callable[[dict[str, Any]], list[Any]] | None:
        """The hand-written loop's call for this configuration: ``session.run`` of numpy feeds; the CUDA-graph
        binding's in-place copies and replay; ``run_with_iobinding`` of the binding of the device feeds and
        caller-owned outputs (built by the run ``prepare`` made, kept here while later runs bind other buffers)."""
        names, lock, session = list(output_names), self._run_lock, self.session
        # without execution_timeout_ms every run shares one RunOptions: the session's methods are called as a hand
        # loop calls them; with it, each run goes through _guarded (a RunOptions per run, that a timer terminates)
        direct = self._timeout_ms is None
        ro = self._run_options if direct else None
        if self._graphs and not outputs:
            graph = self._graph
            staged = [(name, graph.inputs.get(name)) for name in feeds]
            if direct and graph.binding is not None and all(v is not None for _, v in staged) \
                    and all(type(v) is np.ndarray for v in feeds.values()):
                # GraphBinding.run's replay written out, calling ONNX Runtime's C methods (tr.c_session): the
                # update of each bound input (from a C-contiguous array), the binding's run, each output's copy out
                replay = tr.binding_call(session, graph.binding)
                updates = [(name, tr.value_calls(value)[0]) for name, value in staged]
                reads = [tr.value_calls(graph.outputs[n])[1] for n in names]
                copy, contiguous = graph.device == "cpu", np.ascontiguousarray  # (a CPU OrtValue's numpy() is a
                #                                                   view of the buffer the next run writes)

                def graph_call(given: dict[str, Any]) -> list[Any]:
                    with lock:
                        for name, update in updates:
                            update(contiguous(given[name]))
                        replay(ro)
                        return [read().copy() for read in reads] if copy else [read() for read in reads]
                return graph_call
            run = self._run_binding

            def graph_run(given: dict[str, Any]) -> list[Any]:
                with lock:
                    return graph.run(given, names, run)  # type: ignore[no-any-return]
            return graph_run
        if not outputs and not _has_device_feeds(feeds):
            method = self._session_run
            if not direct:
                guarded = self._guarded
                return lambda given: guarded(method, names, given)  # type: ignore[no-any-return]
            return lambda given: method(names, given, ro)  # type: ignore[no-any-return]
        if outputs and all(n in outputs for n in names) and all(isinstance(v, DeviceArray) for v in feeds.values()):
            with lock:  # the binding of exactly these buffers (another thread's run may have bound others since)
                binding = self._binding(feeds, names, outputs)
            results = [outputs[n] for n in names]
            run_binding, run_with = self._run_binding, tr.binding_call(session, binding)

            def bound_call(_given: dict[str, Any]) -> list[Any]:
                with lock:
                    if direct:
                        run_with(ro)
                    else:
                        run_binding(binding)
                return results
            return bound_call
        return None

    def run_error(self, exc: Exception) -> XpuRuntimeError:
        """ONNX Runtime's own failure during a run (a prepared run's): refused inputs as InputError."""
        return _run_error(exc, None)

    def _binding(self, feeds: dict[str, Any], names: Sequence[str], outputs: dict[str, Any]) -> Any:
        """The IO binding of the last run while buffers, shapes and dtypes are unchanged, else a new one.

        Device inputs and caller-owned outputs are bound by address (in the key); host inputs of a CUDA session
        live in device buffers the binding owns, refreshed in place (``update_inplace``) on reuse."""
        device = self._device
        key = (tuple((n, *_buffer_key(v, device)) for n, v in feeds.items()), tuple(names),
               tuple((n, *_buffer_key(outputs[n], device)) for n in names if n in outputs))
        cached = getattr(self, "_bound", None)
        if cached is not None and cached[0] == key:
            for name, value in cached[2].items():
                value.update_inplace(feeds[name])
            return cached[1]
        binding, staged = self.session.io_binding(), {}
        for name, value in feeds.items():
            staged_value = _bind_input(binding, name, value, device)
            if staged_value is not None:
                staged[name] = staged_value
        for name in names:
            _bind_output(binding, name, outputs.get(name), device, self.device.index or 0)
        self._bound = (key, binding, staged)
        return binding

    def _run_graph(self, feeds: dict[str, Any], names: Sequence[str]) -> list[Any]:
        """CUDA graphs: one persistent binding, buffers that never move (see _onnxruntime.GraphBinding)."""
        with self._run_lock:
            graph = self._graph
            if graph is None:
                graph = self._graph = tr.GraphBinding(_ort(), self.session, self.device.index or 0)
            return graph.run(feeds, names, self._run_binding)

    def _device_type(self) -> str:
        on_gpu = any(p in (tr.CUDA, tr.TRT) for p in self._providers())
        return "cuda" if on_gpu else "cpu"

    def _providers(self) -> list[str]:
        """The providers of the session: the plan's, or those ONNX Runtime chose under ``provider_selection``."""
        return list(self.session.get_providers()) if self.plan.selection else self.plan.provider_names()

    @property
    def _target(self) -> str:
        """The provider nodes are requested on: the plan's, or under ``provider_selection`` ONNX Runtime's first."""
        return self._providers()[0] if self.plan.selection else self.plan.target

    # -- receipts ------------------------------------------------------------------------
    def report_impl(self, report: ExecutionReport) -> None:
        report.requested["tuning_results_replayed"] = self._replayed
        report.evidence.append("onnxruntime.InferenceSession.get_provider_graph_assignment_info")
        for sub in self.session.get_provider_graph_assignment_info():
            for node in sub.get_nodes():
                report.nodes.append(self._node(node.name, node.op_type, sub.ep_name, _op_precision(node.op_type)))
        if self.plan.graph_level in ("ORT_ENABLE_EXTENDED", "ORT_ENABLE_ALL"):
            report.notes.append("nodes as assigned to providers; fusions made after the assignment show in explain()")
        report.evidence_of["providers"] = "observed"  # the assignment info
        tr.record_fusions(report, self.plan.fusions, lambda: self.model.proto)  # the assignment info's fused ops
        if self.plan.model_variant == "original" and self.policy.execution.precision not in ("fp32", "tf32"):
            report.evidence_of["precision"] = "configured"  # a provider flag (trt_fp16_enable ...) nothing reads back
        self._judge(report)

    def _node(self, name: str, op_type: str, provider: str, precision: str | None) -> NodeRecord:
        kernel = _requested_kernel(self.policy, op_type)
        return NodeRecord(name=name or f"<unnamed {op_type}>", op_type=op_type, provider=provider,
                          requested=self._target, requested_kernel=kernel, precision=precision)

    def _judge(self, report: ExecutionReport) -> None:
        """Nodes on another provider: ONNX Runtime's deliberate placements (Shape/Size; shape computations beside
        CUDA, see :func:`._onnxruntime.cpu_preferred_nodes`) are a note, anything else a provider_fallback."""
        found, notes = tr.judge_placement(report.nodes, self._target, lambda: self.model.proto, self._fallback_reason,
                                          beside_cuda=self.plan.in_use(tr.CUDA))
        for violation in found:
            report.add(violation)
        report.notes += notes
        if not report.nodes:
            report.notes.append("onnxruntime reported no node assignment (is this onnxruntime >= 1.24?)")

    def _fallback_reason(self, node: NodeRecord) -> str:
        missing = [v for v in self.plan.violations if v.kind == "provider_unavailable" and v.subject == self._target]
        if missing:
            return missing[0].reason
        return f"{self._target} has no kernel for {node.op_type} in this model (ONNX Runtime assigned it elsewhere)"

    def profile_impl(self, report: ExecutionReport, feeds: dict[str, Any], output_names: Sequence[str]) -> None:
        feeds = _host_feeds(feeds)
        with tempfile.TemporaryDirectory(prefix="xpuruntime-profile-") as folder:
            session = self._create(self._session_options(profile_dir=folder))
            self._replay_tuning(session, note=False)
            self._guarded(session.run, list(output_names), feeds)  # warm-up: allocate and tune
            self._guarded(session.run, list(output_names), feeds)
            events = json.loads(Path(session.end_profiling()).read_text())
        report.requested["tuning_results_replayed"] = self._replayed
        report.evidence.append("onnxruntime profiling JSON (enable_profiling), last of two runs")
        report.events = _trace_events(events)
        for name, ev in _node_events(events).items():
            node = self._node(name, ev.op, ev.provider, ev.precision)
            node.time_us, node.calls = ev.time_us, ev.calls
            report.nodes.append(node)
        self._judge(report)
        self._judge_precision(report)

    def _judge_precision(self, report: ExecutionReport) -> None:
        """fp16 asked: a matrix product or conv that ran in float32 (ONNX Runtime cast around it) is a violation."""
        if self.plan.model_variant != "fp16":
            return
        for node in report.nodes:
            if node.precision == "fp32" and node.op_type in _COMPUTE_OPS:
                report.add(Violation("precision", node.name, "fp16", "fp32",
                                     f"ONNX Runtime ran it in float32 behind Casts it inserted ({node.provider} "
                                     "lacks float16 kernels for this op or its neighbours)"))

    def close_impl(self) -> None:
        self.session = None
        for cached in ("_native", "_session_run"):  # they hold the session too: its memory is released with them
            self.__dict__.pop(cached, None)  # (a lean call made before close() holds its own reference)


@register_engine
class OnnxRuntimeTensorRTEngine(OnnxRuntimeEngine):
    """ONNX Runtime with the TensorRT provider first (CUDA, then CPU, behind it)."""

    name = "onnxrt+trt"
    aliases = ("onnxruntime+tensorrt", "ort+trt", "tensorrt")
    devices = ("cuda",)
    tensorrt = True


# -- plugin providers -------------------------------------------------------------------------
_plugin_lock = threading.Lock()
_registered: dict[str, tuple[tr.PluginPackage, tuple[str, ...], str | None]] = {}  # distribution -> names, why not
_discovered = False


def plugin_providers(ort: Any) -> dict[str, tr.PluginProvider]:
    """Register every installed plugin package once per process (thread-safe: found and registered on the first
    call), then describe its providers with the devices ONNX Runtime lists for them now.

    >>> import onnxruntime
    >>> plugin_providers(onnxruntime)["OpenVINOExecutionProvider"].devices   # doctest: +SKIP
    (('cpu', 'CPU'),)
    """
    global _discovered
    with _plugin_lock:
        if not _discovered:  # once: a scan of the installed distributions costs tens of milliseconds
            for package in tr.installed_plugins():
                _registered[package.distribution] = (package, *_register(ort, package))
            _discovered = True
        devices = _ep_devices(ort)
        found: dict[str, tr.PluginProvider] = {}
        for package, names, reason in _registered.values():
            for name in names:
                listed = tuple((kind, label) for kind, label, _ in devices.get(name, []))
                why = reason or (None if listed else f"{name} ({package.distribution} {package.version}) is "
                                 f"registered, but ONNX Runtime lists no device for it: {package.hint or 'none found'}")
                found[name] = tr.PluginProvider(name, package.distribution, package.version, listed, why)
        return found


def _register(ort: Any, package: tr.PluginPackage) -> tuple[tuple[str, ...], str | None]:
    """Register one package's library; an application that registered it already is left alone."""
    label = f"{package.distribution} {package.version}"
    if not hasattr(ort, "register_execution_provider_library"):
        return package.providers, f"onnxruntime {ort.__version__} cannot load plugin providers ({label}): needs >= 1.23"
    try:
        module = importlib.import_module(package.module)
        path = getattr(module, package.library)()
        names = tuple(getattr(module, "get_ep_names", lambda: package.providers)()) or package.providers
    except Exception as exc:  # a broken plugin package must not break the session
        return package.providers, f"{label} could not be loaded: {_first_line(str(exc))}"
    if any(d.ep_name in names for d in ort.get_ep_devices()):
        return names, None
    try:
        ort.register_execution_provider_library(f"xpuruntime:{package.distribution}", path)
    except Exception as exc:  # ORT's own exception types (an ABI it does not accept, a missing library)
        if "already registered" not in str(exc).lower():
            return names, f"onnxruntime {ort.__version__} did not register {label}: {_first_line(str(exc))}"
    return names, None


def _ep_devices(ort: Any) -> dict[str, list[tuple[str, str, Any]]]:
    """Provider name -> (kind, label, OrtEpDevice) for every device ONNX Runtime lists."""
    out: dict[str, list[tuple[str, str, Any]]] = {}
    for dev in ort.get_ep_devices() if hasattr(ort, "get_ep_devices") else ():
        kind = str(dev.device.type).rsplit(".", 1)[-1].lower()
        same = out.setdefault(dev.ep_name, [])
        label = dict(dev.ep_metadata).get("ov_device") or f"{kind}:{sum(k == kind for k, _, _ in same)}"
        same.append((kind, label, dev))
    return out


def _add_providers(ort: Any, so: Any, providers: list[tuple[str, dict[str, str]]], plugins: dict[str, str]) -> None:
    """Plugin providers go in by device (``add_provider_for_devices``), others by name; CPU is ORT's default."""
    devices = _ep_devices(ort)
    for name, opts in providers:
        if name in plugins:
            chosen = [d for _, label, d in devices.get(name, []) if label == plugins[name]]
            if not chosen:
                raise ModelLoadError(f"the plugin device {plugins[name]} of {name} is no longer listed",
                                     expected="the device ONNX Runtime listed when the plan was made",
                                     received="not in onnxruntime.get_ep_devices()",
                                     hint="was the plugin library unregistered? create the session again")
            so.add_provider_for_devices(chosen[:1], opts)
        elif name != tr.CPU:
            so.add_provider(name, opts)


# -- helpers -------------------------------------------------------------------------------
def _apply_engine_options(plan: tr.OrtPlan, ort: Any, options: Mapping[str, Any],
                          plugins: Mapping[str, tr.PluginProvider]) -> None:
    """User overrides win, and are recorded in the receipt's ``requested``; none may name a path (cache_dir does)."""
    from xpuruntime._cache import refuse_path_options

    refuse_path_options(options.get("session_config") or {}, "engine_options.session_config")
    for name, extra in (options.get("provider_options") or {}).items():
        _check_provider_name(ort, name, "provider_options", plugins)
        refuse_path_options(extra or {}, f"engine_options.provider_options.{name}")
        if not plan.in_use(name):
            plan.notes.append(f"engine_options.provider_options[{name!r}] not applied: {name} is not used")
        plan.providers = [(n, _merge_provider_options(o, extra)) if n == name else (n, o)
                               for n, o in plan.providers]
    plan.config.update({k: str(v) for k, v in (options.get("session_config") or {}).items()})

def _provider_selection(plan: tr.OrtPlan, ort: Any, options: Mapping[str, Any], device: DeviceSpec,
                        cache_root: str | None, plan_for: Any) -> None:
    """``engine_options["provider_selection"]``: ONNX Runtime chooses the providers by one of its device policies
    (``SessionOptions.set_provider_selection_policy``) among every registered device, plugin providers included.

    Each provider it may choose gets the policy's options for it (``plan_for(name)``) as session config entries
    ``ep.<name>.<option>``, where ONNX Runtime hands them to the provider it creates."""
    choice = options.get("provider_selection")
    if choice is None:
        return
    name = choice.lower() if isinstance(choice, str) else None
    if name not in tr.PROVIDER_SELECTION:
        raise PolicyError("engine_options.provider_selection must name one of ONNX Runtime's device policies",
                          expected=", ".join(tr.PROVIDER_SELECTION), received=repr(choice),
                          hint=did_you_mean(str(choice).lower(), tr.PROVIDER_SELECTION))
    if device.kind != "auto" or options.get("providers"):
        given = "engine_options.providers" if options.get("providers") else f"device={device.kind!r}"
        raise PolicyError("engine_options.provider_selection lets ONNX Runtime choose the device, so it cannot be "
                          f"combined with {given}", expected="device='auto' and no engine_options.providers",
                          received=f"provider_selection={name!r} with {given}",
                          hint="pass device='auto', or drop provider_selection to choose the device yourself")
    if not hasattr(ort, "OrtExecutionProviderDevicePolicy"):
        plan.refuse("option", "provider_selection", name, "the providers xpuruntime chose for device 'auto'",
                    f"onnxruntime {ort.__version__} has no provider selection policies (needs >= 1.22)")
        return
    plan.selection, plan.plugins = name, {}
    plan.providers, plan.asked = [], []
    candidates = set(ort.get_available_providers()) | set(plugin_providers(ort))
    for provider in sorted(candidates - {tr.CPU}):
        own = plan_for(provider)
        _private_caches(own, cache_root)
        for key, value in own.providers[0][1].items() if own.providers[0][0] == provider else ():
            plan.config[f"ep.{provider.lower()}.{key}"] = value
    plan.notes.append(f"provider_selection {name}: ONNX Runtime chooses the providers among every registered device "
                      "(plugin providers included), each with the policy's options for it (session config "
                      "ep.<provider>.*); nodes are judged against the first provider it chose")


def _private_caches(plan: tr.OrtPlan, root: str | None) -> None:
    """Folders the providers fill themselves (TensorRT engines, OpenVINO-provider blobs, QNN contexts) are
    created private to the user; one that cannot be (a symlink, another owner, read-only) is not used."""
    if not root:
        return
    for _, opts in plan.providers:
        for path_key, keys in _CACHE_OPTIONS.items():
            if path_key in opts and not _private_folder(root, opts[path_key]):
                for key in keys:
                    opts.pop(key, None)
        if "CACHE_DIR" in opts.get("load_config", ""):  # the OpenVINO plugin: properties by device, as JSON
            config = json.loads(opts["load_config"])
            for props in config.values():
                if "CACHE_DIR" in props and not _private_folder(root, props["CACHE_DIR"]):
                    props.pop("CACHE_DIR")
            opts["load_config"] = json.dumps(config, sort_keys=True)
    context = plan.config.get("ep.context_file_path")
    if context and not _private_folder(root, os.path.dirname(context)):
        for key in ("ep.context_enable", "ep.context_file_path", "ep.context_embed_mode"):
            plan.config.pop(key, None)
    if plan.cached_model and (os.path.islink(plan.cached_model) or
                                   not _private_folder(root, os.path.dirname(plan.cached_model))):
        plan.notes.append(f"cached QNN context {plan.cached_model} not loaded (not a private file)")
        plan.cached_model = None


def _wanted_providers(ort: Any, wanted: Any, plugins: Mapping[str, tr.PluginProvider]) -> list[str] | None:
    """``engine_options["providers"]``, checked: a list of known provider names (None: not given)."""
    if not wanted:
        return None
    if isinstance(wanted, str) or not isinstance(wanted, Sequence) or not all(isinstance(n, str) for n in wanted):
        raise PolicyError("engine_options.providers must be a list of provider names",
                          expected="e.g. ['CUDAExecutionProvider', 'CPUExecutionProvider']",
                          received=repr(wanted), hint="put per-provider options in engine_options.provider_options")
    for name in wanted:
        _check_provider_name(ort, name, "providers", plugins)
    return list(wanted)


def _check_shapes(plan: tr.OrtPlan, policy: Policy, inputs: dict[str, list[Any]]) -> None:
    """fixed_shapes must name real inputs with the right rank; symbolic dims left free break static_shape."""
    ex = policy.execution
    for name, shape in (ex.fixed_shapes or {}).items():
        _check_fixed(name, shape, inputs)
        if any(not d.dim_param and not d.HasField("dim_value") for d in inputs[name]):
            plan.refuse("static_shape", name, f"fixed shape {list(shape)}", "a dynamic dim left free",
                             "ONNX Runtime fixes only named (dim_param) dims; name the dim in the model")
    for name, dims in inputs.items() if ex.static_shape else ():
        free = [d.dim_param or "?" for d in dims if not d.HasField("dim_value")]
        if free and name not in (ex.fixed_shapes or {}):
            plan.refuse("static_shape", name, "static shapes", f"symbolic dim {free[0]!r}",
                             f"set execution.fixed_shapes[{name!r}] to fix it")


def _requested(plan: tr.OrtPlan, policy: Policy) -> dict[str, Any]:
    """What was asked of ONNX Runtime, as the receipt shows it."""
    extra = {"plugin_devices": dict(plan.plugins)} if plan.plugins else {}
    extra.update({"provider_selection": plan.selection} if plan.selection else {})
    return {**extra, "providers": list(plan.asked), "passed_to_onnxruntime": plan.provider_names(),
            "target": plan.target if not plan.selection else None,
            "provider_options": {n: dict(o) for n, o in plan.providers}, "graph_optimization_level": plan.graph_level,
            "model_variant": plan.model_variant, "precision": policy.execution.precision, "fusions": plan.fusions,
            "session_config": dict(plan.config)}

# provider option naming a cache folder -> the options to drop when that folder cannot be made private
_CACHE_OPTIONS = {"trt_engine_cache_path": ("trt_engine_cache_enable", "trt_engine_cache_path",
                                            "trt_timing_cache_enable", "trt_timing_cache_path"),
                  "cache_dir": ("cache_dir",), "nv_runtime_cache_path": ("nv_runtime_cache_path",)}


def _private_folder(root: str, folder: str) -> bool:
    from xpuruntime import _cache

    parts = os.path.relpath(folder, root).split(os.sep)
    try:
        if ".." in parts:
            raise _cache.CacheUnavailable(f"{folder} is outside cache_dir {root}")
        _cache.private_folder(root, *[p for p in parts if p != "."])
    except (_cache.CacheUnavailable, ValueError) as exc:
        import warnings

        warnings.warn(f"{exc}; that cache is not used", RuntimeWarning, stacklevel=6)
        return False
    return True


def _merge_provider_options(ours: dict[str, str], theirs: dict[str, Any]) -> dict[str, str]:
    """The user's provider options over ours; QNN refuses backend_type and backend_path together."""
    merged = {**ours, **{k: str(v) for k, v in theirs.items()}}
    if "backend_path" in theirs and "backend_type" not in theirs:
        merged.pop("backend_type", None)
    return merged


def _info(arg: Any) -> TensorInfo:
    shape = None if arg.shape is None else tuple(d if isinstance(d, int) else (d or None) for d in arg.shape)
    return TensorInfo(arg.name, shape, tr.ORT_TYPES.get(arg.type, arg.type))


# "[ONNXRuntimeError] : 1 : FAIL : /onnxruntime_src/...cc:256 void ns::Fn(args) " before the actual message
_ORT_PREFIX = re.compile(r"^\[ONNXRuntimeError\] : \d+ : \w+ : (?:\S+:\d+ [^(]*\([^)]*\)\s*)?")
_OPSET_TOO_NEW = re.compile(r"Opset (\d+) is under development.*?support for domain (\S+) is till opset (\d+)", re.S)


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else text
    return _ORT_PREFIX.sub("", line.strip())[:500]


def _load_hint(text: str) -> str | None:
    if found := _OPSET_TOO_NEW.search(text):
        opset, domain, top = found.groups()
        return (f"the model uses opset {opset} of {domain}; this onnxruntime supports up to {top}: re-export with "
                f"opset <= {top} or convert it with onnx.version_converter.convert_version(model, {top})")
    if "NOT_IMPLEMENTED" in text:
        return "an operator or opset in the model is not supported by this onnxruntime; upgrade it or re-export"
    if "INVALID_PROTOBUF" in text or "Protobuf parsing failed" in text:
        return "the file is not a complete ONNX model (truncated or another format)"
    return "check the model with onnx.checker.check_model(model)"


def _check_provider_name(ort: Any, name: Any, option: str, plugins: Mapping[str, tr.PluginProvider]) -> None:
    known = [*ort.get_all_providers(), *plugins, *(n for p in tr.PLUGIN_PACKAGES.values() for n in p.providers)]
    if name not in known:
        raise PolicyError(f"unknown ONNX Runtime provider {name!r}", field=f"engine_options.{option}",
                          expected="a name from onnxruntime.get_all_providers() or a plugin provider",
                          received=repr(name), hint=did_you_mean(str(name), known))


def _check_fixed(name: str, shape: Sequence[int], inputs: dict[str, list[Any]]) -> None:
    field = f"execution.fixed_shapes.{name}"
    if name not in inputs:
        raise PolicyError(f"fixed_shapes names {name!r}, which is not a model input", field=field,
                          expected=f"one of {', '.join(inputs)}", received=repr(name), hint=did_you_mean(name, inputs))
    dims = [d.dim_value if d.HasField("dim_value") else d.dim_param or "?" for d in inputs[name]]
    bad = len(shape) != len(dims) or any(isinstance(d, int) and d != s for d, s in zip(dims, shape))
    if bad:
        raise PolicyError(f"fixed_shapes[{name!r}] does not fit the model's input", field=field,
                          expected=f"a shape like {dims} (symbolic dims replaced by sizes)", received=str(list(shape)))


def _downgrade_ir(model: ModelSource, text: str) -> ModelSource:
    """ONNX Runtime refuses a newer IR version: retry at its maximum when the model passes the checker there."""
    import re

    import onnx

    found = re.search(r"max supported IR version: (\d+)", text)
    if not found or model.has_external_data():
        raise ModelLoadError(f"ONNX Runtime could not load the model: {_first_line(text)}",
                             expected="an IR version this onnxruntime supports", received=model.description,
                             hint="re-save the model with onnx.save(model, path) after setting model.ir_version = 10")
    if model.proto.ir_version <= int(found.group(1)):
        raise ModelLoadError(f"ONNX Runtime could not load the model: {_first_line(text)}",
                             expected="an IR version this onnxruntime supports", received=model.description)
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


_COMPUTE_OPS = {"MatMul", "FusedMatMul", "Gemm", "FusedGemm", "Conv", "FusedConv", "Attention",
                "MultiHeadAttention"}  # where precision matters; elementwise ops follow their inputs
_INT8_OPS = {"MatMulInteger", "DynamicQuantizeMatMul", "DynamicQuantizeLinear", "QLinearMatMul", "ConvInteger",
             "QLinearConv", "MatMulIntegerToFloat", "QuantizeLinear", "DequantizeLinear"}
_PRECISIONS = {"int8": "int8", "uint8": "int8", "float16": "fp16", "bfloat16": "bf16", "float": "fp32",
               "double": "fp64"}


def _op_precision(op_type: str) -> str | None:
    """What the op type alone proves (integer kernels); other precisions need a profiled run."""
    return "int8" if op_type in _INT8_OPS else None


def _event_precision(op_type: str, args: dict[str, Any]) -> str | None:
    """Precision from the tensor types ONNX Runtime recorded for the node (first match wins, int8 first)."""
    if op_type == "Cast" or op_type in _INT8_OPS:
        return _op_precision(op_type)
    types = [t for key in ("input_type_shape", "output_type_shape") for d in args.get(key) or [] for t in d]
    for wanted in ("int8", "uint8", "float16", "bfloat16", "float", "double"):
        if wanted in types:
            return _PRECISIONS[wanted]
    return None


@dataclass
class _NodeEvent:
    op: str
    provider: str
    precision: str | None
    time_us: float = 0.0
    calls: int = 0


def _last_run(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events of the last ``model_run`` (earlier runs were warm-ups)."""
    starts = [ev.get("ts", 0) for ev in events if ev.get("cat") == "Session" and ev.get("name") == "model_run"]
    return [ev for ev in events if ev.get("ts", 0) >= max(starts)] if starts else events


def _node_events(events: list[dict[str, Any]]) -> dict[str, _NodeEvent]:
    """Profiling JSON -> node name -> op, provider, precision, time summed over its calls in the last run."""
    nodes: dict[str, _NodeEvent] = {}
    for ev in _last_run(events):
        args = ev.get("args") or {}
        if ev.get("cat") != "Node" or not str(ev.get("name", "")).endswith("_kernel_time"):
            continue
        op, provider = args.get("op_name", "?"), args.get("provider", "?")
        # a provider's fused subgraph (OpenVINO, TensorRT, QNN): its input and output types prove nothing about
        # the precision inside, so none is claimed
        precision = None if op.startswith(f"{provider}_") else _event_precision(op, args)
        node = nodes.setdefault(ev["name"][: -len("_kernel_time")], _NodeEvent(op, provider, precision))
        node.time_us += float(ev.get("dur", 0))
        node.calls += 1
    return nodes


def _trace_events(events: list[dict[str, Any]], limit: int = 50_000) -> list[dict[str, Any]]:
    """The last run's node kernel events and its ``model_run`` span, as receipt events (for traces)."""
    out = []
    for ev in _last_run(events)[:limit]:
        args, name = ev.get("args") or {}, str(ev.get("name", ""))
        if ev.get("cat") == "Node" and name.endswith("_kernel_time"):
            out.append({"name": name[: -len("_kernel_time")], "ts": ev.get("ts", 0), "dur": ev.get("dur", 0),
                        "cat": "Node", "track": args.get("provider"), "node": name[: -len("_kernel_time")],
                        "args": {k: v for k, v in args.items() if k != "thread_scheduling_stats"}})
        elif ev.get("cat") == "Session" and name == "model_run":
            out.append({"name": name, "ts": ev.get("ts", 0), "dur": ev.get("dur", 0), "cat": "Session",
                        "track": "onnxruntime session", "node": None, "args": {}})
    return out


def _has_device_feeds(feeds: dict[str, Any]) -> bool:
    """Any CUDA tensor among checked feeds (numpy arrays, the common case, are passed over by type alone)."""
    for value in feeds.values():
        if type(value) is not np.ndarray and isinstance(value, DeviceArray):
            return True
    return False


def _host_feeds(feeds: dict[str, Any]) -> dict[str, Any]:
    if any(isinstance(v, DeviceArray) for v in feeds.values()):
        raise UnsupportedOperationError("explain() takes host (numpy) feeds", expected="numpy arrays",
                                        received="CUDA tensors", hint="pass tensor.cpu().numpy() to explain()")
    return feeds


def _buffer_key(value: Any, device_type: str) -> tuple[Any, ...]:
    """What a binding depends on for one buffer: address (where bound by address), shape and dtype."""
    if isinstance(value, DeviceArray):
        return ("device", value.ptr, tuple(value.shape), str(value.dtype))
    if isinstance(value, np.ndarray):
        where = None if device_type == "cuda" else value.__array_interface__["data"][0]  # copied, or by address
        return ("host", where, value.shape, value.dtype.str, value.flags.c_contiguous)
    if getattr(value, "is_cuda", False) and hasattr(value, "data_ptr"):  # a torch CUDA tensor (checked already):
        return ("device", value.data_ptr(), tuple(value.shape), str(value.dtype))  # no __cuda_array_interface__
    from xpuruntime.inference.feeds import as_device_array

    dev = as_device_array(value)
    return ("device", dev.ptr, tuple(dev.shape), str(dev.dtype)) if dev is not None else ("other", id(value))


def _bind_input(binding: Any, name: str, value: Any, device_type: str) -> Any:
    """Bind one input; returns the device OrtValue a host input was copied into (refreshed in place on reuse)."""
    if isinstance(value, DeviceArray):
        binding.bind_input(name, "cuda", value.device_id, value.dtype, list(value.shape), value.ptr)
    elif device_type == "cuda":
        staged = _ort().OrtValue.ortvalue_from_numpy(value, "cuda", 0)
        binding.bind_ortvalue_input(name, staged)
        return staged
    else:
        binding.bind_cpu_input(name, value)
    return None


def _ort_source(model: Any) -> Any:
    """The path ONNX Runtime opens, or the model's bytes when the path is not valid UTF-8 (ONNX Runtime's Python
    binding cannot take such a path and says the constructor's arguments are wrong)."""
    if not model.path:
        return model.data
    path = str(model.path)
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        if model.has_external_data():
            raise ModelLoadError("ONNX Runtime cannot open a model whose path is not valid UTF-8",
                                 expected="a UTF-8 path (the model has external data, so its folder is needed)",
                                 received=safe_text(repr(path)), hint="rename the model's folder or file") from None
        return model.path.read_bytes()
    return path


def _bind_output(binding: Any, name: str, target: Any, device_type: str, device_id: int) -> None:
    if target is None:  # no caller buffer: ONNX Runtime copies the result to the host inside the run
        binding.bind_output(name, "cpu")
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


_INPUT_WORDS = ("invalid", "shape", "dimension", "broadcast")  # a node refused these inputs' shapes or values


def _run_error(exc: Exception, ro: Any) -> XpuRuntimeError:
    text = str(exc)
    if getattr(ro, "terminate", False):
        return ExecutionTimeoutError("the run was terminated by execution_timeout_ms",
                                     expected="a run that finishes in time", received="terminated")
    if "INVALID_ARGUMENT" in text or any(word in text.lower() for word in _INPUT_WORDS):
        return InputError(f"ONNX Runtime refused the inputs: {_first_line(text)}", expected="inputs the model accepts",
                          received="see the message", hint="the session stays usable")
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

