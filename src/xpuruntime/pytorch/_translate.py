"""The one table from an xpuruntime policy to PyTorch's own switches.

================================================  ==========================================================
policy                                            PyTorch
================================================  ==========================================================
attention flash / efficient / cudnn / math        the SDPA backend flags ``torch.nn.attention.sdpa_kernel``
(a list keeps its order)                          sets, and its priority order (``set_priority=True``)
attention auto                                    every SDPA backend on, in torch's own order
matmul cublas / cublaslt / auto                   ``torch.backends.cuda.preferred_blas_library`` cublas /
                                                  cublaslt / default
conv cudnn_exhaustive / cudnn_heuristic / auto    ``torch.backends.cudnn.benchmark`` True (``benchmark_limit``
                                                  0: every algorithm) / False / True
layernorm native / triton; matmul triton, nvmath  torch's kernel / the kernel registered in
                                                  ``xpuruntime.kernels`` (routed by ``_kernels.routing``)
per-shape rules (matmul, layernorm)               routed to ``xpuruntime.kernels`` when it serves every
                                                  kernel they name: it applies them (and their params) per
                                                  call; otherwise noted as not applied
precision fp32 / tf32                             cuBLAS and cuDNN fp32 math IEEE / TF32: the legacy flags
                                                  (``set_float32_matmul_precision``, ``cudnn.allow_tf32``)
                                                  and, torch >= 2.9, ``fp32_precision``, kept in step
precision fp16 / bf16                             ``torch.autocast`` with that dtype (weight-cast cache off)
deterministic                                     ``use_deterministic_algorithms(True)``, cuDNN deterministic,
                                                  ``cudnn.benchmark`` False (unless conv is set),
                                                  ``CUBLAS_WORKSPACE_CONFIG=:4096:8``
num_threads                                       ``torch.set_num_threads``
================================================  ==========================================================

``default`` (or an op left out) leaves torch's switch as it is. What torch cannot do as asked becomes a
:class:`~xpuruntime.receipts.Violation` here, before anything is set; a switch torch refuses
while it is being set (``cublaslt`` on a build without cuBLASLt) becomes one as well.

Under ``fallback="error"`` only the listed SDPA backends are switched on, so torch raises instead of
falling back. Under ``warn`` and ``allow`` the switches depend on the device (``translate(device=)``, by
default CUDA when torch sees one): on CUDA the other backends stay on *behind* the listed ones (priority
order), so torch falls back to the next fused kernel; torch's CPU dispatcher ignores the priority order
(it always tries flash, then math), so on the CPU only the listed backends plus math, as the last resort,
are switched on: math runs every input, and flash runs only when it was listed first. On the CPU a list is
cut after math, which is never passed over. :mod:`xpuruntime.pytorch._sdpa_check` checks each SDPA call
inside a ``policy()`` block: it warns under ``warn`` when the dispatcher runs another backend than the first
listed one, and narrows the switches for a CPU call on a CUDA machine. A choice the device cannot apply
(efficient/cudnn attention, cuBLAS/cuBLASLt, cuDNN conv modes without a CUDA device) is a note here, and a
violation in the profiled receipt of the kernel that ran instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from xpuruntime.errors import PolicyError
from xpuruntime.policies import Policy, vocabulary
from xpuruntime.pytorch import _flags, _kernels
from xpuruntime.receipts import Violation

__all__ = ["TorchPlan", "translate", "plan_device", "sdpa_order", "ATTENTION", "MATMUL", "CONV", "SPECIAL",
           "CPU_SDPA"]

SPECIAL = (vocabulary.AUTO, vocabulary.DEFAULT)
ATTENTION = {"flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION", "cudnn": "CUDNN_ATTENTION",
             "math": "MATH"}
MATMUL = {"cublas": "cublas", "cublaslt": "cublaslt", "auto": "default"}
CONV: dict[str, dict[str, Any]] = {
    "cudnn_exhaustive": {"cudnn.benchmark": True, "cudnn.benchmark_limit": 0},
    "cudnn_heuristic": {"cudnn.benchmark": False},
    "auto": {"cudnn.benchmark": True},
}
_CUDNN_DEFAULT = ("torch has no 'default algorithm' mode for cuDNN convolutions: without benchmark it asks cuDNN's "
                  "heuristics, which is cudnn_heuristic")


@dataclass
class TorchPlan:
    """The switches to set for one policy, what torch cannot do, and notes for the receipt."""

    settings: dict[str, Any] = field(default_factory=dict)  # _flags.SETTINGS name -> value, in order
    autocast: str | None = None  # fp16 / bf16: entered by policy() and the engine, not a global switch
    custom: dict[str, str] = field(default_factory=dict)  # op -> kernel served by xpuruntime.kernels
    device: str = "cpu"  # the device torch's switches are chosen for (cuda when torch sees one)
    attention: tuple[str, ...] = ()  # the SDPA backends asked for, in order (the per-call check reads it)
    fallback: str = "warn"
    attention_open: bool = False  # a trailing auto/default: torch's own choice after the listed backends
    violations: list[Violation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def refuse(self, kind: str, subject: str, requested: str, actual: str, reason: str) -> None:
        self.violations.append(Violation(kind, subject, requested, actual, reason))

    @property
    def requested(self) -> dict[str, Any]:
        """The native settings as a user would write them (``report.requested``: what was asked of torch)."""
        out: dict[str, Any] = {}
        if any(k.startswith("sdpa.") for k in self.settings):
            out["torch.nn.attention.sdpa_kernel"] = self.sdpa_backends()
        names = {"blas": "torch.backends.cuda.preferred_blas_library",
                 "fp32.matmul": "torch.backends.cuda.matmul.fp32_precision",
                 "fp32.cudnn": "torch.backends.cudnn.conv.fp32_precision",
                 "cudnn.benchmark": "torch.backends.cudnn.benchmark",
                 "cudnn.benchmark_limit": "torch.backends.cudnn.benchmark_limit",
                 "cudnn.deterministic": "torch.backends.cudnn.deterministic",
                 "deterministic": "torch.use_deterministic_algorithms", "num_threads": "torch.set_num_threads",
                 f"env.{_flags.CUBLAS_ENV}": _flags.CUBLAS_ENV}
        out.update({names[k]: _plain(v) for k, v in self.settings.items() if k in names})
        if self.autocast:
            out["torch.autocast"] = self.autocast
        out.update({f"xpuruntime.kernels {op}": k for op, k in self.custom.items()})
        return out

    def sdpa_backends(self) -> list[str]:
        """SDPBackend names switched on, in priority order when torch keeps one."""
        if "sdpa.priority" in self.settings:
            names = {int(getattr(torch.nn.attention.SDPBackend, v)): v for v in ATTENTION.values()}
            return [names[b] for b in self.settings["sdpa.priority"]]
        return [v for n, v in ATTENTION.items() if self.settings.get(f"sdpa.{n}")]


def _plain(value: Any) -> Any:
    return value[0] if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], bool) else value


def plan_device(device: Any = None) -> str:
    """The device type torch's switches are chosen for: ``device``'s type, else ``cuda`` when torch sees one.

    >>> plan_device("cuda:1"), plan_device(torch.device("cpu"))
    ('cuda', 'cpu')
    """
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError, ValueError):
        kind = None
    if kind not in ("cpu", "cuda"):
        raise PolicyError("the device a torch policy is applied for must be the CPU or a CUDA device",
                          field="device", expected="'cpu', 'cuda', 'cuda:N', a torch.device or None (CUDA when "
                          "torch sees one)", received=repr(device),
                          hint="pass the device your tensors are on, e.g. device=x.device")
    return kind


def translate(policy: Policy, *, execution: bool = True, custom_kernels: Any = None,
              device: Any = None) -> TorchPlan:
    """The plan for ``policy``; ``execution=False`` translates the kernel half only.

    >>> translate(Policy(kernels={"attention": "math"}), device="cpu").sdpa_backends()  # doctest: +SKIP
    ['MATH']

    ``custom_kernels(op, kernel)`` says whether a kernel torch has no switch for is served elsewhere
    (default: registered in xpuruntime.kernels). ``device`` (``cuda``, ``cpu``, a torch.device) is the device
    the switches are chosen for; by default ``cuda`` when torch sees a CUDA device, else ``cpu``
    (:func:`plan_device`).
    """
    fallback = policy.execution.fallback
    plan = TorchPlan(device=plan_device(device), fallback=fallback)
    has = custom_kernels or _kernels.available
    for op in policy.kernels.ops:
        pref = policy.kernels.preference(op)
        if pref is None:
            continue
        _kernel(op, pref.prefer, fallback, plan, has)
        if pref.rules and op not in plan.custom and _rules_served(op, pref, has):
            plan.custom[op] = "per-shape rules"  # xpuruntime.kernels resolves rules (and params) per call
        elif pref.rules and op not in plan.custom:
            plan.notes.append(f"{op}: per-shape rules are judged in profiled receipts but not applied: torch's "
                              "switches are process-wide, one kernel choice per op")
    if execution:
        _execution(policy, plan)
    return plan


def _rules_served(op: str, pref: Any, has: Any) -> bool:
    """Whether xpuruntime.kernels serves every kernel the op's rules and ``prefer`` name (then it applies them)."""
    named = {k for k in (*pref.prefer, *(k for r in pref.rules for k in r.use)) if k not in SPECIAL}
    return op in ("layernorm", "matmul") and all(has(op, k) for k in named)


