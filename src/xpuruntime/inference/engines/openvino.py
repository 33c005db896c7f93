"""OpenVINO through its own Python API: CPU, GPU, NPU, AUTO and HETERO behind one policy.

Name ``openvino`` (alias ``ov``). The policy becomes compile properties and a static reshape
(see :mod:`._openvino`); receipts come from OpenVINO's own evidence: the runtime model of the
compiled model (``layerType``, ``primitiveType``, ``runtimePrecision`` per layer), the compiled
model's ``EXECUTION_DEVICES`` and, for ``explain``, ``InferRequest.profiling_info`` (``PERF_COUNT``).

Runs are thread-safe: each call borrows an infer request from a pool (one per concurrent caller).
:meth:`OpenVinoEngine.run_many_impl` feeds many inputs through an ``AsyncInferQueue``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import threading
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xpuruntime import _cache
from xpuruntime.errors import (
    ExecutionTimeoutError,
    InputError,
    ModelLoadError,
    PolicyError,
    UnsupportedOperationError,
    XpuRuntimeError,
)
from xpuruntime._graph_checks import refuse_impossible
from xpuruntime.inference.engine import Engine, register_engine
from xpuruntime.inference.engines import _openvino as tr
from xpuruntime.inference.feeds import DeviceArray, TensorInfo, max_input_bytes
from xpuruntime.inference.plan import Plan
from xpuruntime.policies import Policy
from xpuruntime.receipts import ExecutionReport, NodeRecord, Violation
from xpuruntime.runtime.devices import DeviceSpec

__all__ = ["OpenVinoEngine", "note_exit_status", "runs_in_flight"]

_SKIPPED_LAYERS = {"Const", "Input", "Output", "Parameter", "Result", "Constant"}  # nothing runs there
_OV_TYPES = {
    "f32": "float32", "f16": "float16", "bf16": "bfloat16", "f64": "float64", "i64": "int64", "i32": "int32",
    "i16": "int16", "i8": "int8", "u8": "uint8", "u16": "uint16", "u32": "uint32", "u64": "uint64",
    "boolean": "bool", "string": "object",
}
_KERNEL_OPS = {"fullyconnected": "matmul", "matmul": "matmul", "gemm": "matmul", "convolution": "conv",
               "groupconvolution": "conv", "deconvolution": "conv", "scaleddotproductattention": "attention",
               "mha": "attention", "mvn": "layernorm"}
_INPUT_WORDS = ("port for tensor", "shape", "dims", "dimension", "parametermismatch", "precision", "element type")


def _ov() -> Any:
    import openvino

    return openvino


_core_lock = threading.Lock()


def _core() -> Any:
    """One Core per process: plugins load once; compile_model is thread-safe. Every load calls this first."""
    with _core_lock:  # (a Python lock: a second thread waits for the first one without holding the GIL)
        return _first_core()


@functools.cache
def _first_core() -> Any:
    ov = _ov()
    # OpenVINO 2026.4's binding fills its table of numpy dtypes (a C++ function-local static, whose first fill sets
    # up pybind11's numpy access by running Python) on the first Type.to_dtype() of the process, which every run
    # makes. Threads making their first runs at once deadlocked there: one waits on the static's guard holding the
    # GIL while the one filling it waits for the GIL (found by a child process of three threads' first runs racing
    # close(); 17 hangs in 40 runs at a short switch interval, none with this). Filled once here, before any run.
    ov.Type.f32.to_dtype()
    return ov.Core()


@register_engine
class OpenVinoEngine(Engine):
    """OpenVINO on ``cpu``, ``gpu[:N]``, ``npu[:N]`` or ``auto``; ``engine_options``:

    ``device`` (an OpenVINO device string such as ``"HETERO:GPU,CPU"``, passed through),
    ``performance_hint`` (``LATENCY`` by default, ``THROUGHPUT``, ``CUMULATIVE_THROUGHPUT``),
    ``config`` (raw compile properties, applied last) and ``num_requests`` (AsyncInferQueue jobs).

    >>> sess = InferenceSession("model.onnx", device="npu", engine="openvino",
    ...                         exec_policy=ExecutionPolicy(precision="int8", static_shape=True))  # doctest: +SKIP
    """

    name = "openvino"
    aliases = ("ov",)
    package = "openvino"
    module = "openvino"
    extra = "openvino"
    devices = ("cpu", "gpu", "npu")
    option_keys = tr.OPTION_KEYS
    output_buffers = ("numpy",)  # OpenVINO owns its output memory: results are copied into host arrays

    def cache_parts(self) -> tuple[str, ...]:
        model_hash = self.model.hash if self.policy.execution.cache_dir else ""  # hashing a big file costs
        return (_ov().get_version(), self.fingerprint_hash, self.policy.hash, model_hash)

    # -- build ---------------------------------------------------------------------------
    def translate(self, policy: Policy, device: DeviceSpec, options: Mapping[str, Any]) -> Plan:
        """The translation table (:func:`._openvino.translate`) checked against the devices and properties this
        OpenVINO has, with CACHE_DIR kept only where it can be private to the user."""
        core = _core()
        self.ov_model = self._read(core)
        native = tr.translate(policy, device.kind, device.index, available=core.available_devices, options=options,
                              inputs=_input_dims(self.ov_model, _onnx_names(self.model.proto)), op_types=_op_types(self.ov_model),
                              key=self.cache_key())
        self.supported = _supported(core, native.device)
        tr.finish(native, self.supported, options.get("config"))
        self.capabilities = _capabilities(core, native.device)
        _private_cache(native, policy.execution.cache_dir)
        requested = {"providers": [native.asked], "device": native.device, "config": dict(native.config),
                     "reshape": {k: list(v) for k, v in native.reshape.items()}, "precision": policy.execution.precision,
                     "performance_hint": native.performance_hint, "cache_folder": native.cache_folder}
        return Plan(native, requested=requested, targets=(native.asked,), violations=native.violations,
                    notes=native.notes)

    def load_impl(self) -> None:
        core = _core()
        model = self.ov_model
        self._reshape(model)
        self.compiled, self._cache_note = self._compile(core, model, self.plan.config)
        known = _onnx_names(self.model.proto, outputs=True)
        self._out_index = {_port_name(port, known): i for i, port in enumerate(self.compiled.outputs)}
        self._idle: list[Any] = []
        self._draining: list[tuple[Any, Any]] = []  # (request, its inputs): runs past execution_timeout_ms
        self._pool_lock = threading.Lock()
        self._create_lock = threading.Lock()  # create_infer_request, one call at a time (_new_request)
        self._failed: list[Any] = []  # requests whose run failed, destroyed under _create_lock
        self._gate = _RunGate()  # runs share it; a recompile has it alone
        self._stale = False  # a run failed: the next one recompiles first (see _recompile)
        # INFERENCE_NUM_THREADS=1: OpenVINO 2026.4's synchronous infer() drops errors raised during the run and
        # returns an empty or the previous run's output; start_async() + wait() reports them
        self._sync_reports_errors = self.plan.config.get("INFERENCE_NUM_THREADS") != "1"
        self._queue: Any = None
        self._queue_lock = threading.Lock()

    def _read(self, core: Any) -> Any:
        refuse_impossible(self.model.proto, self.model.description, "OpenVINO", max_input_bytes())
        source = str(self.model.path) if self.model.path else self.model.data
        try:
            return core.read_model(source)
        except Exception as exc:  # OpenVINO raises RuntimeError (and pybind types) for unreadable models
            raise ModelLoadError(f"OpenVINO could not read the model: {_message(exc)}",
                                 expected="an ONNX model whose operators and opset OpenVINO supports",
                                 received=self.model.description,
                                 hint="check the operators against OpenVINO's ONNX frontend, or use "
                                      "engine='onnxruntime'") from None

    def _reshape(self, model: Any) -> None:
        if not self.plan.reshape:
            return
        try:
            model.reshape(self.plan.reshape)
        except Exception as exc:
            raise PolicyError(f"OpenVINO could not reshape the model to fixed_shapes: {_message(exc)}",
                              field="execution.fixed_shapes", expected="shapes the model's layers accept",
                              received=str(self.plan.reshape)) from None

    def _compile(self, core: Any, model: Any, config: dict[str, str]) -> tuple[Any, str | None]:
        """Compile; with a cache folder, one process at a time, and OpenVINO only ever sees blobs whose
        checksum we recorded (it loads a damaged blob without noticing and computes wrong outputs)."""
        folder = self.plan.cache_folder and config.get("CACHE_DIR") and Path(self.plan.cache_folder)
        with _cache.entry_lock(folder, "compile") if folder else contextlib.nullcontext():
            if folder:
                _cache.verify_folder(folder, warn_stacklevel=5)
            before = _listing(self.plan.cache_folder)
            try:
                compiled = core.compile_model(model, self.plan.device, config)
            except Exception as exc:
                raise _compile_error(exc, self.plan.device, config) from None
            note = _cache_note(self.plan.cache_folder, before, _listing(self.plan.cache_folder))
            if folder:
                _cache.record_folder(folder, warn_stacklevel=5)
        return compiled, note

    # -- introspection -------------------------------------------------------------------
    def inputs_impl(self) -> list[TensorInfo]:
        names, known = _onnx_dim_names(self.model.proto), _onnx_names(self.model.proto)
        return [_info(port, _port_name(port, known), names) for port in self.compiled.inputs]

    def outputs_impl(self) -> list[TensorInfo]:
        names, known = _onnx_dim_names(self.model.proto, outputs=True), _onnx_names(self.model.proto, outputs=True)
        return [_info(port, _port_name(port, known), names) for port in self.compiled.outputs]

    # -- run -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _request(self, deadline: float | None = None) -> Iterator[Any]:
        """Borrow an idle infer request (or make one): concurrent callers never share one. A request whose
        run failed is dropped, not pooled (and the compiled model is rebuilt before the next run). With a
        ``deadline`` (execution_timeout_ms), making a request counts against it: OpenVINO 2026.4's
        ``create_infer_request()`` waits while another request of the model runs, so a run abandoned by a
        timeout would otherwise hold the next run past its own limit."""
        if self._stale:
            self._recompile()
        with self._gate.shared():
            with self._pool_lock:
                self._reap()
                request = self._idle.pop() if self._idle else None
            if request is None:
                request = self._new_request(deadline)
            try:
                yield request
            except BaseException:
                with self._pool_lock:  # not pooled; kept until a request is made or the model rebuilt, so that it
                    self._failed.append(request)  # is destroyed under _create_lock (see _new_request)
                raise
            with self._pool_lock:
                self._idle.append(request)

    def _new_request(self, deadline: float | None) -> Any:
        """A new infer request of the compiled model, one at a time per session (``_create_lock``), and requests
        whose run failed are destroyed only under that lock. OpenVINO 2026.4 aborted the process ("pure virtual
        method called", in ``create_infer_request``) when threads created requests while others ran and failed
        (CI, the timeout path of ``test_failing_runs_among_good_ones_under_threads``). Requests are pooled: this
        is paid once per concurrent run, not per run."""
        if deadline is None:
            return self._create(self.compiled)
        made: list[Any] = []
        done = threading.Event()
        compiled = self.compiled

        def make() -> None:
            try:
                made.append(self._create(compiled))
            except BaseException as exc:  # noqa: BLE001 - the waiting run raises it (not a timeout 60 s later)
                made.append(exc)
            done.set()
            with self._pool_lock:
                if getattr(make, "late", False) and self.compiled is compiled and \
                        not isinstance(made[0], BaseException):
                    self._idle.append(made[0])  # nobody waits for it any more: pool it for the next run

        threading.Thread(target=make, name="xpuruntime-openvino-request", daemon=True).start()
        if not done.wait(max(0.0, deadline - time.monotonic())):
            with self._pool_lock:
                make.late = True  # type: ignore[attr-defined]
                if not done.is_set():
                    raise _timeout_error(self.policy.execution.execution_timeout_ms, "the run could not start: a "
                                         "run abandoned by an earlier timeout still holds the model")
        if isinstance(made[0], BaseException):
            raise made[0]
        return made[0]

    def _create(self, compiled: Any) -> Any:
        """``compiled.create_infer_request()`` under ``_create_lock``, the requests whose run failed destroyed
        first (see :meth:`_new_request`)."""
        with self._create_lock:
            with self._pool_lock:
                failed, self._failed = self._failed, []
            del failed
            return compiled.create_infer_request()

    def _reap(self) -> None:
        """Requests whose run outlived its timeout go back to the pool once that run has ended."""
        finished, broken = [], []
        for item in self._draining:
            try:
                if item[0].wait_for(0):
                    finished.append(item)
            except Exception:  # noqa: BLE001 - cancelled at exit, or failed: never pooled again
                broken.append(item)
        self._draining = [item for item in self._draining if not any(item is f for f in [*finished, *broken])]
        self._idle += [request for request, _ in finished]

    def _recompile(self) -> None:
        """After a failed run. OpenVINO 2026.4's CPU plugin can keep a failed run's state in the compiled model
        (later runs then fail, or return wrong values): the next run gets a freshly compiled model (from the
        cache when there is one). Alone: no run is in flight on the old model meanwhile (replacing it under
        running requests crashed the process), and runs abandoned by a timeout are waited for first."""
        with self._gate.alone():
            if not self._stale or isinstance(self.compiled, _Closed):
                return  # another thread has just done it, or the session closed (the run then raises that)
            for request, _ in self._draining:
                with contextlib.suppress(Exception):
                    request.wait()
            with self._create_lock:  # (no run is in flight: only a request abandoned by a timeout could be made)
                self._draining, self._idle, self._queue, self._failed = [], [], None, []
            self.compiled, _ = self._compile(_core(), self.ov_model, self.plan.config)
            self._stale = False

    def run_impl(self, feeds: dict[str, Any], output_names: Sequence[str], outputs: dict[str, Any] | None) -> list[Any]:
        _host_only(feeds)
        timeout = self.policy.execution.execution_timeout_ms
        deadline = time.monotonic() + timeout / 1000 if timeout else None
        with self._request(deadline) as request:
            values = self._infer(request, feeds, [self._out_index[n] for n in output_names], deadline)
        return _into(values, output_names, outputs or {})

    def _infer(self, request: Any, feeds: dict[str, Any], indices: list[int], deadline: float | None = None) -> list[Any]:
        timeout = self.policy.execution.execution_timeout_ms
        if timeout and deadline is None:
            deadline = time.monotonic() + timeout / 1000
        try:
            if not timeout and self._sync_reports_errors:
                results = request.infer(feeds, share_inputs=True, share_outputs=False)
                return [results[i] for i in indices]
            request.start_async(feeds, share_inputs=True)  # not False: copied inputs make a failed run
            if not timeout:                                 # corrupt later runs on the same compiled model
                request.wait()
            elif not request.wait_for(max(1, int((deadline - time.monotonic()) * 1000))):
                self._abandon(request, feeds)
                raise _timeout_error(timeout, "still running (it finishes in the background; OpenVINO's cancel "
                                              "is not used: it corrupts later runs)")
            return [request.get_output_tensor(i).data.copy() for i in indices]
        except XpuRuntimeError:
            raise
        except Exception as exc:
            self._stale = True
            raise _run_error(exc) from None

    def _abandon(self, request: Any, feeds: dict[str, Any]) -> None:
        """Not InferRequest.cancel(): in OpenVINO 2026.4 a cancelled run can keep going and its outputs then
        come back from a later run, even on another request. The request finishes its run in the background
        and returns to the pool afterwards (see _request); its inputs, which it reads in place, stay alive
        with it."""
        with self._pool_lock:
            self._draining.append((request, feeds))
        _in_flight.add(self)
        _abandoned[:] = [item for item in _abandoned if _still_running([item[0]])]  # finished ones let go
        _abandoned.append((request, feeds))  # held here too: the session may be gone by exit, the run is not
        _exit_guard()

    def run_many_impl(self, feeds_list: Sequence[dict[str, Any]], output_names: Sequence[str]) -> list[list[Any]]:
        """All feeds through OpenVINO's AsyncInferQueue; results in input order."""
        if self.policy.execution.execution_timeout_ms:  # the queue has no per-request limit: one by one
            return super().run_many_impl(feeds_list, output_names)
        for feeds in feeds_list:
            _host_only(feeds)
        indices = [self._out_index[n] for n in output_names]
        with self._queue_lock:
            if self._stale:
                self._recompile()
            with self._gate.shared():
                if self._queue is None:
                    self._queue = _ov().AsyncInferQueue(self.compiled, self.plan.num_requests)
                return self._run_queue(self._queue, feeds_list, indices)

    def _run_queue(self, queue: Any, feeds_list: Sequence[dict[str, Any]], indices: list[int]) -> list[list[Any]]:
        results: list[Any] = [None] * len(feeds_list)
        errors: list[BaseException] = []

        def done(request: Any, index: int) -> None:
            try:
                results[index] = [request.get_output_tensor(i).data.copy() for i in indices]
            except Exception as exc:  # a callback runs on OpenVINO's thread: keep the error for the caller
                errors.append(exc)

        queue.set_callback(done)
        try:
            for index, feeds in enumerate(feeds_list):
                queue.start_async(feeds, index, share_inputs=True)
            queue.wait_all()
        except Exception as exc:
            self._stale = True  # a fresh compiled model and queue for the next call
            raise _run_error(exc) from None
        if errors:
            self._stale = True
            raise _run_error(errors[0])
        return results

    # -- receipts ------------------------------------------------------------------------
    def _evidence(self, report: ExecutionReport, compiled: Any) -> None:
        report.evidence.append("openvino.CompiledModel.get_property('EXECUTION_DEVICES')")
        report.notes += [_readback(compiled), *([self._cache_note] if self._cache_note else [])]

    def report_impl(self, report: ExecutionReport) -> None:
        self._evidence(report, self.compiled)
        report.evidence.append("openvino.CompiledModel.get_runtime_model() rt_info (layerType, primitiveType, "
                               "runtimePrecision)")
        devices = _execution_devices(self.compiled)
        for layer in _runtime_layers(self.compiled):
            report.nodes.append(self._node(layer["name"], layer["type"], devices, layer["primitive"],
                                           layer["precision"]))
        if any(n.kernel is None for n in report.nodes):
            report.notes.append("with dynamic shapes OpenVINO picks some primitives at the first run; explain() "
                                "shows the ones that ran")
        self._judge(report, self.compiled)

    def _node(self, name: str, layer_type: str, devices: str, kernel: str | None, precision: str | None) -> NodeRecord:
        op = _KERNEL_OPS.get(layer_type.lower())
        wanted = "/".join(self.policy.kernels.resolve(op)) if op and op in self.policy.kernels else None
        kernel = None if not kernel or kernel.startswith("undef") else kernel
        return NodeRecord(name=name, op_type=layer_type, provider=devices, requested=self.plan.target, kernel=kernel,
                          requested_kernel=wanted, precision=precision)

    def _judge(self, report: ExecutionReport, compiled: Any) -> None:
        precision, hint = self.policy.execution.precision, _property(compiled, "INFERENCE_PRECISION_HINT")
        layers = {layer["name"]: layer for layer in _runtime_layers(compiled)}
        integer = {name for name, layer in layers.items() if layer["integer"]}
        _integer_notes(report, layers, integer)
        for node in report.nodes:
            if node.requested is not None and tr.same_device(node.requested, node.provider):
                node.requested = node.provider  # GPU asked, GPU.0 ran: the same device
            elif node.requested is not None:
                report.add(Violation("provider_fallback", node.name, node.requested, node.provider or "?",
                                     self._fallback_reason()))
            reason = tr.judge_layer(node.op_type, node.precision, precision, quantized=self.plan.quantized,
                                    capabilities=self.capabilities, compiled_hint=hint, integer=node.name in integer)
            if reason:
                report.add(Violation("precision", node.name, precision, node.precision or "?", reason))

    def _fallback_reason(self) -> str:
        missing = [v.reason for v in self.plan.violations if v.kind == "device_unavailable"]
        return missing[0] if missing else f"OpenVINO ran the layer on another device than {self.plan.target}"

    def profile_impl(self, report: ExecutionReport, feeds: dict[str, Any], output_names: Sequence[str]) -> None:
        _host_only(feeds)
        if self.supported is not None and "PERF_COUNT" not in self.supported:
            raise UnsupportedOperationError(f"{self.plan.device} cannot profile layers (no PERF_COUNT property)",
                                            hint="use session.report for placement and precision without times")
        compiled, _ = self._compile(_core(), self.ov_model, {**self.plan.config, "PERF_COUNT": "YES"})
        request, indices = compiled.create_infer_request(), [self._out_index[n] for n in output_names]
        for _ in range(2):  # warm-up (dynamic shapes pick primitives at the first run), then the measured run
            self._infer(request, feeds, indices)
        self._evidence(report, compiled)
        report.evidence.append("openvino.InferRequest.profiling_info (PERF_COUNT), last of two runs")
        self._profiled_nodes(report, compiled, request.profiling_info)
        self._judge(report, compiled)

    def _profiled_nodes(self, report: ExecutionReport, compiled: Any, infos: Sequence[Any]) -> None:
        devices = _execution_devices(compiled)
        precisions = {layer["name"]: layer["precision"] for layer in _runtime_layers(compiled)}  # floating-aware
        for info in infos:
            if info.node_type in _SKIPPED_LAYERS or info.status.name != "EXECUTED":
                continue  # fused into another layer (its originalLayersNames) or nothing to run
            precision = precisions.get(info.node_name) or \
                tr.precision_from_primitive(info.exec_type)
            node = self._node(info.node_name, info.node_type, devices, info.exec_type, precision)
            node.time_us, node.calls = info.real_time.total_seconds() * 1e6, 1
            report.nodes.append(node)
            report.events.append(_perf_event(info, node, report.events[-1]["ts"] + report.events[-1]["dur"]
                                             if report.events else 0.0))

    def close_impl(self) -> None:
        """Runs in flight keep their own references; a run that starts after close() finds the session closed
        (the base class), and one that races it gets ``XpuRuntimeError``, never an ``AttributeError``."""
        gate = getattr(self, "_gate", None)  # None: closed after a failed load
        with gate.alone() if gate is not None else contextlib.nullcontext():  # runs in flight end first
            self._queue = None
            self._idle = []
            self.compiled = _Closed()


# -- helpers -------------------------------------------------------------------------------
def _perf_event(info: Any, node: NodeRecord, clock: float) -> dict[str, Any]:
    """One PERF_COUNT entry as a receipt event; PERF_COUNT gives durations only, so events are laid end to end."""
    return {"name": info.node_name, "ts": clock, "dur": node.time_us, "cat": "layer", "track": node.provider,
            "node": node.name, "args": {"layer_type": info.node_type, "exec_type": info.exec_type,
                                         "cpu_time_us": info.cpu_time.total_seconds() * 1e6, "synthesised_ts": True}}


class _Closed:
    """Stands for the compiled model after close(): a run that raced close() gets a clear error."""

    def __getattr__(self, name: str) -> Any:
        from xpuruntime.errors import XpuRuntimeError

        raise XpuRuntimeError("the session is closed", expected="an open session", received="closed during the "
                              "call", hint="create a new InferenceSession")


def _timeout_error(timeout: int, received: str) -> ExecutionTimeoutError:
    return ExecutionTimeoutError("the run passed execution_timeout_ms", expected=f"a run that finishes within "
                                 f"{timeout} ms", received=received)


# -- exit: runs abandoned by a timeout --------------------------------------------------------------------------
_in_flight: weakref.WeakSet[OpenVinoEngine] = weakref.WeakSet()  # engines with abandoned runs
#: every run abandoned by a timeout, with its inputs, for the exit guard (strong references: a closed or collected
#: session's run still holds OpenVINO's teardown)
_abandoned: list[tuple[Any, Any]] = []
_exit_status: list[int] = []  # what the CLI is exiting with (note_exit_status), for the exit below
_EXIT_WAIT_S = 1.0


def note_exit_status(code: Any) -> None:
    """The status a program is about to exit with (the CLI calls this), used if :func:`_exit_guard` must end the
    process itself. Example: ``note_exit_status(1)``."""
    _exit_status[:] = [code if isinstance(code, int) else 0 if code is None else 1]


def runs_in_flight() -> int:
    """How many runs abandoned by ``execution_timeout_ms`` are still running, over every OpenVINO session."""
    count = 0
    for engine in list(_in_flight):
        with engine._pool_lock:
            engine._reap()
            count += len(engine._draining)
    return count


@functools.cache
def _exit_guard() -> None:
    """Registered at the first abandoned run: at exit, each such run is cancelled (no later run can read its
    outputs any more) and waited for up to a second in all. OpenVINO cannot stop some runs (a ``Loop`` ignores
    ``cancel()``), and its teardown then waits for them forever; so when one is still running, the process
    flushes its output and ends with ``os._exit`` (the CLI's status, else 0), skipping the remaining atexit
    handlers: the one case where xpuruntime ends a process itself."""
    import atexit
    import sys

    hook = sys.excepthook

    def noting(*exc_info: Any) -> None:  # an uncaught exception: exit status 1, as Python would give
        note_exit_status(1)
        hook(*exc_info)

    sys.excepthook = noting
    atexit.register(_exit_now_if_stuck)


def _exit_now_if_stuck() -> None:
    requests = [request for request, _ in list(_abandoned)]
    for request in requests:
        with contextlib.suppress(Exception):
            request.cancel()
    deadline = time.monotonic() + _EXIT_WAIT_S
    while _still_running(requests) and time.monotonic() < deadline:
        time.sleep(0.02)
    if _still_running(requests):
        import sys

        sys.stderr.write("xpuruntime: an OpenVINO run past its execution_timeout_ms could not be stopped; exiting "
                         "without waiting for it\n")
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(_exit_status[0] if _exit_status else 0)


def _still_running(requests: list[Any]) -> bool:
    """True unless every request says its run has ended. A cancelled request may raise instead of answering
    while its run goes on (a ``Loop`` ignores ``cancel()``): that counts as still running, since OpenVINO's
    teardown would wait for it forever."""
    for request in requests:
        try:
            if not request.wait_for(0):
                return True
        except Exception:  # noqa: BLE001 - cancelled or failed: OpenVINO cannot say the run stopped
            return True
    return False


class _RunGate:
    """Many runs at once, or one recompile alone; a waiting recompile holds new runs back (no starvation)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._runs = 0
        self._waiting = 0
        self._alone = False

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._alone or self._waiting:
                self._cond.wait()
            self._runs += 1
        try:
            yield
        finally:
            with self._cond:
                self._runs -= 1
                if not self._runs:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def alone(self) -> Iterator[None]:
        with self._cond:
            self._waiting += 1
            while self._alone or self._runs:
                self._cond.wait()
            self._waiting -= 1
            self._alone = True
        try:
            yield
        finally:
            with self._cond:
                self._alone = False
                self._cond.notify_all()


def _private_cache(plan: tr.OvPlan, cache_dir: str | None) -> None:
    """CACHE_DIR is a folder private to the user, or (with a warning) no cache at all."""
    if not plan.cache_folder:
        return
    try:
        _cache.private_folder(cache_dir, "openvino", os.path.basename(plan.cache_folder))
    except _cache.CacheUnavailable as exc:
        import warnings

        warnings.warn(f"{exc}; OpenVINO compiles without a cache", RuntimeWarning, stacklevel=6)
        plan.notes.append(f"cache_dir not used: {exc}")
        plan.config.pop("CACHE_DIR", None)
        plan.cache_folder = None


def _message(exc: BaseException) -> str:
    """OpenVINO's message without its 'Exception from src/...' and 'Check ... failed at' lines."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    kept = [ln for ln in lines if not ln.startswith(("Exception from", "To facilitate"))
            and not re.match(r"^Check '.*' failed at", ln)] or lines or [type(exc).__name__]
    return " ".join(kept[:4] if kept[0].endswith(":") else kept[:1])[:500]  # "...failed with X:" + its details


