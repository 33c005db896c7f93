"""PyTorch as an inference engine: an ``nn.Module`` or a ``torch.export`` ExportedProgram under a policy.

Name ``torch`` (alias ``pytorch``), devices ``cpu`` and ``cuda[:N]``. The policy is translated by the same
table as training (:mod:`xpuruntime.pytorch._translate`) and applied around each run, then restored.
``precision`` fp16/bf16 casts the weights once at load (no ``torch.autocast`` on every call): floating inputs
are cast to that dtype and floating outputs back to float32 (the I/O types stay those of the fp32 model, as ONNX
Runtime's fp16 copy keeps them). The ops torch's autocast keeps in float32 that live in modules (``LayerNorm``,
``GroupNorm``, ``RMSNorm``) keep float32 weights and run in float32 (their input upcast, their output cast back);
``BatchNorm`` runs in the input dtype, as under autocast; the softmax inside ``scaled_dot_product_attention``
accumulates in float32 in torch's fused kernels. The receipt's ``requested["weights_cast"]`` says what was cast.
``engine_options={"precision_mode": "autocast"}`` keeps fp32 weights under ``torch.autocast`` instead;
``"cast-all"`` casts every weight, norms included, with no hooks (what ``module.half()`` does by hand: fastest,
and the bare baseline of :mod:`xpuruntime.inference._bare`; the receipt's ``kept_float32`` is then empty).
``execution.compile`` (``default``, ``reduce-overhead``, ``max-autotune``) compiles the module with
``torch.compile`` in that mode; ``reduce-overhead`` and ``max-autotune`` bring torch's own CUDA graphs, so
``cuda_graphs`` then adds no second capture. Receipts: ``session.report`` lists the model's
ops (from the exported graph, or the module tree) with the kernels asked for; ``explain()`` reads what
ran from ``torch.profiler``.

``engine_options``:

- ``example_inputs``: a tuple of tensors or arrays; required for an ``nn.Module`` (input names come from
  ``forward``'s signature, output names from one example run), optional for an ExportedProgram;
- ``compile``: ``True``, a ``torch.compile`` mode string or a dict of its keyword arguments: the raw escape
  hatch over ``execution.compile`` (which it overrides). Off by default: compilation costs seconds to
  minutes at the first run, so it is asked for, never implied by ``optimize_level``;
- ``precision_mode``: ``"cast"`` (default: fp16/bf16 weights cast once, norms kept float32), ``"cast-all"``
  (every weight cast, norms included) or ``"autocast"``;
- ``copy``: ``True`` (default) serves a deep copy of an ``nn.Module``, so the training model keeps its device
  and train mode; ``False`` moves and evaluates the module itself (no second copy of the weights);
- ``input_names`` / ``output_names``: names to use instead of the derived ones.

``cuda_graphs=True`` (with ``static_shape``) captures the forward at the first run with
:func:`xpuruntime.pytorch.capture_graph` and replays it afterwards. torch's switches are process-global,
so runs of torch sessions hold one process-wide lock: two sessions with different policies never run at
once.

>>> sess = InferenceSession(model, engine="torch", device="cuda",
...                         kernel_policy={"attention": "flash"}, exec_policy={"precision": "bf16"},
...                         engine_options={"example_inputs": (x,)})            # doctest: +SKIP
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xpuruntime.errors import (
    InputError,
    ModelLoadError,
    OutOfMemoryError,
    PolicyError,
    XpuRuntimeError,
    did_you_mean,
)
from xpuruntime.inference.engine import Engine, register_engine
from xpuruntime.inference.engines import _torch_staging as _staging
from xpuruntime.inference.feeds import DeviceArray, TensorInfo
from xpuruntime.inference.plan import Plan
from xpuruntime.policies import Policy
from xpuruntime.receipts import ExecutionReport, NodeRecord, Violation
from xpuruntime.runtime.devices import DeviceSpec

__all__ = ["TorchEngine", "TorchModel"]

_OPTION_KEYS = ("example_inputs", "compile", "copy", "input_names", "output_names", "precision_mode")
# modules whose ops torch.autocast runs in float32 (layer_norm, group_norm, rms_norm are on its fp32 list)
_FP32_MODULES = ("LayerNorm", "GroupNorm", "RMSNorm", "LocalResponseNorm")
_GRAPHING_MODES = ("reduce-overhead", "max-autotune")  # torch.compile modes that capture CUDA graphs themselves
_RUN_LOCK = threading.RLock()  # torch's switches are process-global: one policy at a time
_GRAPH_OPS = {
    **dict.fromkeys(("linear", "mm", "addmm", "bmm", "matmul", "baddbmm"), "matmul"),
    **dict.fromkeys(("scaled_dot_product_attention", "_scaled_dot_product_flash_attention",
                     "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention"), "attention"),
    **dict.fromkeys(("convolution", "conv1d", "conv2d", "conv3d"), "conv"),
    **dict.fromkeys(("layer_norm", "native_layer_norm"), "layernorm"),
}
_MODULE_OPS = {"Linear": "matmul", "Bilinear": "matmul", "MultiheadAttention": "attention", "Conv1d": "conv",
               "Conv2d": "conv", "Conv3d": "conv", "ConvTranspose1d": "conv", "ConvTranspose2d": "conv",
               "ConvTranspose3d": "conv", "LayerNorm": "layernorm"}


_TORCH: Any = None


def _torch() -> Any:
    """torch, imported at the first use (``import xpuruntime`` stays light) and then read from a global: this is
    called on every run, where an import statement costs a lookup through the import machinery."""
    global _TORCH
    if _TORCH is None:
        import torch

        _TORCH = torch
    return _TORCH


@functools.cache
def _applied_policy() -> Callable[..., Any]:
    from xpuruntime.pytorch import applied_policy

    return applied_policy


def _state() -> Any:
    from xpuruntime.pytorch import _state as state

    return state


@dataclass
class TorchModel:
    """The model a torch session serves: an nn.Module or an ExportedProgram, and where it came from."""

    model: Any
    exported: bool
    description: str
    notes: list[str] = field(default_factory=list)


def _load(model: Any) -> TorchModel:
    torch = _torch()
    if isinstance(model, (str, os.PathLike)) and str(model).endswith(".pt2"):
        try:
            return TorchModel(torch.export.load(os.fspath(model)), True, str(model))
        except (OSError, RuntimeError, ValueError) as exc:
            raise ModelLoadError(f"torch.export.load could not read {model}: {exc}",
                                 expected="a .pt2 file written by torch.export.save", received=str(model)) from None
    if isinstance(model, torch.export.ExportedProgram):
        return TorchModel(model, True, "<torch.export.ExportedProgram>")
    if isinstance(model, torch.nn.Module):
        return TorchModel(model, False, f"<{type(model).__name__}>")
    raise ModelLoadError("the torch engine takes an nn.Module, a torch.export ExportedProgram or a .pt2 file",
                         expected="torch.nn.Module, torch.export.ExportedProgram or a path ending in .pt2",
                         received=type(model).__name__,
                         hint="for an ONNX model use engine='onnxruntime' or engine='openvino'")


@register_engine
class TorchEngine(Engine):
    """PyTorch eager (optionally ``torch.compile`` and CUDA graphs) on ``cpu`` or ``cuda[:N]``."""

    name = "torch"
    aliases = ("pytorch",)
    package = "torch"
    module = "torch"
    extra = "torch"
    devices = ("cpu", "cuda")
    option_keys = _OPTION_KEYS
    output_buffers = ("numpy", "torch")  # results are copied in (torch tensors on any device)

    @classmethod
    def load_model(cls, model: Any) -> TorchModel:
        return _load(model)

    # -- build ---------------------------------------------------------------------------
    def translate(self, policy: Policy, device: DeviceSpec, options: Mapping[str, Any]) -> Plan:
        """xpuruntime.pytorch's translation table (the same one training uses), on the device torch can reach."""
        from xpuruntime.pytorch import kernel_available, translate

        target_violations: list[Violation] = []
        self.target = self._target_device(target_violations)
        native = translate(policy, execution=True, custom_kernels=kernel_available, device=self.target.type)
        violations = [*native.violations, *target_violations]
        notes = list(native.notes)
        mode = options.get("precision_mode", "cast")
        if mode not in ("cast", "cast-all", "autocast"):
            raise PolicyError("unknown precision_mode", field="engine_options.precision_mode",
                              expected="'cast' (weights cast once, norms float32), 'cast-all' or 'autocast'", received=repr(mode))
        self.cast_dtype = policy.execution.precision if native.autocast and mode != "autocast" else None
        self.norms_fp32 = mode == "cast"
        if self.cast_dtype:
            native = dataclasses.replace(native, autocast=None)
        compile_option = _compile_option(policy, options)
        if compile_option:
            kwargs = ", ".join(f"{k}={v!r}" for k, v in _compile_kwargs(compile_option, policy).items())
            notes.append(f"torch.compile({kwargs}): compiled at the first run")
        if compile_option and options.get("compile") and policy.execution.compile != "off":
            notes.append(f"engine_options.compile overrides execution.compile={policy.execution.compile!r}")
        if policy.execution.cuda_graphs and self.target.type != "cuda":
            violations.append(Violation("option", "cuda_graphs", "CUDA graph capture", "eager execution",
                                        f"CUDA graphs need a CUDA device; the model runs on {self.target}"))
        use_graph = policy.execution.cuda_graphs and self.target.type == "cuda"
        if _compile_mode(compile_option) == "reduce-overhead" and policy.execution.static_shape \
                and self.target.type == "cuda":
            notes.append("compile: 'default' with cuda_graphs: true (Inductor's kernels captured in one CUDA graph by "
                         "xpuruntime, no CUDA graph trees) ran 0.79-0.97x the time of 'reduce-overhead' at batch 32 "
                         "on an H100/H200 (BENCHMARKS.md, fifth run); it needs static shapes and a capturable model")
        if use_graph and _compile_mode(compile_option) in _GRAPHING_MODES:
            notes.append(f"cuda_graphs: captured by torch.compile mode {_compile_mode(compile_option)!r} "
                         "(CUDA graph trees), not a second time by xpuruntime")
        violations += _fusion_violations(policy)
        requested = {"providers": [self.target.type], "device": str(self.target), **native.requested,
                     "compile": _compile_mode(compile_option) if compile_option else False, "cuda_graphs": use_graph,
                     "precision": policy.execution.precision,
                     "weights": f"cast once to {_TORCH_DTYPES[self.cast_dtype]}" if self.cast_dtype else "as given"}
        return Plan(native, requested=requested, targets=(str(self.target),), violations=violations, notes=notes)

    def load_impl(self) -> None:
        self.violations: list[Violation] = []  # found while running (a graph capture that fell back)
        self.module = self._prepare(self.model)
        self.weights_cast = _cast_weights(self.module, self.cast_dtype, norms_fp32=self.norms_fp32) \
            if self.cast_dtype else None
        self._graph: Any = None
        self._packed: Any = None  # (device buffer, indices): the graph's small static inputs packed (_torch_staging)
        self._replay: Callable[[dict[str, Any], Sequence[str]], list[Any] | None] | None = None
        self._compiled: Callable[..., Any] | None = None
        self._raw_dtypes: tuple[str, ...] | None = None  # the cast model's floating outputs, before the cast back
        self.examples = self._examples()
        self._inputs = self._input_infos()
        self._outputs = self._output_infos()  # one example run, eager
        self._check_graphs()
        self._compiled = self._compile()

    def _target_device(self, violations: list[Violation]) -> Any:
        torch = _torch()
        kind, index = self.device.kind, self.device.index
        if kind in ("cuda", "auto") and torch.cuda.is_available():
            return torch.device("cuda", index or 0)
        if kind == "cuda":
            violations.append(Violation("device_unavailable", str(self.device), str(self.device), "cpu",
                                             "torch.cuda.is_available() is False (a CPU build of torch, or no GPU)"))
        return torch.device("cpu")

    @property
    def device_kind(self) -> str:
        return self.target.type

    def _prepare(self, model: TorchModel) -> Any:
        torch = _torch()
        if model.exported:
            program = model.model
            if self.device_kind != "cpu":
                program = torch.export.passes.move_to_device_pass(program, str(self.target))
            return program.module()
        module = copy.deepcopy(model.model) if self.options.get("copy", True) else model.model
        return module.to(self.target).eval()

    def _examples(self) -> tuple[Any, ...] | None:
        raw = self.options.get("example_inputs")
        if raw is None:
            if not self.model.exported:
                raise ModelLoadError("an nn.Module needs example inputs to know its inputs and outputs",
                                     expected="engine_options={'example_inputs': (tensor, ...)}",
                                     received="no example_inputs",
                                     hint="or export it first: torch.export.export(model, (x,))")
            return None
        raw = raw if isinstance(raw, (tuple, list)) else (raw,)
        return tuple(self._as_tensor(v) for v in raw)

    def _as_tensor(self, value: Any) -> Any:
        torch = _torch()
        if isinstance(value, torch.Tensor):
            return value.detach().to(self.target)
        if isinstance(value, DeviceArray):
            return torch.as_tensor(value.owner).to(self.target) if isinstance(value.owner, torch.Tensor) \
                else torch.from_dlpack(value.owner).to(self.target)
        return torch.from_numpy(np.ascontiguousarray(value)).to(self.target)

    # -- inputs and outputs ----------------------------------------------------------------
    def _input_infos(self) -> list[TensorInfo]:
        names = list(self.options.get("input_names") or self._derived_input_names())
        if self.examples is not None:
            if len(names) < len(self.examples):
                names += [f"input_{i}" for i in range(len(names), len(self.examples))]
            return [_info(n, t) for n, t in zip(names, self.examples)]
        return [_info_from_meta(n, v) for n, v in zip(names, self._placeholder_values())]

    def _derived_input_names(self) -> list[str]:
        if self.model.exported:
            return list(self.model.model.graph_signature.user_inputs)
        params = inspect.signature(self.module.forward).parameters.values()
        return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]

    def _placeholder_values(self) -> list[Any]:
        program = self.model.model
        users = set(program.graph_signature.user_inputs)
        return [n.meta.get("val") for n in program.graph.nodes if n.op == "placeholder" and n.name in users]

    def _output_infos(self) -> list[TensorInfo]:
        if self.examples is None:
            values = self._exported_output_values()
        else:
            with _RUN_LOCK, self._scope():
                values = _flatten(self._forward(self.examples))
        names = list(self.options.get("output_names") or self._output_names(values))
        if len(names) != len(values):
            raise ModelLoadError("output_names does not match the model's outputs",
                                 expected=f"{len(values)} names", received=repr(names))
        self._output_keys = [k for k, _ in values]
        return [_info(n, v) if hasattr(v, "dtype") else _info_from_meta(n, v) for n, (_, v) in zip(names, values)]

    def _exported_output_values(self) -> list[tuple[Any, Any]]:
        out_node = next(n for n in self.model.model.graph.nodes if n.op == "output")
        users = list(self.model.model.graph_signature.user_outputs)
        metas = [a.meta.get("val") for a in out_node.args[0]][-len(users):] if users else []
        return list(zip(range(len(metas)), metas))

    def _output_names(self, values: list[tuple[Any, Any]]) -> list[str]:
        if all(isinstance(k, str) for k, _ in values):
            return [k for k, _ in values]
        if self.model.exported and len(self.model.model.graph_signature.user_outputs) == len(values):
            return list(self.model.model.graph_signature.user_outputs)
        return ["output"] if len(values) == 1 else [f"output_{i}" for i in range(len(values))]

    def inputs_impl(self) -> list[TensorInfo]:
        return list(self._inputs)

    def outputs_impl(self) -> list[TensorInfo]:
        return list(self._outputs)

    # -- graphs and compile --------------------------------------------------------------
    def _check_graphs(self) -> None:
        ex = self.policy.execution
        if ex.static_shape and any(isinstance(d, str) for i in self._inputs for d in (i.shape or ())):
            self.load_notes.append("static_shape: the exported program has symbolic dims; the first run's shapes "
                                   "are used for CUDA graphs")

    def _compile(self) -> Callable[..., Any] | None:
        option = _compile_option(self.policy, self.options)
        if not option:
            return None
        return _torch().compile(self.module, **_compile_kwargs(option, self.policy))

    def _forward(self, inputs: Sequence[Any]) -> Any:
        """The module (or its compiled form) on ``inputs`` under inference mode (entered here unless the caller is
        in it already: a run enters it once, around making its inputs too)."""
        torch = _torch()
        if torch.is_inference_mode_enabled():
            return self._forward_body(inputs)
        with torch.inference_mode():
            return self._forward_body(inputs)

    def _forward_body(self, inputs: Sequence[Any]) -> Any:
        fn = self._compiled if self._compiled is not None else self.module
        if self.cast_dtype is None:
            return fn(*inputs)
        torch = _torch()
        dtype = getattr(torch, _TORCH_DTYPES[self.cast_dtype])
        result = fn(*[t.to(dtype) if t.is_floating_point() else t for t in inputs])
        if self._raw_dtypes is None:  # once (the first run is at load): evidence for the receipt
            self._raw_dtypes = tuple(sorted({_dtype_name(t.dtype) for _, t in _flatten(result)
                                             if t.is_floating_point()}))
        return _float_outputs(result, dtype)

    def _graphs_by_compile(self) -> bool:
        return _compile_mode(_compile_option(self.policy, self.options)) in _GRAPHING_MODES \
            and self.device_kind == "cuda"

    def _use_graph(self) -> bool:
        return self.policy.execution.cuda_graphs and self.device_kind == "cuda" and not self._graphs_by_compile()

    @functools.cached_property
    def _modes(self) -> tuple[bool, bool]:
        """(xpuruntime captures a CUDA graph, torch.compile captures them): fixed at load, read on every run."""
        return bool(self._use_graph()), bool(self._graphs_by_compile())

    def _graph_forward(self, inputs: Sequence[Any]) -> Any:
        from xpuruntime.pytorch import capture_graph

        if self._graph is None:
            # the static inputs to capture on: the small CUDA ones packed in one buffer (one copy a call, not one each)
            static, self._packed = _staging.packed_clones(_torch(), inputs)
            self._graph = capture_graph(lambda *xs: self._forward(xs), *static,
                                        fallback=self.policy.execution.fallback)
            self.violations.extend(v for v in self._graph.violations if v not in self.violations)
            self._replay = self._replayer()
        return self._graph(*inputs)

    # -- run -----------------------------------------------------------------------------
    def check_feeds(self, feeds: Any, checker: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
        """torch tensors are checked and kept as tensors; anything else takes the shared numpy path."""
        quick = getattr(checker, "quick", None)
        if quick is not None and quick(feeds):  # matching numpy arrays (every run of a numpy serving loop)
            return feeds  # type: ignore[no-any-return]
        torch = _torch()
        values = feeds.values() if isinstance(feeds, Mapping) else feeds if isinstance(feeds, (list, tuple)) \
            else [feeds]
        for v in values:
            if isinstance(v, torch.Tensor):
                break
        else:
            return checker(feeds)
        named = _named(feeds, self._inputs)
        return {info.name: _checked_tensor(info, named[info.name]) for info in self._inputs}

    def run_impl(self, feeds: dict[str, Any], output_names: Sequence[str], outputs: dict[str, Any] | None) -> list[Any]:
        if self._replay is not None and not outputs:
            done = self._replay(feeds, output_names)
            if done is not None:
                return done
        torch = _torch()
        as_tensors, home = False, None  # results as tensors (on the first tensor feed's device) or numpy
        for v in feeds.values():
            if type(v) is not np.ndarray and isinstance(v, (torch.Tensor, DeviceArray)):
                as_tensors = True
                if home is None and isinstance(v, torch.Tensor):
                    home = v.device
        home = self.target if home is None else home
        graph, by_compile = self._modes
        with _RUN_LOCK, _torch_errors():
            if graph:
                inputs = [self._as_tensor(feeds[i.name]) for i in self._inputs]
                if self._graph is not None and self._graph.captured:
                    # a replay launches the kernels chosen at capture, under the policy: torch's switches are not read
                    result = self._graph(*inputs)
                else:
                    with self._scope(receipt=False):
                        result = self._graph_forward(inputs)
            else:
                # inputs made as inference tensors, as a hand-written inference loop makes them: torch.compile guards
                # on the kind of tensor (a second, slower variant was compiled: ~150 us per reduce-overhead call on an
                # H100); a captured graph's static inputs (above), updated in place later, stay ordinary tensors
                with self._scope(receipt=False), torch.inference_mode():  # one inference-mode block for the run
                    inputs = [self._as_tensor(feeds[i.name]) for i in self._inputs]
                    if by_compile and (as_tensors or outputs):  # results outlive the call: a new generation first
                        torch.compiler.cudagraph_mark_step_begin()  # (numpy results are copied out before the next)
                    result = self._forward(inputs)
            flat = dict(_flatten(result))
            picked = [flat[key] for key in self._keys_of(output_names)]
            if (graph or by_compile) and (as_tensors or outputs):  # the graph's output buffers are reused; a copy
                picked = [t.clone() for t in picked]                 # to the host is a new tensor already
        if not (graph or as_tensors or outputs) and self._replay is None:
            self._replay = self._host_runner()  # numpy in and out again: the lean path from the next run on
        values = [_deliver(t, home, as_tensors) for t in picked]
        return [_into(outputs[n], v) if outputs and n in outputs else v for n, v in zip(output_names, values)]

    def _host_runner(self, prepared: Sequence[str] | None = None
                     ) -> Callable[[dict[str, Any], Sequence[str]], list[Any] | None]:
        """The hot path of numpy feeds through the module (eager or compiled, no captured graph) into numpy results,
        built after the first such run: what :meth:`run_impl` does for them, with what it decides per run (feed
        kinds, modes, the function, the cast, the policy's scope) decided once. Each array becomes an inference
        tensor on the target (as ``with torch.inference_mode(): model(torch.from_numpy(x))`` makes it), is cast like
        the weights, and each floating output comes back as float32 numpy; the outputs are picked from the model's
        result by a :class:`_Picker` (an attribute read per output of a transformers ``ModelOutput``). Returns None
        (take the general path) for anything but numpy arrays.

        ``prepared``: the output names of a prepared run (:meth:`prepare_impl`), whose feeds are checked already and
        whose errors :meth:`run_error` maps: no feed-kind test and no error context around the call."""
        torch = _torch()
        names = [i.name for i in self._inputs]
        fn = self._compiled if self._compiled is not None else self.module
        dtype = getattr(torch, _TORCH_DTYPES[self.cast_dtype]) if self.cast_dtype else None
        target, policy, plan, kind = self.target, self.policy, self.plan.native, self.device_kind
        applied, inference_mode, from_numpy, keys_of = _applied_policy(), torch.inference_mode, torch.from_numpy, \
            self._keys_of
        bf16, ndarray, contiguous = torch.bfloat16, np.ndarray, np.ascontiguousarray
        pickers: dict[tuple[str, ...], _Picker] = {}

        def picker(output_names: Sequence[str]) -> _Picker:
            key = tuple(output_names)
            found = pickers.get(key)
            if found is None:
                found = pickers[key] = _Picker(keys_of(output_names))
            return found
        fixed_names, fixed = (prepared, picker(prepared)) if prepared is not None else (None, None)
        inline = _state().prepared(policy, plan, kind)
        # the scope of a plan that sets nothing (fp16/bf16 on CUDA): its two ContextVars set and reset in the call
        # itself, the same state as applied() sets, without a scope object per run; otherwise the policy's scope
        active, state, kvar, kpolicy = inline if inline is not None else (None, None, None, None)
        no_kernel_error = _state().no_kernel_error

        def call(feeds: dict[str, Any], output_names: Sequence[str] = fixed_names) -> list[Any]:  # type: ignore[assignment]
            """The run in one frame (each frame costs several times its warm price right after the engine's work);
            a prepared run calls it with the feeds alone (its output names: the default)."""
            # (a plan that sets nothing: the run lock entered again instead of a null context, an RLock re-entered
            # in C where contextlib.nullcontext costs two Python frames)
            with _RUN_LOCK, (applied(policy, plan, device_type=kind, receipt=False) if inline is None else _RUN_LOCK):
                token = active.set(state) if active is not None else None
                ktoken = kvar.set(kpolicy) if kvar is not None else None
                try:
                    with inference_mode():
                        inputs = [from_numpy(contiguous(feeds[n])).to(target) for n in names]
                        if dtype is not None:
                            inputs = [t.to(dtype) if t.is_floating_point() else t for t in inputs]
                        result = fn(*inputs)
                        pick = fixed if output_names is fixed_names else picker(output_names)
                        accessor = pick.by_type.get(type(result))
                        out = []
                        for t in accessor(result) if accessor is not None else pick(result):
                            if dtype is not None and t.dtype == dtype:
                                t = t.float()  # the model's I/O types stay those of fp32 (_float_outputs)
                            t = t.cpu()
                            out.append((t.float() if t.dtype == bf16 else t).numpy())
                        return out
                except RuntimeError as exc:
                    violation = no_kernel_error(exc, state) if token is not None else None
                    if violation is not None:
                        raise violation from exc
                    raise
                finally:
                    if ktoken is not None:
                        kvar.reset(ktoken)
                    if token is not None:
                        active.reset(token)

        if prepared is not None:
            return call

        def run(feeds: dict[str, Any], output_names: Sequence[str]) -> list[Any] | None:
            for n in names:
                if type(feeds[n]) is not ndarray:
                    return None
            with _torch_errors():
                return call(feeds, output_names)
        return run if inline is None else _named_fn(run, "run_inline")

    def _replayer(self, prepared: Sequence[str] | None = None
                  ) -> Callable[[dict[str, Any], Sequence[str]], list[Any] | None] | None:
        """The hot path of a captured graph fed numpy arrays: each array copied straight into the graph's static
        input (one host-to-device copy, no intermediate tensor), one replay, the static outputs read back to the host.
        Returns None (take the general path) for anything else: tensors, another shape.

        ``prepared``: the output names of a prepared run (:meth:`prepare_impl`), whose feeds are checked already and
        whose errors :meth:`run_error` maps: the call itself, without the feed test and the error context."""
        graph = self._graph
        if graph is None or not graph.captured:
            return None
        torch = _torch()
        pairs = list(zip([i.name for i in self._inputs], graph.static_args))
        if not all(isinstance(static, torch.Tensor) for _, static in pairs):
            return None
        flat, keys_of, from_numpy = dict(_flatten(graph.outputs)), self._keys_of, torch.from_numpy
        # the feeds into the static inputs (the packed ones in one asynchronous copy), the outputs read back with
        # one wait where they are small CUDA tensors (_torch_staging), else as a hand loop reads them
        fill = _staging.GraphFeeder(torch, [name for name, _ in pairs], graph.static_args, self._packed).fill
        readers: dict[tuple[str, ...], Callable[[], list[Any]]] = {}

        def reader_of(output_names: Sequence[str]) -> Callable[[], list[Any]]:
            key = tuple(output_names)
            found = readers.get(key)
            if found is None:
                tensors = [flat[k] for k in keys_of(output_names)]
                found = _staging.reader(torch, tensors) or (lambda: [_to_host(t, reused=True) for t in tensors])
                readers[key] = found
            return found
        fixed = reader_of(prepared) if prepared is not None else None
        # CapturedGraph.replay written out: the graph's own replay, or under a named range while torch's profiler
        # records (one frame less per call)
        named_replay, bare_replay, profiler = graph.replay, graph.graph.replay, torch.autograd.profiler

        def call(feeds: dict[str, Any], output_names: Sequence[str] = prepared) -> list[Any]:  # type: ignore[assignment]
            with _RUN_LOCK:  # (a prepared run calls it with the feeds alone: its output names are the default)
                fill(feeds, from_numpy)
                if getattr(profiler, "_is_profiler_enabled", True):
                    named_replay()
                else:
                    bare_replay()
                return fixed() if output_names is prepared else reader_of(output_names)()  # type: ignore[misc]

        if prepared is not None:
            return call

        def replay(feeds: dict[str, Any], output_names: Sequence[str]) -> list[Any] | None:
            for name, static in pairs:
                value = feeds[name]
                if type(value) is not np.ndarray or value.shape != static.shape:
                    return None
            with _torch_errors():
                return call(feeds, output_names)
        return replay

    def prepare_impl(self, feeds: dict[str, Any], output_names: Sequence[str],
                     outputs: dict[str, Any] | None) -> Callable[[dict[str, Any]], list[Any]] | None:
        """The hand-written loop's call for this configuration: a captured graph's static inputs refilled (numpy
        copied straight in, or the prepared device tensors copied) and one replay, outputs read back or copied into
        the caller's buffers; numpy through the module: the prepared numpy path (:meth:`_host_runner`)."""
        torch = _torch()
        names = list(output_names)
        host = all(type(v) is np.ndarray for v in feeds.values())
        graph = self._graph
        if graph is not None and graph.captured:
            statics = [(i.name, static) for i, static in zip(self._inputs, graph.static_args)]
            if not all(isinstance(t, torch.Tensor) and tuple(t.shape) == tuple(feeds[n].shape) for n, t in statics):
                return None
            if host and not outputs:
                return self._replayer(prepared=names)  # called with the feeds alone (no frame of its own here)
            flat = dict(_flatten(graph.outputs))
            outs = [flat[key] for key in self._keys_of(names)]
            # CapturedGraph.replay written out, as in _replayer
            named_replay, bare_replay, profiler = graph.replay, graph.graph.replay, torch.autograd.profiler
            tensors_out = outputs and all(isinstance(outputs.get(n), torch.Tensor) for n in names)
            if tensors_out and not any(type(v) is np.ndarray for v in feeds.values()):
                # the caller's tensors themselves (detached views: a refill in place is seen, on any device)
                pairs = [(static, v.detach() if isinstance(v, torch.Tensor) else self._as_tensor(v))
                         for static, v in ((static, feeds[n]) for n, static in statics)]
                copies = [(outputs[n], t) for n, t in zip(names, outs)]
                results = [outputs[n] for n in names]

                def device_replay(_given: dict[str, Any]) -> list[Any]:
                    with _RUN_LOCK:
                        for static, tensor in pairs:
                            static.copy_(tensor)
                        if getattr(profiler, "_is_profiler_enabled", True):
                            named_replay()
                        else:
                            bare_replay()
                        for buffer, tensor in copies:
                            buffer.copy_(tensor)
                    return results
                return device_replay
            return None
        if host and not outputs and self._replay is not None:  # the numpy path through the module was taken
            return self._host_runner(prepared=names)  # called with the feeds alone, as above
        return None

    def run_error(self, exc: Exception) -> XpuRuntimeError:
        """torch's own failure during a run (a prepared run's), as :class:`_torch_errors` maps it."""
        return _run_failure(exc)

    def _keys_of(self, output_names: Sequence[str]) -> list[Any]:
        """The model's output keys of ``output_names`` (built once per list of names)."""
        cache = self.__dict__.setdefault("_keys_cache", {})
        names = tuple(output_names)
        keys = cache.get(names)
        if keys is None:
            keys = cache[names] = [self._output_keys[self._output_list.index(n)] for n in names]
        return keys

    def _scope(self, receipt: bool = True) -> Any:
        return _applied_policy()(self.policy, self.plan.native, device_type=self.device_kind, receipt=receipt)

    # -- receipts ------------------------------------------------------------------------
    def report_impl(self, report: ExecutionReport) -> None:
        report.device = str(self.target)
        report.evidence.append("the exported graph" if self.model.exported else "the module tree")
        report.nodes.extend(self._structure_nodes())
        report.notes.append("kernels are read from torch.profiler by explain(); this receipt lists the model's ops")
        if self.weights_cast:
            report.requested["weights_cast"] = dict(self.weights_cast)
            report.evidence_of["weights"] = "observed"  # the tensors' dtypes after the cast, counted
        with _RUN_LOCK, self._scope() as applied:
            for v in applied.violations:  # switches torch refused while being set
                report.add(v)

    def _structure_nodes(self) -> list[NodeRecord]:
        found: list[tuple[str, str]] = []
        if self.model.exported:
            for node in self.model.model.graph.nodes:
                op = _GRAPH_OPS.get(getattr(node.target, "__name__", "").split(".")[0]) \
                    if node.op == "call_function" else None
                found += [(node.name, op)] if op else []
        else:
            found = [(name or type(m).__name__, _MODULE_OPS[type(m).__name__]) for name, m in
                     self.module.named_modules() if type(m).__name__ in _MODULE_OPS]
        kp = self.policy.kernels
        return [NodeRecord(name=name, op_type=op, provider=self.device_kind, requested=self.device.kind
                           if self.device.kind != "auto" else self.device_kind,
                           requested_kernel="/".join(kp.resolve(op)) if op in kp else None, evidence="unverified")
                for name, op in found]  # the model's ops; the kernels that run are read by a profiled run

    def profile_impl(self, report: ExecutionReport, feeds: dict[str, Any], output_names: Sequence[str]) -> None:
        from xpuruntime.pytorch import profile_run

        inputs = [self._as_tensor(feeds[i.name]) for i in self._inputs]
        report.device = str(self.target)
        for v in self.violations:
            report.add(v)
        ex = self.policy.execution
        precision = self.plan.autocast or (ex.precision if "precision" in ex.model_fields_set else None)
        with _RUN_LOCK, self._scope():
            run = (lambda: self._graph_forward(inputs)) if self._use_graph() else (lambda: self._forward(inputs))
            profile_run(report, run, self.policy, precision, self.target)
        if not any(n.precision and n.evidence == "observed" for n in report.nodes):
            self._cast_evidence(report)  # a CUDA-graph replay shows the profiler no per-op dtypes

    def _cast_evidence(self, report: ExecutionReport) -> None:
        """Precision observed from the cast this engine made: the module's floating parameters, read back now,
        hold the requested dtype, and the model's own outputs had it before the cast back to float32."""
        if not self.cast_dtype or self.module is None:
            return
        want = _TORCH_DTYPES[self.cast_dtype]
        params = [_dtype_name(p.dtype) for p in self.module.parameters() if p.is_floating_point()]
        cast = params.count(want)
        if not cast or want not in (self._raw_dtypes or ()):
            return
        report.evidence_of["precision"] = "observed"
        report.evidence.append(f"the module's parameters ({cast} of {len(params)} floating tensors {want}) and its "
                               f"outputs before the cast back to float32 ({', '.join(self._raw_dtypes or ())})")

    def close_impl(self) -> None:
        self.module = None
        self._compiled = None
        self._graph = None
        self._packed = None
        self._replay = None


# -- helpers -------------------------------------------------------------------------------
_TORCH_DTYPES = {"fp16": "float16", "bf16": "bfloat16"}


def _compile_option(policy: Policy, options: Mapping[str, Any]) -> Any:
    """engine_options["compile"] (the raw escape hatch) over execution.compile; None when off."""
    raw = options.get("compile")
    if raw:
        return raw
    mode = policy.execution.compile
    return None if mode == "off" else ({"mode": "default"} if mode == "default" else mode)


def _compile_mode(option: Any) -> str | None:
    if option is None or option is False:
        return None
    if isinstance(option, Mapping):
        return str(option.get("mode") or "default")
    return option if isinstance(option, str) else "default"


def _fusion_violations(policy: Policy) -> list[Violation]:
    fusions = policy.execution.fusions
    if fusions in ("off", "auto"):
        return []
    return [Violation("option", "fusions", fusions, "torch's own kernels",
                      "fusions names an ONNX Runtime transformers-optimizer model type; torch fuses with "
                      "execution.compile (Inductor) instead")]


def _cast_weights(module: Any, precision: str, *, norms_fp32: bool = True) -> dict[str, Any]:
    """Cast ``module``'s floating parameters and buffers to fp16/bf16 once; with ``norms_fp32``, norms of
    autocast's fp32 list stay float32 and run in float32 (input upcast, output cast back: two casts and two
    Python hooks per norm on every call). Returns what was done, for the receipt."""
    torch = _torch()
    dtype = getattr(torch, _TORCH_DTYPES[precision])
    before = sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])
    module.to(dtype)
    kept: list[str] = []
    for name, sub in module.named_modules() if norms_fp32 else ():
        if type(sub).__name__ in _FP32_MODULES:
            sub.float()
            sub.register_forward_pre_hook(_upcast_inputs)
            sub.register_forward_hook(lambda _m, _a, out, dtype=dtype: out.to(dtype) if
                                      isinstance(out, torch.Tensor) and out.is_floating_point() else out)
            kept.append(name or type(sub).__name__)
    tensors = [*module.parameters(), *module.buffers()]
    after = sum(t.numel() * t.element_size() for t in tensors)
    cast = sum(1 for t in tensors if t.dtype == dtype)
    return {"dtype": _TORCH_DTYPES[precision], "tensors_cast": cast, "bytes_before": before, "bytes_after": after,
            "kept_float32": kept, "norms": "float32" if norms_fp32 else "cast",
            "how": "cast once at load; inputs cast in, floating outputs cast back to float32"}


