"""Fingerprint: the environment that results depend on, hashed so drift can be detected.

A fingerprint records devices, the NVIDIA driver, CUDA, cuDNN, library versions, Python and
the OS. Its ``hash`` covers everything else it holds (nothing volatile such as free memory),
so two runs agree on the hash exactly when their environments match::

    >>> from xpuruntime.runtime import fingerprint
    >>> fp = fingerprint()
    >>> fp.short_hash
    '3f1c0a9b7e21'
    >>> [str(c) for c in fp.diff(Fingerprint.from_json(open("old.json").read()))]
    ['libraries.onnxruntime: 1.31.1 -> 1.30.0']
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xpuruntime.errors import XpuRuntimeError, did_you_mean
from xpuruntime.runtime.devices import get_all_devices

__all__ = ["Fingerprint", "FieldChange", "fingerprint", "nccl_version", "TRACKED_LIBRARIES"]

TRACKED_LIBRARIES: tuple[str, ...] = (
    "xpuruntime", "numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "openvino", "torch",
    "tensorrt", "nvmath-python", "triton", "cuda-core", "cuda-python",
)
_DEVICE_KEYS: tuple[str, ...] = ("spec", "name", "total_memory", "compute_capability")
_OPTIONAL: tuple[str, ...] = ("nccl",)  # fields added later: absent in older fingerprints
_NCCL_DISTS: tuple[str, ...] = ("nvidia-nccl-cu13", "nvidia-nccl-cu12", "nvidia-nccl-cu11")


@dataclass(frozen=True)
class FieldChange:
    """One difference between two fingerprints: a dotted ``path``, the ``old`` and ``new`` value.

    Example::

        >>> FieldChange("libraries.torch", "2.5.0", "2.6.0")
        FieldChange(path='libraries.torch', old='2.5.0', new='2.6.0')
    """

    path: str
    old: Any
    new: Any

    def __str__(self) -> str:
        return f"{self.path}: {self.old} -> {self.new}"


@dataclass(frozen=True)
class Fingerprint:
    """The environment that results depend on; ``hash`` is computed from the other fields.

    ``dataclasses.replace(fp, driver="580.1")`` yields a copy with a fresh hash.

    Example::

        >>> fp = fingerprint()
        >>> fp.libraries["numpy"], len(fp.hash)
        ('2.4.6', 64)
    """

    devices: tuple[dict[str, Any], ...]
    driver: str | None
    cuda: str | None
    cudnn: str | None
    libraries: dict[str, str]
    python: str
    os: str
    machine: str
    nccl: str | None = None  # left out of the hash while None, so fingerprints taken before it keep theirs
    hash: str = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "devices", tuple(dict(d) for d in self.devices))
        object.__setattr__(self, "libraries", dict(sorted(self.libraries.items())))
        object.__setattr__(self, "hash", _sha256(self._payload()))

    def __hash__(self) -> int:
        return hash(self.hash)

    def _payload(self) -> dict[str, Any]:
        fields = (f.name for f in dataclasses.fields(self) if f.name != "hash")
        payload = {name: getattr(self, name) for name in fields}
        if payload.get("nccl") is None:
            payload.pop("nccl", None)
        payload["devices"] = [_jsonable(d) for d in self.devices]
        return payload

    @property
    def short_hash(self) -> str:
        """The first 12 hex characters of :attr:`hash`, for logs and file names.

        Example::

            >>> len(fingerprint().short_hash)
            12
        """
        return self.hash[:12]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every field, ``hash`` included.

        Example::

            >>> sorted(fingerprint().to_dict())[:3]
            ['cuda', 'cudnn', 'devices']
        """
        return {**self._payload(), "hash": self.hash}

    def to_json(self, indent: int | None = 2) -> str:
        """The fingerprint as JSON with sorted keys; read it back with :meth:`from_json`.

        Example::

            >>> Fingerprint.from_json(fingerprint().to_json()) == fingerprint()
            True
        """
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, verify: bool = True) -> Fingerprint:
        """Rebuild a fingerprint (e.g. read from a file); the hash is recomputed.

        With ``verify`` a stored ``hash`` that disagrees with the fields raises
        :class:`XpuRuntimeError` (the file was edited or is corrupt).

        Example::

            >>> fp = fingerprint(); Fingerprint.from_dict(fp.to_dict()).hash == fp.hash
            True
        """
        _check_keys(data)
        fp = cls(**{k: v for k, v in data.items() if k != "hash"})
        stored = data.get("hash")
        if verify and stored is not None and stored != fp.hash:
            raise XpuRuntimeError(
                "fingerprint hash does not match its fields", expected=fp.hash, received=str(stored),
                hint="the fingerprint was edited or corrupted; regenerate it, or pass verify=False",
            )
        return fp

    @classmethod
    def from_json(cls, text: str, *, verify: bool = True) -> Fingerprint:
        """Parse :meth:`to_json` output back into a fingerprint.

        Example::

            >>> Fingerprint.from_json(fingerprint().to_json()).short_hash == fingerprint().short_hash
            True
        """
        return cls.from_dict(json.loads(text), verify=verify)

    def diff(self, other: Fingerprint) -> list[FieldChange]:
        """What changed from ``self`` (old) to ``other`` (new), one entry per dotted path.

        Devices are keyed by spec (``devices.cuda:0.name``); a device or library present on one
        side only is reported whole, with None on the other side.

        Example::

            >>> old = fingerprint(); new = dataclasses.replace(old, driver="999.0")
            >>> [c.path for c in old.diff(new)]
            ['driver']
        """
        return _diff("", _diffable(self), _diffable(other))


