"""The kernel registry: which implementations exist for each op, and when each one applies.

A provider registers its kernels when its module is imported and never activates them: only a policy
(through :class:`~xpuruntime.kernels.dispatcher.Dispatcher`) chooses. Each kernel says why it does not apply
to a call (``supports(ctx) -> None | reason``), so a receipt can name every skipped candidate::

    >>> from xpuruntime.kernels import get_registry, DispatchContext
    >>> reg = get_registry()
    >>> reg.kernels("layernorm")
    ['native', 'triton']
    >>> ctx = DispatchContext("layernorm", device="cpu", dtype="fp32", dims={"rows": 8, "hidden": 768})
    >>> reg.get("layernorm", "triton").supports(ctx)   # doctest: +ELLIPSIS
    'Triton kernels run on CUDA tensors; got a cpu tensor ...'

Implementations (``forward``, ``backward``) are callables or ``"module:function"`` strings loaded on first
use, so importing this module imports neither torch nor triton. Registering a new kernel name adds it to the
policy vocabulary, so policies may name it.

A kernel may take parameters from the policy (``params`` next to the kernel list, e.g. the cuBLASLt algorithm
an ``nvmath`` matmul is pinned to): it registers ``check_params(ctx, params) -> None | reason`` and receives
them as the ``params=`` keyword of its forward; ``variants(ctx) -> [params, ...]`` lists the parameter sets a
tuner should measure (``xpuruntime.kernels.tuner``).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from xpuruntime.errors import PolicyError, UnsupportedOperationError, did_you_mean
from xpuruntime.policies import vocabulary as vocab

__all__ = ["DispatchContext", "KernelImpl", "KernelRegistry", "SupportsFn", "get_registry", "module_available"]

SupportsFn = Callable[["DispatchContext"], "str | None"]
ParamsCheckFn = Callable[["DispatchContext", Mapping[str, Any]], "str | None"]
VariantsFn = Callable[["DispatchContext"], "list[dict[str, Any]]"]
ImplRef = Callable[..., Any] | str | None


@dataclass(frozen=True)
class DispatchContext:
    """One call as the dispatcher sees it: op, device type, dtype, named dims and input shapes.

    ``dims`` are the names policy rules test (matmul: batch/m/n/k, layernorm: rows/hidden);
    ``dtype`` is a canonical vocabulary name (``"bf16"``) or the framework's own name when it has none;
    ``strides`` (optional, one tuple per input) let kernels whose choice depends on the memory layout check it.

    >>> DispatchContext("matmul", device="cuda", dtype="bf16", dims={"m": 64, "n": 4096, "k": 4096}).dim("k")
    4096
    """

    op: str
    device: str = "cpu"
    dtype: str | None = None
    dims: Mapping[str, int] = field(default_factory=dict, hash=False)
    shapes: tuple[tuple[int, ...], ...] = ()
    requires_grad: bool = False
    training: bool = False
    strides: tuple[tuple[int, ...], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "op", vocab.canonical_op(self.op))
        object.__setattr__(self, "dims", MappingProxyType(dict(self.dims)))
        object.__setattr__(self, "shapes", tuple(map(tuple, self.shapes)))
        object.__setattr__(self, "strides", tuple(map(tuple, self.strides)))

    def dim(self, name: str, default: int | None = None) -> int | None:
        """One named dim, or ``default`` when the op did not report it."""
        return self.dims.get(name, default)

    def describe(self) -> str:
        """A short human form, e.g. ``layernorm bf16 cuda rows=8192 hidden=768``."""
        dims = " ".join(f"{k}={v}" for k, v in self.dims.items())
        return " ".join(p for p in (self.op, self.dtype or "?", self.device, dims) if p)


@functools.lru_cache(maxsize=None)
def module_available(name: str) -> bool:
    """Whether a Python module can be imported, checked without importing it (cached per process)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


