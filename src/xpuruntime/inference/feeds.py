"""Feed checking shared by every engine: names, ranks, static dims and dtypes, before the engine runs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from xpuruntime.errors import InputError, did_you_mean

__all__ = ["check_output_buffer", "TensorInfo", "DeviceArray", "FeedChecker", "normalize_feeds", "as_device_array", "random_feeds",
           "shared_dims"]

Dim = int | str | None


@dataclass(frozen=True)
class TensorInfo:
    """A model input or output: name, shape (ints; strings or None for symbolic dims) and numpy dtype name."""

    name: str
    shape: tuple[Dim, ...] | None
    dtype: str

    def describe(self) -> str:
        dims = "?" if self.shape is None else "[" + ", ".join("?" if d is None else str(d) for d in self.shape) + "]"
        return f"{self.name}: {self.dtype}{dims}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape) if self.shape is not None else None, "dtype": self.dtype}


@dataclass(frozen=True)
class DeviceArray:
    """A tensor that lives on an accelerator, seen through ``__cuda_array_interface__`` (no copy)."""

    ptr: int
    shape: tuple[int, ...]
    dtype: np.dtype
    device_id: int
    owner: Any  # keeps the producer (torch tensor, cupy array) alive while bound

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


def as_device_array(obj: Any) -> DeviceArray | None:
    """Wrap a CUDA tensor (torch, cupy, ...) without copying; None for host data."""
    cai = getattr(obj, "__cuda_array_interface__", None)
    if cai is None:
        return None
    if cai.get("strides") is not None and tuple(cai["strides"]) != _c_strides(cai["shape"], np.dtype(cai["typestr"])):
        raise InputError("a CUDA input is not contiguous", expected="a C-contiguous tensor",
                         received=f"strides {cai['strides']}", hint="call .contiguous() on it first")
    return DeviceArray(ptr=int(cai["data"][0]), shape=tuple(cai["shape"]), dtype=np.dtype(cai["typestr"]),
                       device_id=_device_id(obj), owner=obj)


def _c_strides(shape: Sequence[int], dtype: np.dtype) -> tuple[int, ...]:
    strides, acc = [], dtype.itemsize
    for dim in reversed(shape):
        strides.append(acc)
        acc *= dim
    return tuple(reversed(strides))


def _device_id(obj: Any) -> int:
    dev = getattr(obj, "device", None)
    index = getattr(dev, "index", None)  # torch.device
    if index is None:
        index = getattr(dev, "id", None)  # cupy.cuda.Device
    return int(index or 0)


def _to_host(name: str, value: Any, info: TensorInfo) -> Any:
    device = as_device_array(value)
    if device is not None:
        return device
    if isinstance(value, np.ndarray):
        return value if value.flags.c_contiguous else np.ascontiguousarray(value)
    if hasattr(value, "__dlpack__"):
        try:
            return np.ascontiguousarray(np.from_dlpack(value))
        except (RuntimeError, TypeError, BufferError) as exc:
            raise InputError(f"input {name!r} could not be read through DLPack: {exc}",
                             expected="a numpy array or a DLPack tensor on the CPU or a CUDA device",
                             received=type(value).__name__,
                             hint="for a torch tensor that requires grad, pass tensor.detach()") from None
    return _converted(name, value, info)


def _converted(name: str, value: Any, info: TensorInfo) -> np.ndarray:
    """Lists and scalars become arrays of the input's dtype only where no value changes: 2.5 is not
    truncated into an integer input, 2**40 does not wrap in an int32 one, inf does not become garbage."""
    target = np.dtype(info.dtype)
    try:
        raw = np.asarray(value)
        if raw.dtype == target or target.kind == "O":
            return raw.astype(target, copy=False)
        if not np.can_cast(raw.dtype, target, casting="same_kind"):
            raise TypeError(f"{raw.dtype} data cannot become {target} without changing values")
        converted = raw.astype(target)
        if target.kind in "iub" and not np.array_equal(converted, raw):
            raise ValueError(f"a value is out of the range of {target}")
        return converted
    except (TypeError, ValueError, OverflowError) as exc:
        raise InputError(f"input {name!r} cannot be converted to {info.dtype}: {exc}",
                         expected=info.describe(), received=type(value).__name__,
                         hint=f"pass a numpy array of dtype {info.dtype}") from None


def normalize_feeds(feeds: Any, inputs: Sequence[TensorInfo]) -> dict[str, Any]:
    """Feeds as a dict name -> array (or DeviceArray), checked against the model's inputs."""
    by_name = {i.name: i for i in inputs}
    feeds = _as_mapping(feeds, inputs)
    unknown = [n for n in feeds if n not in by_name]
    if unknown:
        raise InputError(f"unknown input name {unknown[0]!r}", expected=_expected(inputs),
                         received=", ".join(map(repr, feeds)), hint=did_you_mean(str(unknown[0]), by_name))
    missing = [n for n in by_name if n not in feeds]
    if missing:
        raise InputError(f"missing input {missing[0]!r}", expected=_expected(inputs),
                         received=", ".join(map(repr, feeds)) or "no inputs")
    checked = {name: _checked(name, _to_host(name, value, by_name[name]), by_name[name])
               for name, value in feeds.items()}
    _check_shared_dims(checked, shared_dims(inputs))
    return checked