def _compile_error(exc: BaseException, device: str, config: Mapping[str, str]) -> XpuRuntimeError:
    text = _message(exc)
    if "property" in text.lower() or "config" in text.lower():
        return PolicyError(f"OpenVINO refused a compile property for {device}: {text}", field="engine_options.config",
                           expected="properties and values the device supports", received=str(dict(config)))
    return ModelLoadError(f"OpenVINO could not compile the model for {device}: {text}",
                          expected=f"a model {device} supports", received=text,
                          hint="try device='cpu', or engine='onnxruntime'")


def _run_error(exc: BaseException) -> XpuRuntimeError:
    text = _message(exc)
    if any(word in text.lower() for word in _INPUT_WORDS):
        return InputError(f"OpenVINO refused the inputs: {text}", expected="inputs the model accepts",
                          received="see the message")
    return XpuRuntimeError(f"OpenVINO failed during the run: {text}",
                           hint="the session stays usable; check the inputs' values and the device's memory")


def _host_only(feeds: dict[str, Any]) -> None:
    if any(isinstance(v, DeviceArray) for v in feeds.values()):
        raise UnsupportedOperationError("the openvino engine takes host (numpy) inputs", expected="numpy arrays",
                                        received="CUDA tensors", hint="pass tensor.cpu().numpy()")


