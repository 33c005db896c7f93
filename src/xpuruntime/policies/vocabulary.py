"""The vocabulary registry: ops, their kernels, aliases, shape dimensions and precisions.

Names are canonicalised here and nowhere else, so ``"cublasLt"`` and ``"cublaslt"`` mean the
same policy (and hash the same). Later layers register new kernels::

    >>> from xpuruntime.policies import vocabulary
    >>> vocabulary.register_kernel("matmul", "cutlass", description="CUTLASS GEMM")
    >>> vocabulary.canonical_kernel("matmul", "CUTLASS")
    'cutlass'
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field

from xpuruntime.errors import PolicyError, did_you_mean, short_repr

__all__ = [
    "FALLBACKS",
    "COMPILE_MODES",
    "FUSIONS",
    "DEFAULT_FALLBACK",
    "DEFAULT_ENGINE",
    "AUTO",
    "DEFAULT",
    "PRECISIONS",
    "DTYPES",
    "OpSpec",
    "register_op",
    "register_kernel",
    "list_ops",
    "get_op",
    "kernels_for",
    "canonical_op",
    "canonical_kernel",
    "canonical_precision",
    "canonical_dtype",
]

#: what to do when an engine cannot honour the policy: raise, warn and record, or record only
FALLBACKS: tuple[str, ...] = ("error", "warn", "allow")
DEFAULT_FALLBACK = "warn"
#: the engine used when none is named (API, CLI and tuner alike)
DEFAULT_ENGINE = "onnxruntime"

#: execution.compile: the engine's compiler mode (torch.compile's modes; "off" compiles nothing)
COMPILE_MODES: tuple[str, ...] = ("off", "default", "reduce-overhead", "max-autotune")
#: execution.fusions: transformer graph fusions (ONNX Runtime's transformers optimizer model types)
FUSIONS: tuple[str, ...] = ("off", "auto", "bert", "gpt2", "vit")

AUTO = "auto"
DEFAULT = "default"
_SPECIAL = (AUTO, DEFAULT)
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")

PRECISIONS: dict[str, tuple[str, ...]] = {
    "fp32": ("float32", "float", "ieee", "f32"),
    "tf32": ("tensorfloat32", "tensorfloat-32"),
    "fp16": ("float16", "half", "f16"),
    "bf16": ("bfloat16",),
    "int8": ("i8", "qint8"),
}
DTYPES: dict[str, tuple[str, ...]] = {
    "fp32": ("float32", "float", "f32"),
    "fp16": ("float16", "half", "f16"),
    "bf16": ("bfloat16",),
    "fp8": ("float8", "float8_e4m3fn", "float8_e5m2", "e4m3", "e5m2"),
    "int8": ("i8", "qint8"),
    "fp64": ("float64", "double", "f64"),
}


@dataclass
class OpSpec:
    """One op of the vocabulary: its kernels (with aliases) and the dims rules may test."""

    name: str
    kernels: dict[str, str] = field(default_factory=dict)  # canonical -> description
    kernel_aliases: dict[str, str] = field(default_factory=dict)  # alias -> canonical
    dims: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    description: str = ""
    spellings: set[str] = field(default_factory=set)  # aliases as registered (e.g. cublasLt), for schemas

    def kernel_names(self, *, with_special: bool = True) -> list[str]:
        return list(self.kernels) + (list(_SPECIAL) if with_special else [])


_lock = threading.RLock()
_ops: dict[str, OpSpec] = {}
_op_aliases: dict[str, str] = {}


def _check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name.lower()):
        raise PolicyError(
            f"invalid {what} name",
            expected="a lowercase identifier such as 'matmul' or 'cublaslt'",
            received=short_repr(name),
        )
    return name.lower()


def register_op(
    name: str, *, dims: tuple[str, ...] = (), aliases: tuple[str, ...] = (), description: str = ""
) -> OpSpec:
    """Add an op (idempotent for the same name); ``dims`` are the shape names rules may test."""
    name = _check_name(name, "op")
    with _lock:
        spec = _ops.get(name) or OpSpec(name, description=description)
        spec.dims = tuple(dict.fromkeys(spec.dims + tuple(_check_name(d, "dim") for d in dims)))
        spec.aliases = tuple(dict.fromkeys(spec.aliases + tuple(a.lower() for a in aliases)))
        _ops[name] = spec
        _op_aliases.update({a.lower(): name for a in aliases})
        return spec


def register_kernel(op: str, kernel: str, *, aliases: tuple[str, ...] = (), description: str = "") -> None:
    """Add a kernel name to an op (idempotent); ``auto`` and ``default`` are reserved."""
    spec = get_op(op)
    kernel = _check_name(kernel, "kernel")
    if kernel in _SPECIAL:
        raise PolicyError(f"kernel name {kernel!r} is reserved", expected="a new kernel name", received=kernel)
    with _lock:
        spec.kernels.setdefault(kernel, description)
        spec.kernel_aliases.update({a.lower(): kernel for a in aliases if a.lower() != kernel})
        spec.spellings.update(a for a in aliases if a != a.lower())


def list_ops() -> list[str]:
    """Canonical op names in registration order."""
    return list(_ops)


def get_op(name: str) -> OpSpec:
    """The OpSpec for an op name or alias; unknown names raise PolicyError with the closest name."""
    return _ops[canonical_op(name)]


def kernels_for(op: str, *, with_special: bool = True) -> list[str]:
    """Canonical kernel names of an op (plus ``auto`` and ``default`` unless told not to)."""
    return get_op(op).kernel_names(with_special=with_special)


def canonical_op(name: str) -> str:
    """``"gemm"`` -> ``"matmul"``; an unknown op raises PolicyError."""
    key = str(name).strip().lower()
    if key in _ops:
        return key
    if key in _op_aliases:
        return _op_aliases[key]
    known = list(_ops) + list(_op_aliases)
    raise PolicyError(
        f"unknown op {short_repr(name)}",
        expected=f"one of {', '.join(_ops)}",
        received=short_repr(name),
        hint=did_you_mean(key, known) or "register it with xpuruntime.policies.vocabulary.register_op",
    )


def canonical_kernel(op: str, name: str) -> str:
    """``("matmul", "cublasLt")`` -> ``"cublaslt"``; unknown kernels raise with the closest name."""
    spec = get_op(op)
    key = str(name).strip().lower()
    if key in spec.kernels or key in _SPECIAL:
        return key
    if key in spec.kernel_aliases:
        return spec.kernel_aliases[key]
    choices = spec.kernel_names() + list(spec.kernel_aliases)
    raise PolicyError(
        f"unknown kernel {short_repr(name)} for op {spec.name!r}",
        expected=f"one of {', '.join(spec.kernel_names())}",
        received=short_repr(name),
        hint=did_you_mean(key, choices) or "register it with xpuruntime.policies.vocabulary.register_kernel",
    )


def _canonical_from(table: dict[str, tuple[str, ...]], name: object, what: str) -> str:
    key = str(name).strip().lower()
    for canon, aliases in table.items():
        if key == canon or key in aliases:
            return canon
    choices = list(table) + [a for al in table.values() for a in al]
    raise PolicyError(
        f"unknown {what} {short_repr(name)}",
        expected=f"one of {', '.join(table)}",
        received=short_repr(name),
        hint=did_you_mean(key, choices),
    )


def canonical_precision(name: object) -> str:
    """``"bfloat16"`` -> ``"bf16"``; typos raise PolicyError with the closest precision."""
    return _canonical_from(PRECISIONS, name, "precision")


def canonical_dtype(name: object) -> str:
    """Canonical dtype name used in kernel rules (``"float16"`` -> ``"fp16"``)."""
    return _canonical_from(DTYPES, name, "dtype")


def _builtin() -> None:
    register_op("matmul", dims=("batch", "m", "n", "k"), aliases=("gemm", "linear"),
                description="dense matrix products (GEMM)")
    for k, al, d in [
        ("cublas", (), "cuBLAS GEMM"),
        ("cublaslt", ("cublasLt", "cublas_lt"), "cuBLASLt GEMM"),
        ("triton", (), "Triton GEMM kernel"),
        ("nvmath", ("nvmath_python",), "cuBLASLt through nvmath-python with a pinned algorithm"),
    ]:
        register_kernel("matmul", k, aliases=al, description=d)
    register_op("attention", dims=("batch", "heads", "seq_q", "seq_k", "head_dim"),
                aliases=("sdpa", "scaled_dot_product_attention", "mha"), description="scaled dot-product attention")
    for k, al, d in [
        ("flash", ("flash_v2", "flash_attention", "flash2"), "FlashAttention"),
        ("efficient", ("mem_efficient", "memory_efficient", "xformers", "cutlass"), "memory-efficient attention"),
        ("cudnn", ("cudnn_attention",), "cuDNN fused attention"),
        ("math", ("naive", "reference"), "unfused math attention"),
        ("triton", (), "Triton attention kernel"),
    ]:
        register_kernel("attention", k, aliases=al, description=d)
    register_op("conv", dims=("batch", "in_channels", "out_channels", "kernel_size", "height", "width"),
                aliases=("convolution", "conv2d"), description="convolutions")
    for k, al, d in [
        ("cudnn_exhaustive", ("exhaustive",), "cuDNN, benchmark every algorithm"),
        ("cudnn_heuristic", ("heuristic",), "cuDNN, heuristic algorithm choice"),
        ("cudnn_default", (), "cuDNN default algorithm"),
    ]:
        register_kernel("conv", k, aliases=al, description=d)
    register_op("layernorm", dims=("rows", "hidden"), aliases=("layer_norm",), description="layer normalisation")
    register_kernel("layernorm", "native", aliases=("torch", "aten"), description="the engine's own kernel")
    register_kernel("layernorm", "triton", description="Triton fused LayerNorm")


_builtin()