@dataclass(frozen=True)
class KernelImpl:
    """One implementation of an op: where it runs, on which dtypes, and the callables that run it.

    ``supports(ctx)`` checks, in order: the device type, the dtype, the Python modules it needs
    (``requires``), then the kernel's own ``check``; the first failure is returned as the reason.
    """

    op: str
    name: str
    forward: ImplRef = None
    backward: ImplRef = None
    devices: tuple[str, ...] | None = None  # None: any device type
    dtypes: tuple[str, ...] | None = None  # canonical dtype names; None: any dtype
    requires: tuple[str, ...] = ()  # importable modules, e.g. ("triton",)
    check: SupportsFn | None = None
    description: str = ""
    install_hint: str = ""
    check_params: ParamsCheckFn | None = None  # None: the kernel takes no params
    variants: VariantsFn | None = None  # parameter sets a tuner measures (None: just the kernel)

    def supports(self, ctx: DispatchContext, params: Mapping[str, Any] | None = None) -> str | None:
        """None when this kernel can run ``ctx`` (with ``params``, when the policy gives some), else why not."""
        if self.devices is not None and ctx.device not in self.devices:
            return f"runs on {', '.join(self.devices)} tensors only; got a {ctx.device} tensor"
        if self.dtypes is not None and ctx.dtype not in self.dtypes:
            return f"dtype {ctx.dtype} is not supported (supported: {', '.join(self.dtypes)})"
        reason = self.availability()
        if reason is None and self.check is not None:
            reason = self.check(ctx)
        return reason if reason is not None or not params else self._params_reason(ctx, params)

    def availability(self) -> str | None:
        """None when the modules this kernel needs are importable (devices aside), else why not."""
        for module in self.requires:
            if not module_available(module):
                return f"{module} is not installed" + (f" ({self.install_hint})" if self.install_hint else "")
        return None

    def _params_reason(self, ctx: DispatchContext, params: Mapping[str, Any]) -> str | None:
        if self.check_params is None:
            return f"{self.op}/{self.name} takes no params (the policy gives {', '.join(sorted(params))})"
        return self.check_params(ctx, params)

    @property
    def takes_params(self) -> bool:
        """Whether the forward accepts ``params=`` from the policy."""
        return self.check_params is not None

    def load_forward(self) -> Callable[..., Any]:
        """The forward callable, importing its module on first use."""
        return _load(self.forward, self, "forward")

    def bind(self, params: Mapping[str, Any] | None) -> Callable[..., Any]:
        """The forward with ``params`` bound (the plain forward when there are none)."""
        forward = self.load_forward()
        return functools.partial(forward, params=params) if params else forward

    def load_backward(self) -> Callable[..., Any] | None:
        """The backward callable, or None when the kernel has none (the op's default backward is used)."""
        return None if self.backward is None else _load(self.backward, self, "backward")


def _load(ref: ImplRef, impl: KernelImpl, what: str) -> Callable[..., Any]:
    if callable(ref):
        return ref
    if not isinstance(ref, str) or ":" not in ref:
        raise UnsupportedOperationError(f"kernel {impl.op}/{impl.name} has no {what} implementation",
                                        expected="a callable or a 'module:function' string", received=repr(ref))
    return _import(ref)


@functools.lru_cache(maxsize=None)
def _import(ref: str) -> Callable[..., Any]:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