def _into(values: list[Any], names: Sequence[str], outputs: dict[str, Any]) -> list[Any]:
    """Copy results into caller-owned buffers where given (OpenVINO owns its output memory)."""
    out = []
    for name, value in zip(names, values):
        target = outputs.get(name)
        if target is None:
            out.append(value)
            continue
        if not isinstance(target, np.ndarray) or target.shape != value.shape:
            raise InputError(f"preallocated output {name!r} does not fit the result",
                             expected=f"a numpy array of shape {list(value.shape)}",
                             received=f"{type(target).__name__} {list(getattr(target, 'shape', []))}")
        np.copyto(target, value)
        out.append(target)
    return out


def _input_dims(model: Any, known: set[str]) -> dict[str, list[int | None]]:
    dims: dict[str, list[int | None]] = {}
    for port in model.inputs:
        shape = port.get_partial_shape()
        dims[_port_name(port, known)] = [] if shape.rank.is_dynamic else [
            d.get_length() if d.is_static else None for d in shape]
    return dims


def _op_types(model: Any) -> set[str]:
    return {op.get_type_name() for op in model.get_ordered_ops()}


def _onnx_dim_names(proto: Any, outputs: bool = False) -> dict[str, list[str | None]]:
    values = proto.graph.output if outputs else proto.graph.input
    return {v.name: [d.dim_param or None for d in v.type.tensor_type.shape.dim] for v in values}