# ----------------------------------------------------------------------------- helpers


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value))


def _sha256(payload: dict[str, Any]) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _check_keys(data: dict[str, Any]) -> None:
    names = [f.name for f in dataclasses.fields(Fingerprint)]
    for key in data:
        if key not in names:
            raise XpuRuntimeError(
                "unknown fingerprint field", expected=", ".join(names), received=repr(key),
                hint=did_you_mean(key, names),
            )
    missing = [n for n in names if n not in ("hash", *_OPTIONAL) and n not in data]
    if missing:
        raise XpuRuntimeError("fingerprint fields missing", expected=", ".join(names), received=f"no {missing}")


def _diffable(fp: Fingerprint) -> dict[str, Any]:
    payload = fp._payload()
    payload["devices"] = {d.get("spec", str(i)): d for i, d in enumerate(payload["devices"])}
    return payload


def _diff(prefix: str, old: Any, new: Any) -> list[FieldChange]:
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return [] if old == new else [FieldChange(prefix, old, new)]
    changes: list[FieldChange] = []
    for key in sorted(set(old) | set(new), key=str):
        path = f"{prefix}.{key}" if prefix else str(key)
        if key in old and key in new:
            changes += _diff(path, old[key], new[key])
        else:
            changes.append(FieldChange(path, old.get(key), new.get(key)))
    return changes


# ----------------------------------------------------------------------------- collectors


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _libraries() -> dict[str, str]:
    found = {name: _version(name) for name in TRACKED_LIBRARIES}
    found["xpuruntime"] = found["xpuruntime"] or "0.0.0+unknown"
    return {name: v for name, v in found.items() if v is not None}


def _nvml_versions() -> tuple[str | None, str | None]:
    """(driver version, CUDA driver API version) from NVML, or Nones without a driver."""
    if importlib.util.find_spec("pynvml") is None:
        return None, None
    import pynvml

    try:
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no driver: no versions
        return None, None
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        cuda = int(pynvml.nvmlSystemGetCudaDriverVersion())
        driver = driver.decode() if isinstance(driver, bytes) else str(driver)
        return driver, f"{cuda // 1000}.{cuda % 1000 // 10}"
    except Exception:  # noqa: BLE001
        return None, None
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def _format_cudnn(version: int) -> str:
    """cuDNN packs 9.x as 9xxyy (major*10000) and 8.x as 8xyy (major*1000)."""
    if version >= 90000:
        return f"{version // 10000}.{version % 10000 // 100}.{version % 100}"
    return f"{version // 1000}.{version % 1000 // 100}.{version % 100}"


def _cudnn_candidates() -> list[str]:
    names = ["libcudnn.so.9", "libcudnn.so.8", "libcudnn.so"]
    with contextlib.suppress(ImportError, ValueError, AttributeError, TypeError):
        spec = importlib.util.find_spec("nvidia.cudnn")
        roots = list(spec.submodule_search_locations or []) if spec else []
        names = [str(p) for r in roots for p in sorted(Path(r, "lib").glob("libcudnn.so*"))] + names
    return names


def _cudnn_from_library() -> str | None:
    for name in _cudnn_candidates():
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        lib.cudnnGetVersion.restype = ctypes.c_size_t
        return _format_cudnn(int(lib.cudnnGetVersion()))
    return None


def _cudnn() -> str | None:
    torch = sys.modules.get("torch")
    if torch is not None:
        with contextlib.suppress(Exception):
            version = torch.backends.cudnn.version()
            return _format_cudnn(int(version)) if version else None
    try:
        return _cudnn_from_library()
    except Exception:  # noqa: BLE001 - a broken cuDNN install is "no cuDNN" here
        return None


def nccl_version() -> str | None:
    """The NCCL version torch uses, when torch is already imported with CUDA; else that of the installed
    ``nvidia-nccl-cu*`` wheel; else None. Never imports torch.

    Example::

        >>> nccl_version()        # doctest: +SKIP
        '2.27.7'
    """
    torch = sys.modules.get("torch")
    if torch is not None:
        with contextlib.suppress(Exception):
            if torch.cuda.is_available():
                return ".".join(str(p) for p in torch.cuda.nccl.version())
    return next((v for v in map(_version, _NCCL_DISTS) if v), None)


def _device_entries() -> tuple[dict[str, Any], ...]:
    # CPU and CUDA devices only: enumerating OpenVINO devices imports openvino (and starts its telemetry)
    # in every process that builds a session; the openvino engine keys its caches on its own devices.
    devices = get_all_devices(include_openvino=False)
    return tuple({k: v for k, v in d.to_dict().items() if k in _DEVICE_KEYS} for d in devices)


@functools.cache
def _collect() -> Fingerprint:
    driver, cuda = _nvml_versions()
    return Fingerprint(
        devices=_device_entries(), driver=driver, cuda=cuda, cudnn=_cudnn(), libraries=_libraries(),
        python=platform.python_version(), os=f"{platform.system()} {platform.release()}",
        machine=platform.machine(), nccl=nccl_version(),
    )


def fingerprint(refresh: bool = False) -> Fingerprint:
    """The fingerprint of this process's environment, cached; ``refresh=True`` collects again.

    Example::

        >>> fp = fingerprint()
        >>> fp.python, "onnxruntime" in fp.libraries
        ('3.11.7', True)
    """
    if refresh:
        _collect.cache_clear()
        get_all_devices(refresh=True)
    return _collect()