class KernelRegistry:
    """Op -> kernel name -> :class:`KernelImpl`, plus each op's default kernel.

    >>> reg = KernelRegistry()
    >>> reg.register("layernorm", "mine", forward=lambda x, w, b, eps: ..., devices=("cuda",))  # doctest: +SKIP
    >>> reg.kernels("layernorm")                                                                 # doctest: +SKIP
    ['mine']
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._impls: dict[str, dict[str, KernelImpl]] = {}
        self._defaults: dict[str, str] = {}

    def register(self, op: str, name: str, forward: ImplRef = None, *, backward: ImplRef = None,
                 devices: Iterable[str] | None = None, dtypes: Iterable[str] | None = None,
                 requires: Iterable[str] = (), supports: SupportsFn | None = None, description: str = "",
                 install_hint: str = "", default: bool = False, replace: bool = False,
                 check_params: ParamsCheckFn | None = None, variants: VariantsFn | None = None) -> KernelImpl:
        """Add a kernel for ``op`` (registering its name in the policy vocabulary when new); never selects it.

        ``default=True`` makes it what ``auto``/``default`` and the fallback rule use for this op.
        ``check_params`` makes it accept policy params (see the module notes); ``variants`` lists parameter
        sets for tuning. Registering a name twice raises unless ``replace=True``.
        """
        op = vocab.canonical_op(op)
        name = _kernel_name(op, name, description)
        impl = KernelImpl(op, name, forward, backward, _tuple(devices), _dtypes(dtypes), tuple(requires),
                          supports, description, install_hint, check_params, variants)
        with self._lock:
            kernels = self._impls.setdefault(op, {})
            if name in kernels and not replace:
                raise UnsupportedOperationError(f"kernel {name!r} is already registered for op {op!r}",
                                                expected="a new name, or replace=True", received=name)
            kernels[name] = impl
            if default or op not in self._defaults:
                self._defaults[op] = name
        return impl

    def unregister(self, op: str, name: str) -> None:
        """Remove a kernel (its vocabulary name stays, so saved policies remain valid)."""
        op = vocab.canonical_op(op)
        with self._lock:
            self._impls.get(op, {}).pop(name, None)
            if self._defaults.get(op) == name:
                rest = list(self._impls.get(op, {}))
                self._defaults.pop(op)
                if rest:
                    self._defaults[op] = rest[0]

    def ops(self) -> list[str]:
        """Ops that have at least one kernel, in registration order."""
        with self._lock:
            return [op for op, kernels in self._impls.items() if kernels]

    def kernels(self, op: str) -> list[str]:
        """Kernel names registered for ``op``, in registration order."""
        with self._lock:
            return list(self._impls.get(vocab.canonical_op(op), {}))

    def find(self, op: str, name: str) -> KernelImpl | None:
        """The kernel, or None when ``op`` has no kernel of that name (aliases are accepted)."""
        op = vocab.canonical_op(op)
        kernels = self._impls.get(op, {})
        if name in kernels:
            return kernels[name]
        try:
            return kernels.get(vocab.canonical_kernel(op, name))
        except PolicyError:
            return None

    def get(self, op: str, name: str) -> KernelImpl:
        """The kernel; an unknown name raises with the closest registered one."""
        impl = self.find(op, name)
        if impl is None:
            known = self.kernels(op)
            raise UnsupportedOperationError(
                f"no kernel {name!r} is registered for op {vocab.canonical_op(op)!r}",
                expected=f"one of {', '.join(known) or '(none)'}", received=repr(name),
                hint=did_you_mean(name, known) or "register it with KernelRegistry.register")
        return impl

    def default(self, op: str) -> KernelImpl:
        """The kernel that ``auto``, ``default`` and the fallback rule use for ``op``."""
        op = vocab.canonical_op(op)
        with self._lock:
            name = self._defaults.get(op)
        if name is None:
            raise UnsupportedOperationError(f"op {op!r} has no kernel registered", expected="a registered kernel",
                                            received="none", hint="register one with KernelRegistry.register")
        return self._impls[op][name]

    def describe(self) -> dict[str, list[dict[str, Any]]]:
        """Op -> kernels as plain data (name, devices, dtypes, requires, description, default, availability)."""
        with self._lock:
            return {op: [_describe(impl, self._defaults.get(op) == impl.name) for impl in kernels.values()]
                    for op, kernels in self._impls.items() if kernels}


def _kernel_name(op: str, name: str, description: str) -> str:
    key = str(name).strip().lower()
    if key in (vocab.AUTO, vocab.DEFAULT):
        return key  # the op's own default implementation: already special in the vocabulary
    try:
        return vocab.canonical_kernel(op, key)
    except PolicyError:
        vocab.register_kernel(op, key, description=description)
        return key


def _tuple(values: Iterable[str] | None) -> tuple[str, ...] | None:
    return None if values is None else tuple(str(v).lower() for v in values)


def _dtypes(values: Iterable[str] | None) -> tuple[str, ...] | None:
    return None if values is None else tuple(vocab.canonical_dtype(v) for v in values)


def _describe(impl: KernelImpl, is_default: bool) -> dict[str, Any]:
    return {"name": impl.name, "devices": list(impl.devices) if impl.devices else "any",
            "dtypes": list(impl.dtypes) if impl.dtypes else "any", "requires": list(impl.requires),
            "description": impl.description, "default": is_default, "available": impl.availability() is None,
            "reason": impl.availability(), "params": impl.takes_params, "tunable": impl.variants is not None}


_REGISTRY = KernelRegistry()


def get_registry() -> KernelRegistry:
    """The process-wide registry the module-level ops and the default dispatcher use."""
    return _REGISTRY


def _builtin() -> None:
    ops = "xpuruntime.kernels.torch_ops"
    _REGISTRY.register("layernorm", "native", forward=f"{ops}:native_layer_norm_forward",
                       backward=f"{ops}:native_layer_norm_backward", requires=("torch",), default=True,
                       description="torch.nn.functional.layer_norm (PyTorch's own kernel)")
    _REGISTRY.register("matmul", "default", forward=f"{ops}:torch_matmul", requires=("torch",), default=True,
                       description="torch.matmul (PyTorch's preferred BLAS library)")
    _REGISTRY.register("matmul", "cublas", forward=f"{ops}:cublas_matmul", devices=("cuda",), requires=("torch",),
                       description="torch.matmul with preferred_blas_library('cublas') for the call")
    _REGISTRY.register("matmul", "cublaslt", forward=f"{ops}:cublaslt_matmul", devices=("cuda",),
                       requires=("torch",), dtypes=("fp32", "fp16", "bf16", "fp64"),
                       description="torch.matmul with preferred_blas_library('cublaslt') for the call")


_builtin()
