"""Devices: parse device strings, discover what is present, keep the current device.

Discovery never imports torch. CUDA devices come from NVML (``pynvml``, from the
``nvidia-ml-py`` package) or else from ``cuda.core``; OpenVINO GPU/NPU devices come from
OpenVINO when it is installed. Missing libraries or drivers never raise here: the CPU is
always present, and :func:`cuda_discovery_notes` says why no CUDA device was found::

    >>> from xpuruntime.runtime import get_device, get_all_devices
    >>> get_device("auto")            # first CUDA device, else the CPU
    <Device cpu: AMD EPYC (503.2 GB)>
    >>> [str(d) for d in get_all_devices()]
    ['cpu']
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import importlib
import importlib.util
import os
import platform
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, Union

from xpuruntime.errors import CudaError, DeviceError, closest, did_you_mean, short_repr

__all__ = [
    "Device",
    "DeviceKind",
    "DeviceSpec",
    "DeviceLike",
    "parse_device",
    "get_device",
    "get_all_devices",
    "get_device_count",
    "get_current_device",
    "set_current_device",
    "use_device",
    "synchronize",
    "cuda_discovery_notes",
    "discovery_notes",
    "visible_cuda_indices",
]

DeviceKind = Literal["cpu", "cuda", "gpu", "npu"]
_KINDS: tuple[str, ...] = ("cpu", "cuda", "gpu", "npu")
_SPEC_WORDS: tuple[str, ...] = (*_KINDS, "auto")
_EXPECTED_FORMS = (
    "'cpu', 'cuda', 'cuda:N', 'gpu', 'gpu:N' (OpenVINO GPU), 'npu', 'npu:N' (OpenVINO NPU), "
    "'auto', None, or an int N >= 0 meaning 'cuda:N'"
)
_GIB = 1024**3
_MAX_INDEX = 1 << 16  # no host has more devices of one kind; an index beyond it is a typo, not a device


class _Lookup(type):
    """``Device(0)``, ``Device("cuda:0")`` and ``Device()`` look a present device up (the original API's
    spelling of :func:`get_device`); keyword construction builds a record, as for any dataclass."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if len(args) <= 1 and set(kwargs) <= {"device_id"} and len(args) + len(kwargs) <= 1:
            spec = args[0] if args else kwargs.get("device_id")
            return get_current_device() if spec is None else get_device(spec)
        return super().__call__(*args, **kwargs)