def _onnx_names(proto: Any, outputs: bool = False) -> set[str]:
    return {v.name for v in (proto.graph.output if outputs else proto.graph.input)}


def _port_name(port: Any, known: set[str]) -> str:
    """The port's name as the ONNX graph spells it. With static shapes OpenVINO can fold a no-op node into a
    Parameter or Result and merge the tensor names (GPT-2: ``{'input_ids', '/model/Reshape_output_0'}``), and
    ``get_any_name()`` may pick the other one."""
    names = sorted(set(port.get_names()) & known)
    return names[0] if names else port.get_any_name()


def _info(port: Any, name: str, onnx_dims: Mapping[str, list[str | None]]) -> TensorInfo:
    shape = port.get_partial_shape()
    dtype = _OV_TYPES.get(port.get_element_type().get_type_name(), port.get_element_type().get_type_name())
    if shape.rank.is_dynamic:
        return TensorInfo(name, None, dtype)
    own = onnx_dims.get(name)
    names = own if own and len(own) == len(shape) else [None] * len(shape)
    dims = tuple(d.get_length() if d.is_static else names[i] for i, d in enumerate(shape))
    return TensorInfo(name, dims, dtype)


def _supported(core: Any, device: str) -> list[str] | None:
    """Settable properties of a plain device; None for meta devices (AUTO, HETERO...), which pass them on."""
    if device.partition(":")[0].upper() in tr.META_DEVICES:
        return None
    try:
        props = core.get_property(device, "SUPPORTED_PROPERTIES")
    except Exception:  # a plugin that cannot say: let compile_model judge
        return None
    if isinstance(props, Mapping):
        return [name for name, mode in props.items() if str(mode) != "RO"]
    return [str(p) for p in props]