def shared_dims(inputs: Sequence[TensorInfo]) -> dict[str, list[tuple[str, int]]]:
    """Symbolic dims named on more than one axis: ONNX declares them equal (``x: [batch, 8]``, ``y: [batch, 4]``)."""
    places: dict[str, list[tuple[str, int]]] = {}
    for info in inputs:
        for axis, dim in enumerate(info.shape or ()):
            if isinstance(dim, str) and dim:
                places.setdefault(dim, []).append((info.name, axis))
    return {dim: where for dim, where in places.items() if len(where) > 1}


def _check_shared_dims(feeds: Mapping[str, Any], shared: dict[str, list[tuple[str, int]]]) -> None:
    for dim, where in shared.items():
        sizes = {(name, axis): feeds[name].shape[axis] for name, axis in where}
        if len(set(sizes.values())) > 1:
            said = ", ".join(f"{name!r} axis {axis}: {size}" for (name, axis), size in sizes.items())
            raise InputError(f"inputs disagree on the size of dim {dim!r}",
                             expected=f"one size for every axis the model names {dim!r}", received=said,
                             hint="the model declares these axes equal; feed arrays whose sizes agree")


def _as_mapping(feeds: Any, inputs: Sequence[TensorInfo]) -> Mapping[str, Any]:
    if isinstance(feeds, Mapping):
        return feeds
    if isinstance(feeds, (list, tuple)):
        if len(feeds) != len(inputs):
            raise InputError(f"{len(feeds)} inputs given by position", expected=_expected(inputs),
                             received=f"a {type(feeds).__name__} of {len(feeds)}",
                             hint="pass a dict name -> array to be explicit")
        return dict(zip((i.name for i in inputs), feeds))
    if len(inputs) == 1 and (hasattr(feeds, "__array__") or hasattr(feeds, "__dlpack__")):
        return {inputs[0].name: feeds}
    raise InputError("feeds must be a dict name -> array or a list in input order", expected=_expected(inputs),
                     received=type(feeds).__name__)


def _expected(inputs: Sequence[TensorInfo]) -> str:
    return "inputs " + "; ".join(i.describe() for i in inputs)