def _kernel(op: str, prefer: tuple[str, ...], fallback: str, plan: TorchPlan, has: Any) -> None:
    handler = {"attention": _attention, "matmul": _matmul, "conv": _conv, "layernorm": _layernorm}.get(op)
    if handler is None:
        named = [k for k in prefer if k not in SPECIAL]
        if named and not has(op, named[0]):
            plan.refuse("kernel", op, "/".join(prefer), "torch default", f"torch has no switch for the {op} kernel")
        elif named:
            plan.custom[op] = named[0]
        return
    handler(prefer, fallback, plan, has)


def _usable(op: str, prefer: tuple[str, ...], known: Any, plan: TorchPlan, has: Any) -> list[str]:
    """The listed kernels torch (or xpuruntime.kernels) can run, in order; the others are noted or refused."""
    named = [k for k in prefer if k not in SPECIAL]
    usable = [k for k in named if k in known or has(op, k)]
    skipped = [k for k in named if k not in usable]
    if skipped and usable:
        why = "; ".join(f"{k}: {r}" for k in skipped if (r := _kernels.unavailable(op, k)))
        plan.notes.append(f"{op}: {', '.join(skipped)} cannot be selected in torch{f' ({why})' if why else ''}; "
                          f"the list goes on with {usable[0]}")
    elif skipped and prefer[-1] not in SPECIAL:
        plan.refuse("kernel", op, "/".join(prefer), "torch default", _why_not(op, skipped[0]))
    return usable


