"""Receipts from ``torch.profiler``: aten ops and GPU kernel names mapped back to vocabulary names.

Evidence, strongest first:

- the aten op the SDPA dispatcher picked (``aten::_scaled_dot_product_flash_attention``,
  ``..._efficient_attention``, ``..._cudnn_attention``, ``..._attention_math``; on the CPU
  ``..._flash_attention_for_cpu``): that *is* torch's backend choice;
- the GPU kernels those ops launched (``pytorch_flash::flash_fwd_kernel`` -> flash,
  ``fmha_cutlassF_*`` -> efficient, ``cudnn_generated_fort_native_sdpa*`` -> cudnn);
- for matmul, the GEMM kernel names. cuBLAS and cuBLASLt launch the same kernels (``sm90_xmma_gemm_*``,
  ``nvjet_*``, ``cutlass*``, ``Kernel2``), so the receipt says ``cublas/cublaslt`` and notes that the two are
  not distinguishable from kernel names, with the ``preferred_blas_library`` switch that was set;
- for conv, a cuDNN kernel proves cuDNN ran; whether it was benchmarked (exhaustive) or picked by
  heuristics is read from ``torch.backends.cudnn.benchmark`` during the run, and the note says so.

Kernels of a replayed CUDA graph belong to no aten op; they are classified by their names alone.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from xpuruntime.policies import Policy
from xpuruntime.pytorch import _flags
from xpuruntime.pytorch._kernels import CUSTOM_OPS
from xpuruntime.pytorch._translate import SPECIAL
from xpuruntime.receipts import ExecutionReport, NodeRecord, Violation

__all__ = ["Switches", "read_switches", "fill_report", "classify_kernel", "INDISTINGUISHABLE", "BLAS_NOTE"]

INDISTINGUISHABLE = "cublas/cublaslt"
BLAS_NOTE = "cublas/cublaslt: not distinguishable from kernel names"

_SDPA_IMPL = {
    "_scaled_dot_product_flash_attention": "flash", "_flash_attention_forward": "flash",
    "_flash_attention_backward": "flash", "_scaled_dot_product_flash_attention_backward": "flash",
    "_scaled_dot_product_flash_attention_for_cpu": "flash",
    "_scaled_dot_product_flash_attention_for_cpu_backward": "flash",
    "_scaled_dot_product_efficient_attention": "efficient", "_efficient_attention_forward": "efficient",
    "_efficient_attention_backward": "efficient", "_scaled_dot_product_efficient_attention_backward": "efficient",
    "_scaled_dot_product_cudnn_attention": "cudnn", "_scaled_dot_product_cudnn_attention_backward": "cudnn",
    "_cudnn_attention_forward": "cudnn", "_cudnn_attention_backward": "cudnn",
    "_scaled_dot_product_attention_math": "math", "_scaled_dot_product_attention_math_for_mps": "math",
}
_ROOTS = {
    "attention": {"scaled_dot_product_attention", *_SDPA_IMPL},
    "matmul": {"mm", "addmm", "bmm", "baddbmm", "matmul", "linear", "addmv", "mv", "_addmm_activation",
               "_scaled_mm", "addbmm"},
    "conv": {"conv1d", "conv2d", "conv3d", "convolution", "_convolution", "cudnn_convolution",
             "cudnn_convolution_transpose", "mkldnn_convolution", "convolution_backward", "conv_transpose1d",
             "conv_transpose2d", "conv_transpose3d", "_slow_conv2d_forward", "thnn_conv2d"},
    "layernorm": {"layer_norm", "native_layer_norm", "native_layer_norm_backward"},
}
_BY_NAME = {f"aten::{name}": op for op, names in _ROOTS.items() for name in names}
_COMPUTE = {"attention": set(_SDPA_IMPL),
            "matmul": {"mm", "addmm", "bmm", "baddbmm", "addmv", "mv", "_addmm_activation", "_scaled_mm", "addbmm"},
            "conv": {"cudnn_convolution", "mkldnn_convolution", "_slow_conv2d_forward", "convolution_backward",
                     "cudnn_convolution_transpose", "convolution"},
            "layernorm": {"native_layer_norm", "native_layer_norm_backward"}}
_DTYPES = {"float": "fp32", "c10::BFloat16": "bf16", "c10::Half": "fp16", "double": "fp64",
           "c10::Float8_e4m3fn": "fp8", "c10::Float8_e5m2": "fp8", "signed char": "int8"}
_PRECISION_OPS = ("attention", "matmul", "conv")


@dataclass(frozen=True)
class Switches:
    """torch's switches during the profiled run: they explain what the kernel names cannot."""

    blas: str
    cudnn_benchmark: bool
    fp32: dict[str, str]
    sdpa: dict[str, bool]

    def to_dict(self) -> dict[str, Any]:
        return {"preferred_blas_library": self.blas, "cudnn.benchmark": self.cudnn_benchmark,
                "fp32_precision": dict(self.fp32), "sdpa_enabled": dict(self.sdpa)}


