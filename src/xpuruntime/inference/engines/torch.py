"""PyTorch as an inference engine: an ``nn.Module`` or a ``torch.export`` ExportedProgram under a policy.

Name ``torch`` (alias ``pytorch``), devices ``cpu`` and ``cuda[:N]``. The policy is translated by the same
table as training (:mod:`xpuruntime.pytorch._translate`) and applied around each run, then restored;
``precision`` fp16/bf16 runs under ``torch.autocast``. Receipts: ``session.report`` lists the model's
ops (from the exported graph, or the module tree) with the kernels asked for; ``explain()`` reads what
ran from ``torch.profiler``.

``engine_options``:

- ``example_inputs``: a tuple of tensors or arrays; required for an ``nn.Module`` (input names come from
  ``forward``'s signature, output names from one example run), optional for an ExportedProgram;
- ``compile``: ``True``, a ``torch.compile`` mode string or a dict of its keyword arguments. Off by
  default: compilation costs seconds to minutes at the first run, so it is asked for, never implied by
  ``optimize_level`` (which torch has no cheap equivalent of);
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

import contextlib
import copy
import inspect
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xpuruntime.errors import (
    InputError,
    ModelLoadError,
    OutOfMemoryError,
    XpuRuntimeError,
    did_you_mean,
)
from xpuruntime.inference.engine import Engine, register_engine
from xpuruntime.inference.feeds import DeviceArray, TensorInfo
from xpuruntime.inference.plan import Plan
from xpuruntime.policies import Policy
from xpuruntime.receipts import ExecutionReport, NodeRecord, Violation
from xpuruntime.runtime.devices import DeviceSpec

__all__ = ["TorchEngine", "TorchModel"]

_OPTION_KEYS = ("example_inputs", "compile", "copy", "input_names", "output_names")
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


def _torch() -> Any:
    import torch

    return torch


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
        compile_option = options.get("compile")
        if compile_option:
            kwargs = ", ".join(f"{k}={v!r}" for k, v in _compile_kwargs(compile_option, policy).items())
            notes.append(f"torch.compile({kwargs}): compiled at the first run")
        if policy.execution.cuda_graphs and self.target.type != "cuda":
            violations.append(Violation("option", "cuda_graphs", "CUDA graph capture", "eager execution",
                                        f"CUDA graphs need a CUDA device; the model runs on {self.target}"))
        use_graph = policy.execution.cuda_graphs and self.target.type == "cuda"
        requested = {"providers": [self.target.type], "device": str(self.target), **native.requested,
                     "compile": bool(compile_option), "cuda_graphs": use_graph,
                     "precision": policy.execution.precision}
        return Plan(native, requested=requested, targets=(str(self.target),), violations=violations, notes=notes)

    def load_impl(self) -> None:
        self.violations: list[Violation] = []  # found while running (a graph capture that fell back)
        self.module = self._prepare(self.model)
        self._graph: Any = None
        self._compiled: Callable[..., Any] | None = None
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
        option = self.options.get("compile")
        if not option:
            return None
        return _torch().compile(self.module, **_compile_kwargs(option, self.policy))

    def _forward(self, inputs: Sequence[Any]) -> Any:
        fn = self._compiled if self._compiled is not None else self.module
        with _torch().inference_mode():
            return fn(*inputs)

    def _use_graph(self) -> bool:
        return self.policy.execution.cuda_graphs and self.device_kind == "cuda"

    def _graph_forward(self, inputs: Sequence[Any]) -> Any:
        from xpuruntime.pytorch import capture_graph

        if self._graph is None:
            static = tuple(t.clone() for t in inputs)
            self._graph = capture_graph(lambda *xs: self._forward(xs), *static,
                                        fallback=self.policy.execution.fallback)
            self.violations.extend(v for v in self._graph.violations if v not in self.violations)
        return self._graph(*inputs)

    # -- run -----------------------------------------------------------------------------
    def check_feeds(self, feeds: Any, checker: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
        """torch tensors are checked and kept as tensors; anything else takes the shared numpy path."""
        torch = _torch()
        values = feeds.values() if isinstance(feeds, Mapping) else feeds if isinstance(feeds, (list, tuple)) \
            else [feeds]
        if not any(isinstance(v, torch.Tensor) for v in values):
            return checker(feeds)
        named = _named(feeds, self._inputs)
        return {info.name: _checked_tensor(info, named[info.name]) for info in self._inputs}

    def run_impl(self, feeds: dict[str, Any], output_names: Sequence[str], outputs: dict[str, Any] | None) -> list[Any]:
        torch = _torch()
        as_tensors = any(isinstance(v, (torch.Tensor, DeviceArray)) for v in feeds.values())
        home = next((v.device for v in feeds.values() if isinstance(v, torch.Tensor)), self.target)
        inputs = [self._as_tensor(feeds[i.name]) for i in self._inputs]
        with _RUN_LOCK, _torch_errors(), self._scope():
            result = self._graph_forward(inputs) if self._use_graph() else self._forward(inputs)
            flat = dict(_flatten(result))
            picked = [flat[self._output_keys[self._output_list.index(n)]] for n in output_names]
            if self._use_graph():
                picked = [t.clone() for t in picked]
        values = [_deliver(t, home, as_tensors) for t in picked]
        return [_into(outputs[n], v) if outputs and n in outputs else v for n, v in zip(output_names, values)]

    def _scope(self) -> Any:
        from xpuruntime.pytorch import applied_policy

        return applied_policy(self.policy, self.plan.native, device_type=self.device_kind)

    # -- receipts ------------------------------------------------------------------------
    def report_impl(self, report: ExecutionReport) -> None:
        report.device = str(self.target)
        report.evidence.append("the exported graph" if self.model.exported else "the module tree")
        report.nodes.extend(self._structure_nodes())
        report.notes.append("kernels are read from torch.profiler by explain(); this receipt lists the model's ops")
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
                           requested_kernel="/".join(kp.resolve(op)) if op in kp else None) for name, op in found]

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

    def close_impl(self) -> None:
        self.module = None
        self._compiled = None
        self._graph = None


# -- helpers -------------------------------------------------------------------------------
def _compile_kwargs(option: Any, policy: Policy) -> dict[str, Any]:
    kwargs = dict(option) if isinstance(option, Mapping) else {"mode": option} if isinstance(option, str) else {}
    kwargs.setdefault("dynamic", False if policy.execution.static_shape else None)
    return kwargs


@contextlib.contextmanager
def _torch_errors() -> Iterator[None]:
    """torch's own failures during a run, as xpuruntime errors (PolicyViolationError passes through)."""
    torch = _torch()
    try:
        yield
    except torch.cuda.OutOfMemoryError as exc:
        raise OutOfMemoryError(f"the GPU ran out of memory during the run: {_first_line(exc)}",
                               hint="use smaller inputs, precision='bf16', or free other sessions") from exc
    except RuntimeError as exc:
        raise XpuRuntimeError(f"torch failed during the run: {_first_line(exc)}",
                              hint="the session stays usable; check the inputs") from exc


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
    torch = _torch()
    if as_tensor:
        return tensor.to(home)
    host = tensor.detach().cpu()
    return (host.float() if host.dtype == torch.bfloat16 else host).numpy()


def _into(buffer: Any, value: Any) -> Any:
    torch = _torch()
    if isinstance(buffer, torch.Tensor):
        buffer.copy_(value if isinstance(value, torch.Tensor) else torch.from_numpy(value))
    else:
        np.copyto(buffer, value.cpu().numpy() if isinstance(value, torch.Tensor) else value)
    return buffer