def _capabilities(core: Any, device: str) -> list[str]:
    if device.partition(":")[0].upper() in tr.META_DEVICES:
        return []
    with contextlib.suppress(Exception):
        return [str(c) for c in core.get_property(device, "OPTIMIZATION_CAPABILITIES")]
    return []


def _property(compiled: Any, name: str) -> str | None:
    with contextlib.suppress(Exception):
        value = compiled.get_property(name)
        return value.get_type_name() if hasattr(value, "get_type_name") else str(getattr(value, "name", value))
    return None


def _execution_devices(compiled: Any) -> str:
    with contextlib.suppress(Exception):
        return ",".join(str(d) for d in compiled.get_property("EXECUTION_DEVICES")) or "?"
    return "?"


def _readback(compiled: Any) -> str:
    names = ("EXECUTION_DEVICES", "INFERENCE_PRECISION_HINT", "EXECUTION_MODE_HINT", "PERFORMANCE_HINT",
             "NUM_STREAMS", "INFERENCE_NUM_THREADS")
    values = [f"{n}={_execution_devices(compiled) if n == 'EXECUTION_DEVICES' else _property(compiled, n)}"
              for n in names]
    return "compiled model reports " + ", ".join(v for v in values if not v.endswith("=None"))


def _rt(info: Any, key: str) -> str | None:
    with contextlib.suppress(Exception):
        return info[key].astype(str)
    return None