def read_switches() -> Switches:
    snap = _flags.snapshot()
    blas = str(snap.get("blas", "default")).split(".")[-1].lower()
    return Switches(blas=blas, cudnn_benchmark=bool(snap.get("cudnn.benchmark")), fp32=_flags.fp32_state(),
                    sdpa={k.split(".")[1]: bool(v) for k, v in snap.items() if k.startswith("sdpa.") and
                          k != "sdpa.priority"})


# -- kernel names ----------------------------------------------------------------------------
def classify_kernel(name: str) -> tuple[str, str] | None:
    """``(op, kernel)`` for a GPU kernel name, or None when the name says nothing about the vocabulary."""
    low = name.lower()
    if "cudnn" in low and any(w in low for w in ("sdpa", "fmha", "flash", "attention", "mha")):
        return "attention", "cudnn"
    if "flash_fwd" in low or "flash_bwd" in low or "pytorch_flash" in low:
        return "attention", "flash"
    if "fmha_cutlass" in low or "memeffattention" in low or "attentionkernel" in low \
            or "attentionbackwardkernel" in low:
        return "attention", "efficient"
    if any(w in low for w in ("fprop", "dgrad", "wgrad", "winograd", "convolve")) or \
            "cudnn" in low and any(w in low for w in ("conv", "implicit")):
        return "conv", "cudnn"
    if low.startswith("triton_") and ("mm" in low or "tem_" in low):
        return "matmul", "triton"
    if any(w in low for w in ("gemm", "xmma", "nvjet", "cublas", "cutlass", "kernel2", "gemv")):
        return "matmul", INDISTINGUISHABLE
    if "layer_norm" in low or "layernorm" in low:
        return "layernorm", "native"
    return None


# -- one call of a vocabulary op ---------------------------------------------------------------
@dataclass
class _Call:
    op: str
    root: Any
    events: list[Any] = field(default_factory=list)  # the root and every descendant
    kernels: list[tuple[str, float]] = field(default_factory=list)
    dispatched: str | None = None  # the kernels dispatcher's choice, for xpuruntime.kernels ops

    @property
    def provider(self) -> str:
        return "cuda" if self.kernels else "cpu"


def _short(name: str) -> str:
    return name.removeprefix("aten::")


def _op_of(event: Any) -> str | None:
    return CUSTOM_OPS.get(event.name) or _BY_NAME.get(event.name)


def _descendants(event: Any) -> Iterable[Any]:
    for child in event.cpu_children:
        yield child
        yield from _descendants(child)


def _has_root_ancestor(event: Any) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if _op_of(parent) is not None:
            return True
        parent = parent.cpu_parent
    return False


def _calls(events: list[Any]) -> list[_Call]:
    calls = []
    for event in events:
        op = _op_of(event)
        if op is None or _is_device(event) or _has_root_ancestor(event):
            continue
        call = _Call(op, event, [event, *_descendants(event)])
        call.kernels = [(k.name, float(k.duration)) for e in call.events for k in getattr(e, "kernels", [])]
        calls.append(call)
    return calls


def _is_device(event: Any) -> bool:
    return str(getattr(event, "device_type", "")).endswith("CPU") is False


def _compute_event(call: _Call) -> Any:
    names = _COMPUTE.get(call.op, set())
    inner = [e for e in call.events if _short(e.name) in names]
    return inner[-1] if inner else call.root


def _dtypes(event: Any, dtype_map: dict[int, list[str]]) -> list[str]:
    found = getattr(event, "input_dtypes", None)
    return list(found) if found else dtype_map.get(getattr(event, "id", -1), [])


def _precision(call: _Call, dtype_map: dict[int, list[str]], switches: Switches) -> str | None:
    dtypes = [_DTYPES.get(d) for d in _dtypes(_compute_event(call), dtype_map)]
    precision = next((d for d in dtypes if d), None)
    if precision == "fp32" and call.provider == "cuda" and call.op in ("matmul", "conv"):
        return switches.fp32["matmul" if call.op == "matmul" else "conv"].replace("ieee", "fp32")
    return precision


def _dims(call: _Call) -> dict[str, int]:
    event = _compute_event(call)
    shapes = [list(s) for s in (event.input_shapes or [])]
    try:
        if call.op == "attention" and len(shapes) >= 2 and len(shapes[0]) == 4:
            (b, h, sq, d), sk = shapes[0], shapes[1][-2]
            return {"batch": b, "heads": h, "seq_q": sq, "seq_k": sk, "head_dim": d}
        if call.op == "matmul":
            return _matmul_dims(_short(event.name), shapes)
    except (IndexError, TypeError, ValueError):
        pass
    return {}