def _checked(name: str, value: Any, info: TensorInfo) -> Any:
    shape, dtype = tuple(value.shape), np.dtype(value.dtype)
    if dtype != np.dtype(info.dtype):
        raise InputError(f"input {name!r} has dtype {dtype}", expected=info.describe(), received=f"{dtype}{list(shape)}",
                         hint=f"convert it with .astype(np.{info.dtype})")
    if info.shape is None:
        return value
    if len(shape) != len(info.shape):
        raise InputError(f"input {name!r} has rank {len(shape)}", expected=info.describe(),
                         received=f"{dtype}{list(shape)} (rank {len(shape)}, expected {len(info.shape)})")
    for axis, (got, want) in enumerate(zip(shape, info.shape)):
        if isinstance(want, int) and want >= 0 and got != want:
            raise InputError(f"input {name!r} has size {got} on axis {axis}", expected=info.describe(),
                             received=f"{dtype}{list(shape)}")
    return value


def random_feeds(inputs: list[TensorInfo], fixed: dict[str, tuple[int, ...]] | None = None,
                 seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded random feeds shaped like the inputs; symbolic dims become 1 unless ``fixed`` says."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for info in inputs:
        shape = (fixed or {}).get(info.name) or tuple(d if isinstance(d, int) and d > 0 else 1
                                                       for d in (info.shape or ()))
        dtype = np.dtype(info.dtype)
        if dtype.kind in "iu":
            feeds[info.name] = rng.integers(0, 8, size=shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[info.name] = rng.integers(0, 2, size=shape).astype(bool)
        else:
            feeds[info.name] = rng.standard_normal(shape).astype(dtype)
    return feeds


class FeedChecker:
    """:func:`normalize_feeds` with a fast path for the common call: a dict of C-contiguous numpy
    arrays that already match. Anything else (conversions, DLPack, every error) takes the full path.
    The fast path matters: after a millisecond-long engine run Python's caches are cold, so each
    line here costs several times its warm price.
    """

    def __init__(self, inputs: Sequence[TensorInfo]) -> None:
        self.inputs = list(inputs)
        self.spec = {i.name: (np.dtype(i.dtype), None if i.shape is None else len(i.shape),
                              tuple((a, d) for a, d in enumerate(i.shape or ()) if isinstance(d, int) and d >= 0))
                     for i in inputs}
        self.shared = list(shared_dims(inputs).values())

    def __call__(self, feeds: Any) -> dict[str, Any]:
        if type(feeds) is dict and len(feeds) == len(self.spec) and self._matches(feeds):
            return feeds
        return normalize_feeds(feeds, self.inputs)

    def _matches(self, feeds: dict[str, Any]) -> bool:
        for name, value in feeds.items():
            spec = self.spec.get(name)
            if spec is None or type(value) is not np.ndarray or value.dtype != spec[0]:
                return False
            shape = value.shape
            if spec[1] is not None and len(shape) != spec[1] or not value.flags.c_contiguous:
                return False
            if any(shape[axis] != dim for axis, dim in spec[2]):
                return False
        for where in self.shared:  # usually none
            if len({feeds[name].shape[axis] for name, axis in where}) > 1:
                return False
        return True


def check_output_buffer(name: str, buffer: Any, info: TensorInfo) -> None:
    """A caller-owned output must have the output's dtype, rank and static dims."""
    shape, dtype = getattr(buffer, "shape", None), getattr(buffer, "dtype", None)
    if shape is None or dtype is None:
        raise InputError(f"preallocated output {name!r} is not an array", expected=info.describe(),
                         received=type(buffer).__name__, hint="pass a numpy array (or a CUDA tensor)")
    try:
        same_dtype = np.dtype(dtype) == np.dtype(info.dtype)
    except TypeError:  # torch dtypes: checked by the engine when it binds the buffer
        same_dtype = True
    fits = info.shape is None or len(shape) == len(info.shape) and all(
        not isinstance(want, int) or want < 0 or got == want for got, want in zip(shape, info.shape))
    if not same_dtype or not fits:
        raise InputError(f"preallocated output {name!r} does not fit the output", expected=info.describe(),
                         received=f"{dtype}{list(shape)}", hint="allocate it with the output's dtype and shape")