def _runtime_layers(compiled: Any) -> list[dict[str, Any]]:
    """The executed graph as OpenVINO reports it: one entry per layer that does work, with the precision of its
    floating tensors (:func:`._openvino.layer_precision`) and whether it has none (``integer``)."""
    layers = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        layer_type = _rt(info, "layerType") or op.get_type_name()
        if layer_type in _SKIPPED_LAYERS:
            continue
        inputs = [_type_name(port) for port in op.inputs()]
        outputs = _rt(info, "outputPrecisions") or [_type_name(port) for port in op.outputs()]
        raw = _rt(info, "runtimePrecision")
        layers.append({"name": op.get_friendly_name(), "type": layer_type, "primitive": _rt(info, "primitiveType"),
                       "raw_precision": raw, "precision": tr.layer_precision(layer_type, raw, inputs, outputs),
                       "integer": tr.integer_only(inputs, outputs)})
    return layers


def _type_name(port: Any) -> str:
    with contextlib.suppress(Exception):
        return str(port.get_element_type().get_type_name())
    return ""


def _integer_notes(report: ExecutionReport, layers: Mapping[str, dict[str, Any]], integer: set[str]) -> None:
    """Say which layers are integer by nature and which were judged by their floating tensors (issue 11)."""
    shown = [n.name for n in report.nodes if n.name in integer]
    if shown:
        report.notes.append(f"{len(shown)} layer(s) work on integer/boolean tensors only ({_some(shown)}): masks, "
                            "shape math and indices have no float precision, so they are never judged as float "
                            "compute")
    relabelled = [n.name for n in report.nodes if n.name in layers and n.name not in integer
                  and tr.runtime_precision(layers[n.name]["raw_precision"]) != layers[n.name]["precision"]]
    if relabelled:
        report.notes.append(f"{len(relabelled)} layer(s) report an integer runtimePrecision (their first input, e.g. "
                            f"a boolean mask) but compute on floating tensors ({_some(relabelled)}): judged by "
                            "rt_info outputPrecisions and their floating inputs")


def _some(names: Sequence[str], limit: int = 3) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _listing(folder: str | None) -> set[str]:
    if not folder or not os.path.isdir(folder):
        return set()
    return {n for n in os.listdir(folder) if not n.endswith((".sha256", ".lock")) and not n.startswith(".")}


def _cache_note(folder: str | None, before: set[str], after: set[str]) -> str | None:
    if not folder:
        return None
    if before and after <= before:
        return f"compiled model imported from the cache {folder} (no new blob written)"
    return f"compiled model exported to the cache {folder} ({len(after - before)} new blob(s))"