def _why_not(op: str, kernel: str) -> str:
    if op == "matmul":
        return (f"torch's matmul calls cuBLAS or cuBLASLt; {kernel!r} is not among them and no {kernel!r} matmul is "
                "registered in xpuruntime.kernels")
    if op == "attention":
        return f"torch's SDPA has no {kernel!r} backend and no {kernel!r} attention is registered in xpuruntime.kernels"
    if op == "layernorm":
        reason = _kernels.unavailable(op, kernel)
        if reason:
            return (f"the {kernel!r} LayerNorm of xpuruntime.kernels cannot run here: {reason} (torch runs its "
                    "native kernel)")
        return f"no {kernel!r} LayerNorm is registered in xpuruntime.kernels (torch runs its native kernel)"
    return f"torch has no {kernel!r} {op} kernel"


def _attention(prefer: tuple[str, ...], fallback: str, plan: TorchPlan, has: Any) -> None:
    usable = _usable("attention", prefer, ATTENTION, plan, has)
    if usable and usable[0] not in ATTENTION:
        plan.custom["attention"] = usable[0]
        return
    wanted = [k for k in usable if k in ATTENTION]
    if not wanted:
        if prefer[0] == vocabulary.AUTO:
            plan.settings.update({f"sdpa.{n}": True for n in ATTENTION})
        return
    plan.attention, plan.attention_open = tuple(wanted), prefer[-1] in SPECIAL
    enabled = sdpa_order(wanted, plan.device, fallback, plan.attention_open)
    plan.settings.update({f"sdpa.{n}": n in enabled for n in ATTENTION})
    if _flags.has_sdpa_priority():
        plan.settings["sdpa.priority"] = [int(getattr(torch.nn.attention.SDPBackend, ATTENTION[n])) for n in enabled]
    elif len(wanted) > 1 and plan.device != "cpu":
        plan.notes.append("attention: this torch cannot order SDPA backends (no sdpa_kernel set_priority); it tries "
                          "the enabled ones in its own order")
    if plan.device == "cpu":
        _cpu_attention_notes(wanted, plan)