def _matmul_dims(name: str, shapes: list[list[int]]) -> dict[str, int]:
    a, b = (shapes[1], shapes[2]) if name in ("addmm", "baddbmm", "_addmm_activation", "addbmm") else shapes[:2]
    if len(a) == 3 and len(b) == 3:
        return {"batch": a[0], "m": a[1], "k": a[2], "n": b[2]}
    if len(a) >= 2 and len(b) == 2:
        return {"m": math.prod(a[:-1]), "k": a[-1], "n": b[-1]}
    return {}


def _actual_kernel(call: _Call, switches: Switches) -> tuple[str | None, str]:
    """The vocabulary kernel that ran and the evidence name (a kernel name, else the aten op)."""
    if call.root.name in CUSTOM_OPS:
        return call.dispatched, call.root.name
    named = [(n, classify_kernel(n)) for n, _ in call.kernels]
    same_op = [(n, c[1]) for n, c in named if c and c[0] == call.op]
    impl = next((_SDPA_IMPL[_short(e.name)] for e in call.events if _short(e.name) in _SDPA_IMPL), None)
    if call.op == "attention":
        kernel = impl or (same_op[0][1] if same_op else None)
        evidence = next((n for n, k in same_op if k == kernel), None)
        return kernel, evidence or next((e.name for e in call.events if _short(e.name) in _SDPA_IMPL), call.root.name)
    if call.provider == "cpu":
        kernel = "native" if call.op == "layernorm" else "default"
        return kernel, _compute_event(call).name
    if call.op == "conv" and (same_op or any("cudnn" in e.name for e in call.events)):
        kernel = "cudnn_exhaustive" if switches.cudnn_benchmark else "cudnn_heuristic"
        return kernel, same_op[0][0] if same_op else call.root.name
    if call.op == "layernorm":
        return "native", call.kernels[0][0]
    if same_op:
        return same_op[0][1], same_op[0][0]
    return None, call.kernels[0][0]


# -- the report ------------------------------------------------------------------------------
@dataclass
class _Row:
    node: NodeRecord
    requested: tuple[str, ...] | None


def fill_report(report: ExecutionReport, prof: Any, policy: Policy, precision: str | None,
                switches: Switches, dispatched: Iterable[Any] = ()) -> None:
    """Add one NodeRecord per (op, evidence, kernel, precision) to ``report`` and judge each against ``policy``.

    ``dispatched`` are xpuruntime.kernels' dispatch records made during the run: the evidence for its ops.
    """
    events = list(prof.events())
    dtype_map = _dtype_map(prof)
    rows: dict[tuple[Any, ...], _Row] = {}
    attributed: Counter[tuple[str, float]] = Counter()
    calls = _calls(events)
    if _attach_dispatch(calls, list(dispatched)):
        report.evidence.append("xpuruntime.kernels dispatch log")
    for call in calls:
        attributed.update(call.kernels)
        kernel, name = _actual_kernel(call, switches)
        _add(rows, call.op, kernel, name, call.provider, _precision(call, dtype_map, switches),
             _dims(call), _time(call), policy)
        report.events.append(_event(call.root, _trim(name), "cpu_op", "cpu"))
    for event in events:
        _add_graph_kernel(rows, event, attributed, policy)
    report.events.extend(_event(e, None, "kernel", "cuda") for e in events if _is_device(e))
    report.nodes.extend(row.node for row in rows.values())
    report.evidence.append("torch.profiler: aten op names and GPU kernel names")
    report.profiled = True
    report.requested.setdefault("switches_during_run", switches.to_dict())
    _judge(report, rows.values(), precision, switches)


def _event(event: Any, node: str | None, cat: str, track: str) -> dict[str, Any]:
    """A profiler event as a receipt event (for traces): the op's or kernel's own start and duration."""
    span = event.time_range
    return {"name": _trim(event.name), "ts": float(span.start), "dur": float(span.elapsed_us()), "cat": cat,
            "track": track, "node": node, "args": {}}


def _phase(name: str) -> str:
    return "backward" if name.endswith("_backward") or name.endswith("_with_kernel") else "forward"


def _attach_dispatch(calls: list[_Call], records: list[Any]) -> bool:
    """The i-th call of a kernels-registry op (per op and phase) ran the i-th decision the dispatcher logged."""
    custom = sorted((c for c in calls if c.root.name in CUSTOM_OPS), key=lambda c: c.root.time_range.start)
    queues: dict[tuple[str, str], list[str]] = {}
    for record in records:
        queues.setdefault((record.op, record.phase), []).append(record.kernel)
    for call in custom:
        queue = queues.get((call.op, _phase(call.root.name)), [])
        call.dispatched = queue.pop(0) if queue else None
    return bool(custom and records)