def _upcast_inputs(_module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
    torch = _torch()
    return tuple(a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)


def _float_outputs(result: Any, dtype: Any) -> Any:
    """Floating outputs of a cast model back to float32 (the model's I/O types stay those of fp32)."""
    torch = _torch()
    if isinstance(result, torch.Tensor):
        return result.float() if result.dtype == dtype else result
    if isinstance(result, Mapping):  # a plain dict: the run only flattens it (a transformers ModelOutput rebuilt
        return {k: _float_outputs(v, dtype) for k, v in result.items()}  # costs ~10 us of Python per call)
    if isinstance(result, (list, tuple)):
        items = [_float_outputs(v, dtype) for v in result]
        return type(result)(*items) if hasattr(result, "_fields") else type(result)(items)  # a namedtuple
    return result


def _compile_kwargs(option: Any, policy: Policy) -> dict[str, Any]:
    kwargs = dict(option) if isinstance(option, Mapping) else {"mode": option} if isinstance(option, str) else {}
    kwargs.setdefault("dynamic", False if policy.execution.static_shape else None)
    return kwargs


def _named_fn(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    fn.__name__ = fn.__qualname__ = name
    return fn


class _torch_errors:  # noqa: N801 - a context manager, named like contextlib's
    """torch's own failures during a run, as xpuruntime errors (PolicyViolationError passes through); a class,
    not a generator: it wraps every run."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> bool:
        if exc is None or not isinstance(exc, RuntimeError) or isinstance(exc, XpuRuntimeError):
            return False
        raise _run_failure(exc) from exc


def _run_failure(exc: Exception) -> XpuRuntimeError:
    """torch's own failure during a run as an xpuruntime error: out of memory as OutOfMemoryError."""
    if isinstance(exc, _torch().cuda.OutOfMemoryError):
        return OutOfMemoryError(f"the GPU ran out of memory during the run: {_first_line(exc)}",
                                hint="use smaller inputs, precision='bf16', or free other sessions")
    return XpuRuntimeError(f"torch failed during the run: {_first_line(exc)}",
                           hint="the session stays usable; check the inputs")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:500] if text else type(exc).__name__


def _dtype_name(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


def _info(name: str, tensor: Any) -> TensorInfo:
    return TensorInfo(name, tuple(int(d) for d in tensor.shape), _dtype_name(tensor.dtype))


def _info_from_meta(name: str, value: Any) -> TensorInfo:
    if value is None or not hasattr(value, "shape"):
        raise ModelLoadError(f"the exported program's input or output {name!r} is not a tensor",
                             expected="tensor inputs and outputs", received=type(value).__name__)
    dims = tuple(int(d) if str(d).lstrip("-").isdigit() else str(d) for d in value.shape)
    return TensorInfo(name, dims, _dtype_name(value.dtype))


class _Picker:
    """The tensors of output ``keys`` (``_output_keys``: str for a mapping's keys, int for the flattened leaves) from a
    model's result, by an accessor built for the result's type on first sight: attribute reads for a dataclass
    mapping whose fields the keys are (transformers' ``ModelOutput``, whose ``__getitem__`` rebuilds a dict), items
    of a plain dict, the tensor itself; :func:`_flatten` for anything else (nested sequences, other mappings)."""

    __slots__ = ("keys", "by_type")

    def __init__(self, keys: Sequence[Any]) -> None:
        self.keys = list(keys)
        self.by_type: dict[type, Callable[[Any], list[Any]]] = {}

    def __call__(self, result: Any) -> list[Any]:
        accessor = self.by_type.get(type(result))
        if accessor is None:
            accessor = self.by_type[type(result)] = self._accessor(result)
        return accessor(result)

    def _accessor(self, result: Any) -> Callable[[Any], list[Any]]:
        torch = _torch()
        keys = self.keys
        if isinstance(result, torch.Tensor) and keys == [0]:
            return lambda r: [r]
        if keys and all(type(k) is str for k in keys):
            if type(result) is dict and all(k in result for k in keys):  # (keys are str() of the model's keys)
                return lambda r: [r[k] for k in keys]
            fields = {f.name for f in dataclasses.fields(result)} if dataclasses.is_dataclass(result) else set()
            if isinstance(result, Mapping) and set(keys) <= fields:
                return lambda r: [getattr(r, k) for k in keys]

        def flattened(r: Any) -> list[Any]:
            flat = dict(_flatten(r))
            return [flat[k] for k in keys]
        return flattened


def _flatten(result: Any) -> list[tuple[Any, Any]]:
    """Model outputs as (key, tensor): a dict keeps its keys, a tensor or sequence is numbered."""
    torch = _torch()
    if isinstance(result, torch.Tensor):
        return [(0, result)]
    if isinstance(result, Mapping):
        return [(str(k), v) for k, v in result.items() if isinstance(v, torch.Tensor)]
    if isinstance(result, (list, tuple)):
        leaves: list[Any] = []
        for item in result:
            leaves += [v for _, v in _flatten(item)]
        return list(enumerate(leaves))
    raise XpuRuntimeError("the model returned no tensors", expected="a tensor, a tuple or list of tensors, or a dict",
                          received=type(result).__name__)


def _named(feeds: Any, inputs: Sequence[TensorInfo]) -> dict[str, Any]:
    names = [i.name for i in inputs]
    if isinstance(feeds, Mapping):
        unknown = [n for n in feeds if n not in names]
        missing = [n for n in names if n not in feeds]
        if unknown or missing:
            bad = unknown[0] if unknown else missing[0]
            raise InputError(f"{'unknown' if unknown else 'missing'} input {bad!r}", expected=", ".join(names),
                             received=", ".join(map(repr, feeds)), hint=did_you_mean(str(bad), names))
        return dict(feeds)
    values = list(feeds) if isinstance(feeds, (list, tuple)) else [feeds]
    if len(values) != len(names):
        raise InputError(f"{len(values)} inputs given by position", expected=", ".join(names),
                         received=f"{len(values)} values")
    return dict(zip(names, values))


def _checked_tensor(info: TensorInfo, value: Any) -> Any:
    torch = _torch()
    tensor = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(value))
    if _dtype_name(tensor.dtype) != info.dtype:
        raise InputError(f"input {info.name!r} has dtype {tensor.dtype}", expected=info.describe(),
                         received=f"{_dtype_name(tensor.dtype)}{list(tensor.shape)}",
                         hint=f"convert it with .to(torch.{info.dtype})")
    shape = tuple(tensor.shape)
    if info.shape is not None and (len(shape) != len(info.shape) or any(
            isinstance(w, int) and w >= 0 and g != w for g, w in zip(shape, info.shape))):
        raise InputError(f"input {info.name!r} has shape {list(shape)}", expected=info.describe(),
                         received=f"{_dtype_name(tensor.dtype)}{list(shape)}")
    return tensor


def _deliver(tensor: Any, home: Any, as_tensor: bool) -> Any:
    return tensor.to(home) if as_tensor else _to_host(tensor)


def _to_host(tensor: Any, *, reused: bool = False) -> Any:
    """A numpy array of ``tensor`` (bf16 as float32); ``reused``: the tensor is a buffer the next run overwrites,
    so a host tensor is copied too (a CUDA tensor's copy to the host is a new tensor already)."""
    host = tensor.detach().cpu()
    if reused and not tensor.is_cuda:  # .cpu() of a host tensor is that tensor
        host = host.clone()
    return (host.float() if host.dtype == _torch().bfloat16 else host).numpy()


def _into(buffer: Any, value: Any) -> Any:
    torch = _torch()
    if isinstance(buffer, torch.Tensor):
        buffer.copy_(value if isinstance(value, torch.Tensor) else torch.from_numpy(value))
    else:
        np.copyto(buffer, value.cpu().numpy() if isinstance(value, torch.Tensor) else value)
    return buffer