def sdpa_order(wanted: list[str], device: str, fallback: str, open_end: bool = False) -> list[str]:
    """The SDPA backends to switch on for calls on ``device``, in priority order.

    >>> sdpa_order(["math"], "cpu", "warn"), sdpa_order(["flash"], "cpu", "warn")
    (['math'], ['flash', 'math'])
    """
    if device == "cpu":  # torch's CPU dispatcher tries flash, then math, whatever the priority order
        if "math" in wanted:  # math runs every input: a later entry is never reached, and flash must not jump it
            return wanted[: wanted.index("math") + 1]
        if open_end:
            return wanted + [n for n in ATTENTION if n not in wanted]
        return wanted + ([] if fallback == "error" else ["math"])
    if (fallback == "error" and not open_end) or not _flags.has_sdpa_priority():
        return list(wanted)
    return wanted + [n for n in ATTENTION if n not in wanted]


CPU_SDPA = ("flash", "math")


def _cpu_attention_notes(wanted: list[str], plan: TorchPlan) -> None:
    cuda_only = [k for k in wanted if k not in CPU_SDPA]
    if cuda_only:
        what = "is a CUDA backend" if len(cuda_only) == 1 else "are CUDA backends"
        plan.notes.append(f"attention: {', '.join(cuda_only)} {what}; torch's CPU SDPA has flash and math only "
                          "(no CUDA device)")
    if "math" in wanted and wanted[-1] != "math":
        later = ", ".join(wanted[wanted.index("math") + 1:])
        plan.notes.append(f"attention: on the CPU math runs every input, so {later} after it in the list is never "
                          "reached (switched off)")


def _no_cuda_note(op: str, kernel: str, switch: str, runs: str) -> str:
    return (f"{op}: {kernel} sets {switch}, which only CUDA {op}s read; with no CUDA device torch runs {runs} "
            "(a profiled receipt records it as a violation)")


def _matmul(prefer: tuple[str, ...], fallback: str, plan: TorchPlan, has: Any) -> None:
    usable = _usable("matmul", prefer, ("cublas", "cublaslt"), plan, has)
    if usable and usable[0] not in MATMUL:
        plan.custom["matmul"] = usable[0]
    elif usable:
        plan.settings["blas"] = MATMUL[usable[0]]
        if plan.device == "cpu":
            plan.notes.append(_no_cuda_note("matmul", usable[0], "torch.backends.cuda.preferred_blas_library",
                                            "its CPU BLAS (MKL/oneDNN)"))
    elif prefer[0] == vocabulary.AUTO:
        plan.settings["blas"] = MATMUL["auto"]