@dataclass(frozen=True)
class Device(metaclass=_Lookup):
    """One present device and what it can do. ``Device(0)`` / ``Device("cuda:0")`` look one up.

    Example::

        >>> d = Device("cuda:0")          # the same as get_device("cuda:0"); Device(0) too
        >>> str(d), d.compute_capability, d.supports_bf16
        ('cuda:0', (9, 0), True)
        >>> Device()                      # the current device
        <Device cuda:0: NVIDIA H100 80GB HBM3 (79.2 GB, sm_90)>
    """

    kind: DeviceKind
    id: int
    name: str
    total_memory: int | None
    compute_capability: tuple[int, int] | None
    supports_fp16: bool
    supports_bf16: bool
    supports_int8: bool
    supports_fp8: bool
    source: str
    uuid: str | None = None
    driver: str | None = None

    @property
    def spec(self) -> str:
        """The canonical device string, e.g. ``"cuda:0"`` or ``"cpu"``."""
        return "cpu" if self.kind == "cpu" else f"{self.kind}:{self.id}"

    @property
    def total_memory_gb(self) -> float | None:
        """Total memory in GiB rounded to 0.1, or None when unknown."""
        return None if self.total_memory is None else round(self.total_memory / _GIB, 1)

    @property
    def is_cuda(self) -> bool:
        """True for an NVIDIA CUDA device."""
        return self.kind == "cuda"

    @property
    def is_cpu(self) -> bool:
        """True for the host CPU."""
        return self.kind == "cpu"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every field plus ``spec``.

        Example::

            >>> get_device("cpu").to_dict()["spec"]
            'cpu'
        """
        out = dataclasses.asdict(self)
        cc = self.compute_capability
        out["compute_capability"] = None if cc is None else list(cc)
        return {"spec": self.spec, **out}

    def synchronize(self) -> None:
        """Wait for the work queued on this device; see :func:`synchronize`."""
        synchronize(self)

    def create_stream(self, **options: Any) -> Any:
        """A new CUDA :class:`~xpuruntime.runtime.stream.Stream` on this device (``priority=``, ``nonblocking=``).

        >>> Device(0).create_stream().synchronize()   # doctest: +SKIP
        """
        from xpuruntime.runtime.stream import Stream

        return Stream(self, **options)

    def memory_info(self) -> Any:
        """Free/total memory and the pool statistics the backend keeps; see :func:`~xpuruntime.runtime.memory.memory_info`."""
        from xpuruntime.runtime.memory import memory_info

        return memory_info(self)

    def __str__(self) -> str:
        return self.spec

    def __repr__(self) -> str:
        extras = [f"{self.total_memory_gb} GB"] if self.total_memory is not None else []
        if self.compute_capability is not None:
            extras.append("sm_{}{}".format(*self.compute_capability))
        tail = f" ({', '.join(extras)})" if extras else ""
        return f"<Device {self.spec}: {self.name}{tail}>"


@dataclass(frozen=True)
class DeviceSpec:
    """A parsed device string: a kind (``auto`` included) and an optional index.

    Example::

        >>> parse_device("CUDA:1")
        DeviceSpec(kind='cuda', index=1)
    """

    kind: str
    index: int | None = None

    def __str__(self) -> str:
        return self.kind if self.index is None else f"{self.kind}:{self.index}"


DeviceLike = Union[str, int, Device, DeviceSpec, None]


# ----------------------------------------------------------------------------- parsing


def _bad_spec(received: Any, hint: str | None) -> DeviceError:
    return DeviceError("malformed device", expected=_EXPECTED_FORMS, received=short_repr(received), hint=hint)


def _parse_index(kind: str, text: str, raw: Any) -> int | None:
    if kind == "auto" or (kind == "cpu" and text != "0"):
        raise _bad_spec(raw, f"{kind!r} takes no index; write {kind!r}")
    if not (text.isascii() and text.isdigit()):
        raise _bad_spec(raw, f"the index after ':' must be an integer >= 0, e.g. '{kind}:0'")
    if len(text) > len(str(_MAX_INDEX)) or int(text) >= _MAX_INDEX:  # int() of 5,000 digits would raise
        raise _bad_spec(raw, f"device indices are below {_MAX_INDEX}; see `xpuruntime devices` for this host's")
    return None if kind == "cpu" else int(text)


def _kind_hint(kind: str, suffix: str) -> str | None:
    if not kind:
        return "pass 'auto' or None to pick a device"
    guess = closest(kind, _SPEC_WORDS)
    return f"did you mean {short_repr(guess + suffix)}?" if guess else None


def _parse_str(raw: str) -> DeviceSpec:
    text = raw.strip().lower()
    kind, sep, index = text.partition(":")
    kind = kind.strip()
    if kind not in _SPEC_WORDS:
        raise _bad_spec(raw, _kind_hint(kind, sep + index.strip()))
    if not sep:
        return DeviceSpec("auto" if kind == "auto" else kind)
    return DeviceSpec(kind, _parse_index(kind, index.strip(), raw))


def parse_device(spec: DeviceLike) -> DeviceSpec:
    """Parse a device string, int, :class:`Device` or None; does not check presence.

    Example::

        >>> parse_device(" Cuda:1 "), parse_device(2), parse_device(None)
        (DeviceSpec(kind='cuda', index=1), DeviceSpec(kind='cuda', index=2), DeviceSpec(kind='auto', index=None))
    """
    if spec is None:
        return DeviceSpec("auto")
    if isinstance(spec, DeviceSpec):
        return spec
    if isinstance(spec, Device):
        return DeviceSpec(spec.kind, None if spec.is_cpu else spec.id)
    if isinstance(spec, int) and not isinstance(spec, bool):
        if not 0 <= spec < _MAX_INDEX:
            raise _bad_spec(spec, f"device indices start at 0 and are below {_MAX_INDEX}, e.g. 0 for 'cuda:0'")
        return DeviceSpec("cuda", spec)
    if isinstance(spec, str):
        return _parse_str(spec)
    raise _bad_spec(spec, f"got a {type(spec).__name__}; pass a string such as 'cuda:0'")


# ----------------------------------------------------------------------------- CPU


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _read_cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _cpuinfo_field(text: str, *keys: str) -> str | None:
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in keys and value.strip():
            return value.strip()
    return None


def _host_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _cpu_from_cpuinfo(text: str, machine: str) -> Device:
    flags = set((_cpuinfo_field(text, "flags", "features") or "").split())
    arm = machine.lower() in ("aarch64", "arm64")
    name = _cpuinfo_field(text, "model name") or platform.processor() or machine or "cpu"
    return Device(
        kind="cpu", id=0, name=name, total_memory=_host_memory(), compute_capability=None,
        supports_fp16=bool(flags & ({"fphp", "asimdhp"} if arm else {"avx512_fp16", "amx_fp16"})),
        supports_bf16=bool(flags & ({"bf16"} if arm else {"avx512_bf16", "amx_bf16"})),
        supports_int8=True, supports_fp8=False, source="os",
    )


@functools.cache
def _cpu_device() -> Device:
    return _cpu_from_cpuinfo(_read_cpuinfo(), platform.machine())


# ----------------------------------------------------------------------------- CUDA

_NOTES: dict[str, list[str]] = {"cuda": [], "openvino": []}


def cuda_discovery_notes() -> list[str]:
    """Why CUDA discovery found what it found (empty when NVML just worked).

    Example::

        >>> cuda_discovery_notes()
        ['NVML: library not found (is the NVIDIA driver installed?)',
         'cuda.core: not installed (pip install cuda-core)']
    """
    _cuda_devices()
    return list(_NOTES["cuda"])


def discovery_notes() -> dict[str, list[str]]:
    """Notes from every discovery family, keyed ``cuda`` and ``openvino``.

    Example::

        >>> discovery_notes()["openvino"]
        []
    """
    get_all_devices()
    return {family: list(notes) for family, notes in _NOTES.items()}


def _cuda_flags(cc: tuple[int, int] | None) -> dict[str, bool]:
    cc = cc or (0, 0)
    return {
        "supports_fp16": cc >= (6, 0), "supports_bf16": cc >= (8, 0),
        "supports_int8": cc >= (6, 1), "supports_fp8": cc >= (8, 9),
    }


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _uuid_entry(entry: str, uuids: list[str]) -> int | None:
    key = entry.lower()
    key = key if key.startswith("gpu-") else f"gpu-{key}"
    hits = [i for i, u in enumerate(uuids) if u.lower().startswith(key)]
    return hits[0] if len(hits) == 1 else None


def _visible_entry(entry: str, uuids: list[str]) -> int | None:
    if entry.lstrip("+-").isdigit():
        n = int(entry)
        return n if 0 <= n < len(uuids) else None
    return None if entry.lower().startswith("mig-") else _uuid_entry(entry, uuids)


def visible_cuda_indices(value: str | None, uuids: list[str]) -> list[int]:
    """Physical indices CUDA exposes under ``CUDA_VISIBLE_DEVICES``, in CUDA's new order.

    ``uuids`` are the physical devices' UUIDs (NVML order). As CUDA does, the list stops at the
    first invalid, absent or repeated entry; ``None`` means all, ``""`` and ``"-1"`` mean none.
    Entries may be indices or (prefixes of) UUIDs; MIG entries are not resolved.

    Example::

        >>> visible_cuda_indices("2,0", ["GPU-a", "GPU-b", "GPU-c"])
        [2, 0]
        >>> visible_cuda_indices("1,-1,0", ["GPU-a", "GPU-b"])
        [1]
    """
    if value is None:
        return list(range(len(uuids)))
    picked: list[int] = []
    for entry in (e.strip() for e in value.split(",")):
        index = _visible_entry(entry, uuids) if entry else None
        if index is None or index in picked:
            break
        picked.append(index)
    return picked


def _nvml_device(nvml: Any, physical: int, new_id: int, driver: str) -> Device:
    handle = nvml.nvmlDeviceGetHandleByIndex(physical)
    cc = tuple(int(x) for x in nvml.nvmlDeviceGetCudaComputeCapability(handle))
    return Device(
        kind="cuda", id=new_id, name=_text(nvml.nvmlDeviceGetName(handle)),
        total_memory=int(nvml.nvmlDeviceGetMemoryInfo(handle).total), compute_capability=cc,
        uuid=_text(nvml.nvmlDeviceGetUUID(handle)), driver=driver, source="nvml", **_cuda_flags(cc),
    )


def _nvml_enumerate(nvml: Any) -> list[Device]:
    count = nvml.nvmlDeviceGetCount()
    uuids = [_text(nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByIndex(i))) for i in range(count)]
    visible = visible_cuda_indices(os.environ.get("CUDA_VISIBLE_DEVICES"), uuids)
    if len(visible) < count:
        _NOTES["cuda"].append(f"NVML: CUDA_VISIBLE_DEVICES exposes {len(visible)} of {count} GPUs")
    driver = _text(nvml.nvmlSystemGetDriverVersion())
    return [_nvml_device(nvml, physical, new, driver) for new, physical in enumerate(visible)]


def _nvml_reason(nvml: Any, err: Exception) -> str:
    if isinstance(err, getattr(nvml, "NVMLError_LibraryNotFound", ())):
        return "NVML: library not found (is the NVIDIA driver installed?)"
    return f"NVML: {type(err).__name__}: {err}"


def _nvml_devices() -> list[Device] | None:
    if not _installed("pynvml"):
        _NOTES["cuda"].append("NVML: pynvml not installed (pip install nvidia-ml-py)")
        return None
    import pynvml

    try:
        pynvml.nvmlInit()
    except Exception as err:  # noqa: BLE001 - any NVML failure means "no NVML"
        _NOTES["cuda"].append(_nvml_reason(pynvml, err))
        return None
    try:
        return _nvml_enumerate(pynvml)
    except Exception as err:  # noqa: BLE001
        _NOTES["cuda"].append(_nvml_reason(pynvml, err))
        return None
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def _cuda_core_module() -> Any:
    """``cuda.core`` (newer releases) or ``cuda.core.experimental`` (older), or None."""
    for name in ("cuda.core", "cuda.core.experimental"):
        if _installed(name):
            module = importlib.import_module(name)
            if hasattr(module, "Device"):
                return module
    return None


def _cuda_core_count(core: Any) -> int:
    """Devices the driver sees: ``Device.get_all_devices()`` (cuda.core >= 0.4; ``system`` is NVML's in 1.x)."""
    get_all = getattr(core.Device, "get_all_devices", None)
    if callable(get_all):
        return len(get_all())
    system = core.system
    getter = getattr(system, "get_num_devices", None)
    return int(getter()) if callable(getter) else int(system.num_devices)


def _cuda_total_memory(index: int) -> int | None:
    """cuDeviceTotalMem through cuda.bindings (a cuda.core dependency); None if unavailable."""
    with contextlib.suppress(Exception):
        from cuda.bindings import driver

        _, handle = driver.cuDeviceGet(index)
        err, total = driver.cuDeviceTotalMem(handle)
        return int(total) if int(err) == 0 else None
    return None


def _cuda_core_device(core: Any, index: int) -> Device:
    dev = core.Device(index)
    cc = tuple(int(x) for x in dev.compute_capability)
    uuid = _text(dev.uuid)
    return Device(
        kind="cuda", id=index, name=_text(dev.name), total_memory=_cuda_total_memory(index),
        compute_capability=cc, uuid=uuid if uuid.startswith("GPU-") else f"GPU-{uuid}",
        source="cuda.core", **_cuda_flags(cc),
    )


def _cuda_core_devices() -> list[Device] | None:
    core = _cuda_core_module()
    if core is None:
        _NOTES["cuda"].append("cuda.core: not installed (pip install cuda-core)")
        return None
    try:
        return [_cuda_core_device(core, i) for i in range(_cuda_core_count(core))]
    except Exception as err:  # noqa: BLE001 - no driver, no device, old API: all mean "none"
        _NOTES["cuda"].append(f"cuda.core: {type(err).__name__}: {err}")
        return None


@functools.cache
def _cuda_devices() -> tuple[Device, ...]:
    _NOTES["cuda"].clear()
    found = _nvml_devices()
    found = _cuda_core_devices() if found is None else found
    return tuple(found or ())


# ----------------------------------------------------------------------------- OpenVINO


def _ov_prop(core: Any, name: str, prop: str) -> Any:
    try:
        return core.get_property(name, prop)
    except Exception:  # noqa: BLE001 - plugins differ in what they support
        return None


def _ov_kind_index(name: str) -> tuple[str, int] | None:
    family, _, suffix = name.partition(".")
    kind = {"GPU": "gpu", "NPU": "npu"}.get(family.upper())
    if kind is None or (suffix and not suffix.isdigit()):
        return None
    return kind, int(suffix or 0)


def _ov_device(core: Any, name: str, kind: str, index: int) -> Device:
    caps = {str(c).upper() for c in (_ov_prop(core, name, "OPTIMIZATION_CAPABILITIES") or ())}
    memory = _ov_prop(core, name, "GPU_DEVICE_TOTAL_MEM_SIZE")
    uuid = _ov_prop(core, name, "DEVICE_UUID")
    return Device(
        kind=kind, id=index, name=str(_ov_prop(core, name, "FULL_DEVICE_NAME") or name),  # type: ignore[arg-type]
        total_memory=int(memory) if memory else None, compute_capability=None,
        supports_fp16="FP16" in caps, supports_bf16="BF16" in caps, supports_int8="INT8" in caps,
        supports_fp8="FP8" in caps, uuid=str(uuid) if uuid is not None else None, source="openvino",
    )


@functools.cache
def _openvino_devices() -> tuple[Device, ...]:
    _NOTES["openvino"].clear()
    if not _installed("openvino"):
        return ()
    try:
        import openvino

        core = openvino.Core()
        names = list(core.available_devices)
    except Exception as err:  # noqa: BLE001 - a broken plugin must not break discovery
        _NOTES["openvino"].append(f"openvino: {type(err).__name__}: {err}")
        return ()
    found = [(n, _ov_kind_index(n)) for n in names]
    devices = [_ov_device(core, n, *ki) for n, ki in found if ki is not None]
    return tuple(sorted(devices, key=lambda d: (d.kind, d.id)))


# ----------------------------------------------------------------------------- discovery


def _refresh() -> None:
    for cached in (_cpu_device, _cuda_devices, _openvino_devices):
        cached.cache_clear()


def get_all_devices(refresh: bool = False, *, include_openvino: bool = True) -> list[Device]:
    """Every present device: the CPU, then CUDA devices, then OpenVINO GPU/NPU devices.

    Cached per process (OpenVINO enumeration is slow); ``refresh=True`` discovers again.
    ``include_openvino=False`` skips OpenVINO (and never imports it).

    Example::

        >>> [str(d) for d in get_all_devices()]
        ['cpu', 'cuda:0', 'cuda:1']
    """
    if refresh:
        _refresh()
    return [_cpu_device(), *_cuda_devices(), *(_openvino_devices() if include_openvino else ())]


def _devices_of(kind: str) -> tuple[Device, ...]:
    if kind == "cpu":
        return (_cpu_device(),)
    return _cuda_devices() if kind == "cuda" else tuple(d for d in _openvino_devices() if d.kind == kind)


def get_device_count(kind: str = "cuda") -> int:
    """How many devices of ``kind`` are present: CUDA devices by default, not all devices.

    ``kind="gpu"`` / ``"npu"`` count OpenVINO GPUs / NPUs and ``"cpu"`` is always 1; for every device use
    ``len(get_all_devices())``. CUDA devices are those ``CUDA_VISIBLE_DEVICES`` exposes.

    Example::

        >>> get_device_count(), get_device_count("cpu")
        (0, 1)
    """
    key = str(kind).strip().lower()
    if key not in _KINDS:
        raise DeviceError(
            "unknown device kind", expected=", ".join(_KINDS), received=repr(kind),
            hint=did_you_mean(key, _KINDS),
        )
    return len(_devices_of(key))


def _absent_hint(spec: DeviceSpec) -> str:
    if spec.kind == "cuda" and not _cuda_devices():
        notes = "; ".join(_NOTES["cuda"]) or "no GPU reported"
        return f"no CUDA device found ({notes}); use 'cpu' or 'auto', or check CUDA_VISIBLE_DEVICES"
    if spec.kind in ("gpu", "npu"):
        extra = " ('gpu' means an OpenVINO GPU; an NVIDIA GPU is 'cuda:N')" if spec.kind == "gpu" else ""
        return f"pick one of the present devices{extra}, or install the OpenVINO {spec.kind.upper()} driver"
    return "pick one of the present devices, or 'auto'"


def _absent(spec: DeviceSpec) -> DeviceError:
    present = ", ".join(d.spec for d in get_all_devices())
    return DeviceError(
        f"device {str(spec)!r} is not present (present: {present})",
        expected=f"one of: {present}", received=repr(str(spec)), hint=_absent_hint(spec),
    )


def _default_index(kind: str) -> int:
    current = _CURRENT.get()
    return current.id if current is not None and current.kind == kind else 0


def get_device(spec: DeviceLike = None) -> Device:
    """Resolve a device spec to a present :class:`Device`, or raise :class:`DeviceError`.

    ``"auto"``/None is the first CUDA device, else the CPU; ``"cuda"`` (likewise ``"gpu"``,
    ``"npu"``) is the current device of that kind, else index 0.

    Example::

        >>> get_device("cpu").is_cpu
        True
    """
    parsed = parse_device(spec)
    if parsed.kind == "auto":
        return (_cuda_devices() or (_cpu_device(),))[0]
    if parsed.kind == "cpu":
        return _cpu_device()
    index = _default_index(parsed.kind) if parsed.index is None else parsed.index
    for device in _devices_of(parsed.kind):
        if device.id == index:
            return device
    raise _absent(parsed)


# ----------------------------------------------------------------------------- current device

_CURRENT: contextvars.ContextVar[Device | None] = contextvars.ContextVar(
    "xpuruntime_current_device", default=None
)


def get_current_device() -> Device:
    """The current device of this context: the last one set, else cuda:0, else the CPU.

    Example::

        >>> set_current_device("cpu"); str(get_current_device())
        'cpu'
    """
    current = _CURRENT.get()
    return current if current is not None else get_device("auto")


def set_current_device(device: DeviceLike) -> Device:
    """Make ``device`` current in this context (thread- and task-local); returns it.

    Raises :class:`DeviceError` when the device is not present.

    Example::

        >>> set_current_device(0)
        <Device cuda:0: NVIDIA H100 80GB HBM3 (79.2 GB, sm_90)>
    """
    resolved = get_device(device)
    _CURRENT.set(resolved)
    return resolved


@contextlib.contextmanager
def use_device(device: DeviceLike) -> Iterator[Device]:
    """Make ``device`` current inside a ``with`` block and restore the previous one after.

    Example::

        >>> with use_device("cpu") as d:
        ...     assert get_current_device() == d
    """
    token = _CURRENT.set(get_device(device))
    try:
        yield _CURRENT.get()  # type: ignore[misc]
    finally:
        _CURRENT.reset(token)


# ----------------------------------------------------------------------------- synchronize


def _torch_cuda() -> Any:
    """The already-imported torch when it can drive CUDA; never imports torch."""
    torch = sys.modules.get("torch")
    try:
        return torch if torch is not None and torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001
        return None


def _sync_cuda_core(index: int) -> bool:
    core = _cuda_core_module()
    if core is None:
        return False
    try:
        dev = core.Device(index)
        dev.set_current()
        dev.sync()
    except Exception as err:  # noqa: BLE001
        reason = f"{type(err).__name__}: {err}"
        raise CudaError(f"cuda.core could not synchronize cuda:{index}", received=reason) from err
    return True


def synchronize(device: DeviceLike = None) -> None:
    """Block until the work queued on ``device`` (default: the current device) is done.

    CPU and OpenVINO devices: no-op (OpenVINO infer requests are waited on by their session).
    CUDA: ``torch.cuda.synchronize`` when torch is already imported, else ``cuda.core``.

    Example::

        >>> synchronize("cpu")
    """
    target = get_current_device() if device is None else get_device(device)
    if not target.is_cuda:
        return
    torch = _torch_cuda()
    if torch is not None:
        torch.cuda.synchronize(target.id)
    elif not _sync_cuda_core(target.id):
        raise CudaError(
            f"cannot synchronize {target.spec}: no CUDA Python library is available",
            expected="cuda-core installed, or torch with CUDA already imported",
            received="neither", hint="pip install cuda-core",
        )