def _dtype_map(prof: Any) -> dict[int, list[str]]:
    """Correlation id -> input dtypes, from the raw kineto events (for torch versions whose
    FunctionEvent has no ``input_dtypes``)."""
    try:
        raw = prof.profiler.kineto_results.events()
        return {ev.correlation_id(): list(ev.dtypes()) for ev in raw if ev.dtypes()}
    except Exception:  # an older or newer profiler layout: precision then stays unknown
        return {}


def _time(call: _Call) -> float:
    if call.kernels:
        return sum(d for _, d in call.kernels)
    return float(getattr(call.root, "cpu_time_total", 0.0))


def _add(rows: dict[tuple[Any, ...], _Row], op: str, kernel: str | None, name: str, provider: str,
         precision: str | None, dims: dict[str, int], time_us: float, policy: Policy) -> None:
    requested = _requested(policy, op, precision, dims)
    key = (op, name, kernel, provider, precision, requested)
    row = rows.get(key)
    if row is None:
        node = NodeRecord(name=_trim(name), op_type=op, provider=provider, kernel=kernel,
                          requested_kernel="/".join(requested) if requested else None, precision=precision,
                          time_us=0.0)
        row = rows[key] = _Row(node, requested)
    row.node.calls += 1
    row.node.time_us = (row.node.time_us or 0.0) + time_us


def _add_graph_kernel(rows: dict[tuple[Any, ...], _Row], event: Any, attributed: Counter[tuple[str, float]],
                      policy: Policy) -> None:
    if not _is_device(event):
        return
    key = (event.name, float(event.time_range.elapsed_us()))
    if attributed[key] > 0:
        attributed[key] -= 1
        return
    found = classify_kernel(event.name)
    if found:
        precision = "bf16" if "bf16" in event.name.lower() else "fp16" if "f16" in event.name.lower() else None
        _add(rows, found[0], found[1], event.name, "cuda", precision, {}, key[1], policy)


def _requested(policy: Policy, op: str, precision: str | None, dims: dict[str, int]) -> tuple[str, ...] | None:
    if op not in policy.kernels:
        return None
    dtype = {"tf32": "fp32"}.get(precision or "", precision)
    try:
        return policy.kernels.resolve(op, dtype if dtype in ("fp32", "fp16", "bf16", "fp8", "int8", "fp64") else None,
                                      **dims)
    except Exception:  # a rule over a dim the profiler could not read
        return policy.kernels.resolve(op)


def _trim(name: str, limit: int = 96) -> str:
    return name if len(name) <= limit else name[: limit - 3] + "..."


def _judge(report: ExecutionReport, rows: Iterable[_Row], precision: str | None, switches: Switches) -> None:
    blas_rows = False
    for row in rows:
        node, wanted = row.node, row.requested
        blas_rows |= node.kernel == INDISTINGUISHABLE
        if wanted and node.kernel and not set(wanted) & set(SPECIAL) and not _satisfies(node.kernel, wanted):
            report.add(Violation("kernel", node.name, "/".join(wanted), node.kernel, _reason(node, wanted)))
        if precision and node.op_type in _PRECISION_OPS and node.precision and not _same_precision(precision,
                                                                                                   node.precision):
            report.add(Violation("precision", node.name, precision, node.precision,
                                 f"{node.op_type} ran in {node.precision} (check autocast and the inputs' dtype)"))
    if blas_rows:
        report.notes.append(f"{BLAS_NOTE}; torch.backends.cuda.preferred_blas_library was {switches.blas!r} "
                            "during the run")
    if any(n.op_type == "conv" and n.kernel and n.kernel.startswith("cudnn_") for n in report.nodes):
        report.notes.append("conv: cuDNN ran; exhaustive vs heuristic is read from torch.backends.cudnn.benchmark "
                            f"({switches.cudnn_benchmark}) during the run, not from kernel names")


def _satisfies(kernel: str, wanted: tuple[str, ...]) -> bool:
    if kernel == INDISTINGUISHABLE:
        return bool({"cublas", "cublaslt"} & set(wanted))
    return kernel in wanted


def _same_precision(requested: str, ran: str) -> bool:
    if requested == "tf32":
        return ran in ("fp32", "tf32")
    return ran == requested if requested in ("fp16", "bf16", "fp32") else True


def _reason(node: NodeRecord, wanted: tuple[str, ...]) -> str:
    if node.provider == "cpu" and all(k not in ("math", "flash", "native", "default") for k in wanted):
        return f"{'/'.join(wanted)} is a CUDA kernel; on the CPU torch ran {node.kernel}"
    if node.op_type == "attention":
        return ("torch's SDPA fell back: the requested backend does not support these inputs (dtype, head_dim, mask, "
                "dropout, device capability)")
    return f"torch ran {node.kernel} for this {node.op_type}"
