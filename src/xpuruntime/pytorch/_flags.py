"""PyTorch's process-global execution switches: read them all, write one, restore them exactly.

Every switch the translation table touches is listed here and nowhere else. They are process-global
in PyTorch (``at::globalContext()``): the SDPA backend flags that ``torch.nn.attention.sdpa_kernel``
flips, ``preferred_blas_library``, the fp32 precision flags, the cuDNN flags, deterministic
algorithms, ``torch.set_num_threads`` and the ``CUBLAS_WORKSPACE_CONFIG`` variable.

The fp32 precision flags come in two APIs: the legacy booleans (``torch.backends.cuda.matmul.allow_tf32``,
``torch.backends.cudnn.allow_tf32``, ``torch.set_float32_matmul_precision``) and, from torch 2.9,
``fp32_precision`` per backend and op. torch checks that both agree and raises when a legacy flag is
read after the new API made them disagree, so writes go through the legacy setter first (it keeps both
in step) and then the new one; a snapshot keeps the raw values of both and restores legacy first, new
second, which rebuilds the exact state.
"""

from __future__ import annotations

import contextlib
import functools
import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

__all__ = ["snapshot", "restore", "write", "raw_keys", "SETTINGS", "has_new_fp32_api", "has_sdpa_priority",
           "fp32_state", "snapshot_sdpa", "fp32_keys", "Replay", "reads_of", "writes_of"]

CUBLAS_ENV = "CUBLAS_WORKSPACE_CONFIG"
DETERMINISTIC_CUBLAS = (":4096:8", ":16:8")
SDPA_FLAGS = {"flash": "flash", "efficient": "mem_efficient", "cudnn": "cudnn", "math": "math"}
# (backend, op) pairs of the fp32_precision API (torch >= 2.9); "none" means "inherit"
_FP32_PAIRS = (("generic", "all"), ("cuda", "all"), ("cuda", "matmul"), ("cuda", "conv"), ("cuda", "rnn"),
               ("mkldnn", "all"), ("mkldnn", "matmul"), ("mkldnn", "conv"), ("mkldnn", "rnn"))


def has_new_fp32_api() -> bool:
    return hasattr(torch._C, "_get_fp32_precision_getter")