def _conv(prefer: tuple[str, ...], fallback: str, plan: TorchPlan, has: Any) -> None:
    usable = _usable("conv", prefer, (*CONV, "cudnn_default"), plan, has)
    first = usable[0] if usable else (prefer[0] if prefer[0] == vocabulary.AUTO else None)
    if first == "cudnn_default":
        plan.refuse("kernel", "conv", "cudnn_default", "cudnn_heuristic", _CUDNN_DEFAULT)
        first = "cudnn_heuristic"
    if first:
        plan.settings.update(CONV[first])
    if first and first != vocabulary.AUTO and plan.device == "cpu":
        plan.notes.append(_no_cuda_note("conv", first, "torch.backends.cudnn.benchmark", "its CPU convolution "
                                        "(oneDNN or its own)"))


def _layernorm(prefer: tuple[str, ...], fallback: str, plan: TorchPlan, has: Any) -> None:
    usable = _usable("layernorm", prefer, ("native",), plan, has)
    if usable and usable[0] != "native":
        plan.custom["layernorm"] = usable[0]


def _execution(policy: Policy, plan: TorchPlan) -> None:
    ex, given = policy.execution, policy.execution.model_fields_set
    if ex.precision in ("fp32", "tf32"):
        plan.settings["fp32.matmul"] = plan.settings["fp32.cudnn"] = "ieee" if ex.precision == "fp32" else "tf32"
        if ex.precision == "fp32" and plan.device == "cuda":
            plan.notes.append("precision fp32 is IEEE float32: cuBLAS matmuls stay IEEE and cuDNN convolutions lose "
                              "the TF32 torch allows by default, which is slower on tensor-core GPUs; set precision: "
                              "tf32 to accept TF32 rounding for that speed")
    elif ex.precision in ("fp16", "bf16"):
        plan.autocast = ex.precision
    else:
        plan.refuse("precision", "model", ex.precision, "the model's own precision",
                    "xpuruntime does not quantize PyTorch models; quantize with torch.ao.quantization (or serve the "
                    "ONNX export on onnxruntime, which makes an int8 copy)")
    if ex.deterministic:
        _deterministic(policy, plan)
    if ex.num_threads:
        plan.settings["num_threads"] = ex.num_threads
    for name in ("compile_timeout_ms", "execution_timeout_ms"):
        if getattr(ex, name) is not None:
            plan.refuse("option", name, f"{getattr(ex, name)} ms", "no limit",
                        "torch cannot interrupt a running op or compilation")
    if "cache_dir" in given:
        plan.notes.append("cache_dir: torch keeps its own caches (TORCHINDUCTOR_CACHE_DIR, cuDNN benchmark results "
                          "live in memory); nothing is written there")


def _deterministic(policy: Policy, plan: TorchPlan) -> None:
    plan.settings["deterministic"] = (True, False)
    plan.settings["cudnn.deterministic"] = True
    if "conv" not in policy.kernels:
        plan.settings["cudnn.benchmark"] = False
    import os

    current = os.environ.get(_flags.CUBLAS_ENV)
    if current in _flags.DETERMINISTIC_CUBLAS:
        return
    plan.settings[f"env.{_flags.CUBLAS_ENV}"] = _flags.DETERMINISTIC_CUBLAS[0]
    if torch.cuda.is_initialized():
        plan.refuse("option", "deterministic", f"{_flags.CUBLAS_ENV}=:4096:8 before cuBLAS starts",
                    f"set after CUDA was initialised ({_flags.CUBLAS_ENV}={current!r} before)",
                    "cuBLAS reads it when its handle is created, which may already have happened; export "
                    f"{_flags.CUBLAS_ENV}=:4096:8 before the first CUDA call (or before starting Python)")