def has_sdpa_priority() -> bool:
    return hasattr(torch._C, "_set_sdp_priority_order") and hasattr(torch._C, "_get_sdp_priority_order")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """torch warns that some of these switches are experimental or deprecated; the receipt says what was set."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


class _Silenced:
    """Silences torch's warnings for a batch of reads or writes and remembers the batches that gave none, so
    that the same reads or writes (an engine's every run) skip the warnings machinery afterwards."""

    __slots__ = ("tokens", "block", "caught")

    def __init__(self, tokens: frozenset[Any]) -> None:
        self.tokens = tokens

    def __enter__(self) -> None:
        self.block = warnings.catch_warnings(record=True)
        self.caught = self.block.__enter__()
        warnings.simplefilter("always")  # recorded, never shown

    def __exit__(self, *exc: Any) -> None:
        self.block.__exit__(*exc)
        if not self.caught and exc[0] is None:
            _QUIET.update(self.tokens)


_QUIET: set[Any] = set()  # (read, name) and (write, name, repr(value)) seen to give no warning
_NULL = contextlib.nullcontext()


def _quiet_for(kind: str, items: Iterable[Any]) -> Any:
    """:func:`_quiet` unless every read or write of ``items`` (names, or (name, value) pairs) was seen quiet."""
    tokens = frozenset((kind, name) if kind == "read" else (kind, name[0], repr(name[1])) for name in items)
    return _NULL if tokens <= _QUIET else _Silenced(tokens)


def _try(read: Callable[[], Any]) -> tuple[bool, Any]:
    try:
        with _quiet():
            return True, read()
    except (RuntimeError, AttributeError):  # a legacy read after mixed API use, or an older torch
        return False, None


# -- reading -------------------------------------------------------------------------------
def _readers() -> dict[str, Callable[[], Any]]:
    cuda, cudnn = torch.backends.cuda, torch.backends.cudnn
    readers: dict[str, Callable[[], Any]] = {
        f"sdpa.{name}": getattr(cuda, f"{flag}_sdp_enabled") for name, flag in SDPA_FLAGS.items()
        if hasattr(cuda, f"{flag}_sdp_enabled")}
    if has_sdpa_priority():
        readers["sdpa.priority"] = lambda: list(torch._C._get_sdp_priority_order())
    readers.update({
        "blas": torch._C._get_blas_preferred_backend,
        "legacy.matmul_precision": torch._C._get_float32_matmul_precision,
        "legacy.cudnn_tf32": torch._C._get_cudnn_allow_tf32,
        "cudnn.benchmark": lambda: cudnn.benchmark,
        "cudnn.benchmark_limit": lambda: cudnn.benchmark_limit,
        "cudnn.deterministic": lambda: cudnn.deterministic,
        "deterministic": lambda: (torch.are_deterministic_algorithms_enabled(),
                                  torch.is_deterministic_algorithms_warn_only_enabled()),
        "num_threads": torch.get_num_threads,
        f"env.{CUBLAS_ENV}": lambda: os.environ.get(CUBLAS_ENV),
    })
    if has_new_fp32_api():
        for backend, op in _FP32_PAIRS:
            readers[f"fp32.{backend}.{op}"] = lambda b=backend, o=op: torch._C._get_fp32_precision_getter(b, o)
    return readers


def snapshot(keys: Iterable[str] | None = None) -> dict[str, Any]:
    """Every switch that can be read now, by name (a legacy flag torch refuses to read is left out); only
    ``keys`` when given (an engine's every run reads the few its plan touches)."""
    snap = {}
    readers = _cached_readers()
    pairs = list(readers.items()) if keys is None else [(k, readers[k]) for k in keys if k in readers]
    with _quiet_for("read", (k for k, _ in pairs)):  # one warnings block for all reads, none once seen quiet
        for name, read in pairs:
            try:
                value = read()
            except (RuntimeError, AttributeError):  # a legacy read after mixed API use, or an older torch
                continue
            if value is not None or name.startswith("env."):
                snap[name] = value
    return snap


@functools.cache
def _cached_readers() -> dict[str, Callable[[], Any]]:
    return _readers()  # the readers read the switches when called; which readers exist never changes


def snapshot_sdpa() -> dict[str, Any]:
    """The SDPA switches alone (each backend's flag, and the priority order when torch keeps one), cheaply."""
    cuda = torch.backends.cuda
    snap: dict[str, Any] = {f"sdpa.{name}": getattr(cuda, f"{flag}_sdp_enabled")() for name, flag in SDPA_FLAGS.items()}
    if has_sdpa_priority():
        snap["sdpa.priority"] = list(torch._C._get_sdp_priority_order())
    return snap


def fp32_state() -> dict[str, str]:
    """Effective fp32 precision of cuBLAS matmuls and cuDNN convs: ``ieee`` or ``tf32``."""
    if has_new_fp32_api():
        return {"matmul": _effective("cuda", "matmul"), "conv": _effective("cuda", "conv")}
    matmul = torch.get_float32_matmul_precision() != "highest"
    return {"matmul": "tf32" if matmul else "ieee", "conv": "tf32" if torch.backends.cudnn.allow_tf32 else "ieee"}


def _effective(backend: str, op: str) -> str:
    get = torch._C._get_fp32_precision_getter
    for b, o in ((backend, op), (backend, "all"), ("generic", "all")):
        value = get(b, o)
        if value not in ("none", "default"):
            return "tf32" if value == "tf32" else "ieee"
    return "ieee"


# -- writing -------------------------------------------------------------------------------
def _set_sdpa(name: str) -> Callable[[bool], None]:
    return lambda on: getattr(torch.backends.cuda, f"enable_{SDPA_FLAGS[name]}_sdp")(bool(on))


def _set_priority(order: list[int]) -> None:
    """The listed backends first; the others keep their current order behind them (as sdpa_kernel does)."""
    order = [int(b) for b in order]
    torch._C._set_sdp_priority_order(order + [b for b in torch._C._get_sdp_priority_order() if b not in order])


def _set_fp32(op: str, value: str) -> None:
    """``value`` is ieee or tf32; legacy setter first (it keeps the legacy and new flags in step)."""
    tf32 = value == "tf32"
    legacy = "legacy.matmul_precision" if op == "matmul" else "legacy.cudnn_tf32"
    if _try(_cached_readers()[legacy])[0]:  # never mix APIs when torch already refuses the legacy read
        with _quiet():
            if op == "matmul":  # sets cuBLAS and oneDNN matmul precision in step with the legacy value
                torch.set_float32_matmul_precision("high" if tf32 else "highest")
            else:
                torch.backends.cudnn.allow_tf32 = tf32
    if has_new_fp32_api():
        new = "tf32" if tf32 else "ieee"
        for pair in ([("cuda", "matmul")] if op == "matmul" else [("cuda", "conv"), ("cuda", "rnn")]):
            torch._C._set_fp32_precision_setter(*pair, new)


def _set_env(value: str | None) -> None:
    if value is None:
        os.environ.pop(CUBLAS_ENV, None)
    else:
        os.environ[CUBLAS_ENV] = value


def _set_deterministic(value: Any) -> None:
    on, warn_only = value if isinstance(value, tuple) else (bool(value), False)
    torch.use_deterministic_algorithms(on, warn_only=warn_only)


def _set_benchmark_limit(value: int) -> None:
    if torch.backends.cudnn.is_available():  # without cuDNN torch has no such switch (the attribute is None)
        torch.backends.cudnn.benchmark_limit = int(value)


def _set_blas(value: Any) -> None:
    with _quiet():
        torch.backends.cuda.preferred_blas_library(value)


SETTINGS: dict[str, Callable[[Any], None]] = {
    **{f"sdpa.{name}": _set_sdpa(name) for name in SDPA_FLAGS},
    "sdpa.priority": _set_priority,
    "blas": _set_blas,
    "fp32.matmul": lambda v: _set_fp32("matmul", v),
    "fp32.cudnn": lambda v: _set_fp32("cudnn", v),
    "cudnn.benchmark": lambda v: setattr(torch.backends.cudnn, "benchmark", bool(v)),
    "cudnn.benchmark_limit": _set_benchmark_limit,
    "cudnn.deterministic": lambda v: setattr(torch.backends.cudnn, "deterministic", bool(v)),
    "deterministic": _set_deterministic,
    "num_threads": lambda n: torch.set_num_threads(int(n)),
    f"env.{CUBLAS_ENV}": _set_env,
}


def write(name: str, value: Any) -> None:
    """Set one switch by its translation-table name; torch's own error propagates when it refuses."""
    SETTINGS[name](value)


def raw_keys(setting: str) -> tuple[str, ...]:
    """The snapshot entries a translation-table setting changes (the fp32 ones change both APIs)."""
    if setting == "fp32.matmul":
        return "legacy.matmul_precision", "fp32.cuda.matmul", "fp32.mkldnn.matmul"
    if setting == "fp32.cudnn":
        return "legacy.cudnn_tf32", "fp32.cuda.conv", "fp32.cuda.rnn"
    return (setting,)


def restore(snap: dict[str, Any], keys: set[str] | None = None, *, changed_only: bool = False) -> None:
    """Put back the switches of ``snap`` (only ``keys`` when given): plain flags, then the legacy fp32
    flags, then the new ones. ``changed_only`` first reads those switches and writes only the ones that differ
    (the fp32 flags of both APIs as one group, since a legacy write moves the new ones too)."""
    if keys is not None:
        snap = {k: v for k, v in snap.items() if k in keys} if keys else {}
    if not snap:
        return
    if changed_only:
        snap = _differing(snap)
        if not snap:
            return
    Replay(_write_calls(snap), _write_tokens(snap))()  # inside the warnings block until seen quiet


class Replay:
    """The same reads or writes of switches on every run (an engine's per-run frame) as plain calls, without
    :func:`snapshot`'s and :func:`restore`'s bookkeeping; inside :func:`_quiet`'s warnings block until the same
    calls were seen to give no warning (as :func:`snapshot` and :func:`restore` do)."""

    __slots__ = ("calls", "tokens", "names")

    def __init__(self, calls: tuple[tuple[Callable[..., Any], tuple[Any, ...]], ...], tokens: frozenset[Any],
                 names: tuple[str, ...] = ()) -> None:
        self.calls, self.tokens, self.names = calls, tokens, names

    def __call__(self) -> tuple[Any, ...]:
        if self.tokens <= _QUIET:
            return tuple(fn(*args) for fn, args in self.calls)
        with _Silenced(self.tokens):
            return tuple(fn(*args) for fn, args in self.calls)


def reads_of(keys: Iterable[str]) -> Replay | None:
    """A :class:`Replay` reading ``keys`` (returns their values in order); None for a switch with no reader.
    A read torch refuses raises (RuntimeError), where :func:`snapshot` leaves the switch out."""
    keys = tuple(keys)
    readers = _cached_readers()
    if not all(k in readers for k in keys):
        return None
    calls = tuple((torch._C._get_fp32_precision_getter, tuple(k.split(".")[1:])) if _is_new_fp32(k)
                  else (readers[k], ()) for k in keys)
    return Replay(calls, frozenset(("read", k) for k in keys), keys)


def _is_new_fp32(key: str) -> bool:
    return _is_raw_fp32(key) and has_new_fp32_api()


def writes_of(snap: dict[str, Any]) -> Replay | None:
    """A :class:`Replay` writing ``snap`` as :func:`restore` does (plain switches, legacy fp32, new fp32), every
    switch of it; None for a switch :func:`restore` does not write."""
    if any(k not in SETTINGS and k not in _LEGACY and not _is_raw_fp32(k) for k in snap):
        return None
    return Replay(_write_calls(snap), _write_tokens(snap))


_LEGACY = ("legacy.matmul_precision", "legacy.cudnn_tf32")


def _is_raw_fp32(key: str) -> bool:
    return key.startswith("fp32.") and key.count(".") == 2


def _write_calls(snap: dict[str, Any]) -> tuple[tuple[Callable[..., Any], tuple[Any, ...]], ...]:
    """The setter calls that put back ``snap``, in the order that rebuilds it exactly: plain switches, then the
    legacy fp32 flags (a legacy write moves the new ones), then the new fp32 flags; other entries are skipped."""
    calls: list[tuple[Callable[..., Any], tuple[Any, ...]]] = [
        (SETTINGS[k], (v,)) for k, v in snap.items() if k in SETTINGS and not k.startswith("fp32.")]
    if "legacy.matmul_precision" in snap:
        calls.append((torch.set_float32_matmul_precision, (snap["legacy.matmul_precision"],)))
    if "legacy.cudnn_tf32" in snap:
        calls.append((_set_cudnn_tf32, (snap["legacy.cudnn_tf32"],)))
    for name, value in snap.items():
        if _is_raw_fp32(name):
            _, backend, op = name.split(".")
            calls.append((torch._C._set_fp32_precision_setter, (backend, op, value)))
    return tuple(calls)


def _write_tokens(snap: dict[str, Any]) -> frozenset[Any]:
    return frozenset(("write", k, repr(v)) for k, v in snap.items())  # as _quiet_for("write", ...) names them


def _set_cudnn_tf32(value: bool) -> None:
    torch.backends.cudnn.allow_tf32 = value


def _differing(snap: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``snap`` that differ from the switches now. A legacy fp32 write moves the new-API flags,
    so when a legacy flag differs, the new ones are read again after it is written and included if they differ."""
    now = snapshot(snap)
    differ = {k: v for k, v in snap.items() if now.get(k, _ABSENT) != v}
    legacy = {k: v for k, v in differ.items() if k.startswith("legacy.")}
    if legacy:
        restore(legacy)
        now = snapshot(k for k in snap if k.startswith("fp32."))
        differ = {k: v for k, v in snap.items() if k.startswith("fp32.") and now.get(k, _ABSENT) != v} | \
            {k: v for k, v in differ.items() if not _is_fp32(k)}
    return differ


_ABSENT = object()


def _is_fp32(key: str) -> bool:
    return key.startswith(("fp32.", "legacy."))


def fp32_keys() -> tuple[str, ...]:
    """Every raw fp32 switch (both APIs): a write of one may move the others."""
    return tuple(k for k in _cached_readers() if _is_fp32(k))
