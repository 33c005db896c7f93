"""Feed checking shared by every engine: names, ranks, static dims and dtypes, before the engine runs.

Nothing here allocates before it has checked: a feed's rank, dims and dtype are checked on the caller's array
(a view is never copied first), and every array xpuruntime makes (a contiguous copy, random feeds, an array
read from a ``.npy`` file) is first sized against :func:`max_input_bytes`: 16 GiB or half the machine's memory,
whichever is smaller, unless the environment variable ``XPURUNTIME_MAX_INPUT_BYTES`` says otherwise.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from xpuruntime.errors import InputError, did_you_mean, short_repr

__all__ = ["check_output_buffer", "check_output_dims", "OUTPUT_BUFFER_KINDS", "TensorInfo", "DeviceArray", "FeedChecker",
           "normalize_feeds", "as_device_array", "random_feeds", "shared_dims", "load_array_file", "max_input_bytes",
           "check_seed", "MAX_INPUT_BYTES_ENV", "resolve_shapes", "int_ranges", "embedding_sizes", "onnx_inputs",
           "DEFAULT_INT_RANGE", "MASK_INT_RANGE", "DEFAULT_DIM_WORD"]

MAX_INPUT_BYTES_ENV = "XPURUNTIME_MAX_INPUT_BYTES"
_DEFAULT_MAX_INPUT = 16 << 30
_MAX_DIM = int(np.iinfo(np.intp).max)

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
    if isinstance(value, np.ma.MaskedArray):
        raise InputError(f"input {name!r} is a masked array", expected=info.describe() + " (a plain array)",
                         received=f"numpy.ma.MaskedArray{list(value.shape)}",
                         hint="the engine would read the masked values as data: pass value.filled(FILL) "
                              "(or value.data to keep them on purpose)")
    if isinstance(value, np.ndarray):
        return _contiguous(name, value, info)
    if hasattr(value, "__dlpack__"):
        try:
            host = np.from_dlpack(value)
        except (RuntimeError, TypeError, BufferError) as exc:
            raise InputError(f"input {name!r} could not be read through DLPack: {exc}",
                             expected="a numpy array or a DLPack tensor on the CPU or a CUDA device",
                             received=type(value).__name__,
                             hint="for a torch tensor that requires grad, pass tensor.detach()") from None
        return _contiguous(name, host, info)
    return _converted(name, value, info)


def _contiguous(name: str, value: np.ndarray, info: TensorInfo) -> np.ndarray:
    """Checked on the view first (a broadcast view of the wrong rank is never copied), then sized, then copied."""
    _checked(name, value, info)
    if value.flags.c_contiguous:
        return value
    check_nbytes(name, value.shape, value.dtype, "as a contiguous copy")
    return np.ascontiguousarray(value)


def max_input_bytes() -> int:
    """The largest array xpuruntime allocates for one input: ``XPURUNTIME_MAX_INPUT_BYTES`` when set, else
    16 GiB or half the machine's memory, whichever is smaller.

    >>> os.environ["XPURUNTIME_MAX_INPUT_BYTES"] = str(1 << 30); max_input_bytes()   # doctest: +SKIP
    1073741824
    """
    raw = os.environ.get(MAX_INPUT_BYTES_ENV, "").strip()
    if not raw:
        return min(_DEFAULT_MAX_INPUT, _half_memory() or _DEFAULT_MAX_INPUT)
    if not raw.isdigit() or len(raw) > 20 or int(raw) < 1:
        raise InputError(f"invalid {MAX_INPUT_BYTES_ENV}", expected="a number of bytes >= 1, e.g. 17179869184",
                         received=short_repr(raw), hint=f"unset {MAX_INPUT_BYTES_ENV} to use the default")
    return int(raw)


def _half_memory() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (AttributeError, ValueError, OSError):
        return None


def check_nbytes(name: str, shape: Sequence[int], dtype: np.dtype, what: str = "") -> int:
    """The byte size of an array of ``shape`` and ``dtype`` (Python integers: no overflow); an InputError when
    it passes :func:`max_input_bytes`."""
    nbytes = int(np.dtype(dtype).itemsize)
    for dim in shape:
        nbytes *= int(dim)
    limit = max_input_bytes()
    if nbytes > limit:
        raise InputError(f"input {name!r} is too large: {np.dtype(dtype)}{[int(d) for d in shape]} is "
                         f"{_size(nbytes)}{f' ({what})' if what else ''}",
                         expected=f"at most {_size(limit)} per input", received=_size(nbytes),
                         hint=f"use smaller shapes, or raise the limit with {MAX_INPUT_BYTES_ENV}=BYTES")
    return nbytes


def _size(nbytes: int) -> str:
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if nbytes >= 1 << shift:
            return f"{nbytes / (1 << shift):.4g} {unit} ({nbytes} bytes)"
    return f"{nbytes} bytes"


def _converted(name: str, value: Any, info: TensorInfo) -> np.ndarray:
    """Lists and scalars become arrays of the input's dtype only where no value changes: 2.5 is not
    truncated into an integer input, 2**40 does not wrap in an int32 one, inf does not become garbage."""
    target = np.dtype(info.dtype)
    if target.kind == "O":
        return _strings(name, np.asarray(value, dtype=object), info)
    try:
        raw = np.asarray(value)
        if raw.dtype == target:
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


def _strings(name: str, value: np.ndarray, info: TensorInfo) -> np.ndarray:
    """A string input holds strings only: the engine would turn ``1`` or ``None`` into ``'1'`` or ``'None'``."""
    bad = next((v for v in value.flat if not isinstance(v, (str, bytes))), _NONE)
    if bad is not _NONE:
        raise InputError(f"input {name!r} is a string input but holds a {type(bad).__name__}",
                         expected=info.describe() + " (str or bytes elements)", received=short_repr(bad),
                         hint="convert the values to strings yourself (None has no string form)")
    return value


_NONE = object()


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
    if dtype.kind == "O":
        _strings(name, value, info)
    _check_shape(name, shape, dtype, info)
    return value


def _check_shape(name: str, shape: tuple[int, ...], dtype: np.dtype, info: TensorInfo) -> None:
    if info.shape is None:
        return
    if len(shape) != len(info.shape):
        raise InputError(f"input {name!r} has rank {len(shape)}", expected=info.describe(),
                         received=f"{dtype}{list(shape)} (rank {len(shape)}, expected {len(info.shape)})")
    for axis, (got, want) in enumerate(zip(shape, info.shape)):
        if isinstance(want, int) and want >= 0 and got != want:
            raise InputError(f"input {name!r} has size {got} on axis {axis}", expected=info.describe(),
                             received=f"{dtype}{list(shape)}")


def check_seed(seed: Any) -> int:
    """A seed for random inputs: an integer from 0 to 2**128 - 1; an InputError otherwise.

    >>> check_seed(7)
    7
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 1 << 128:
        raise InputError("invalid seed for random inputs", expected="an integer from 0 to 2**128 - 1",
                         received=short_repr(seed), hint="pass --seed 0 (the default) or another integer >= 0")
    return int(seed)


def random_feeds(inputs: list[TensorInfo], fixed: dict[str, tuple[int, ...]] | None = None,
                 seed: int = 0, *, ranges: Mapping[str, tuple[int, int]] | None = None) -> dict[str, np.ndarray]:
    """Seeded random feeds shaped like the inputs; symbolic dims become 1 unless ``fixed`` says (the CLI sizes
    them first with :func:`resolve_shapes`, which refuses a dim without a size).

    Floats are standard normal; integers are drawn from ``ranges[name]`` (``[low, high)``), else
    :func:`int_ranges`' defaults; booleans are 0/1. Every shape is checked (rank, static dims, bytes against
    :func:`max_input_bytes`) before anything is made.

    >>> random_feeds([TensorInfo("x", ("batch", 4), "float32")], seed=1)["x"].shape
    (1, 4)
    """
    rng = np.random.default_rng(check_seed(seed))
    shapes = {info.name: _random_shape(info, (fixed or {}).get(info.name)) for info in inputs}
    bounds = {**int_ranges(inputs), **(ranges or {})}
    return {info.name: _random_array(rng, shapes[info.name], np.dtype(info.dtype), bounds.get(info.name))
            for info in inputs}


#: integers for an input with no better rule: ``[0, 100)``
DEFAULT_INT_RANGE = (0, 100)
#: integers for an input named like ``*mask*``: 0 or 1
MASK_INT_RANGE = (0, 2)
#: a symbolic dim whose name contains this word defaults to 1 when no size is given (said in the output)
DEFAULT_DIM_WORD = "batch"


def int_ranges(inputs: Sequence[TensorInfo], *, given: Mapping[str, tuple[int, int]] | None = None,
               everywhere: tuple[int, int] | None = None,
               vocab: Mapping[str, int] | None = None) -> dict[str, tuple[int, int]]:
    """``[low, high)`` for each integer input: ``given[name]``, else ``everywhere``, else ``[0, vocab)`` for an
    input that indexes an embedding (:func:`embedding_sizes`), else 0/1 for a name containing ``mask``, else
    ``[0, 100)``. Ids beyond a vocabulary make an embedding fail, and a mask is 0 or 1.

    >>> int_ranges([TensorInfo("attention_mask", (1, 8), "int64"), TensorInfo("ids", (1, 8), "int64")],
    ...            vocab={"ids": 30522})
    {'attention_mask': (0, 2), 'ids': (0, 30522)}
    """
    unknown = sorted(set(given or {}) - {i.name for i in inputs})
    if unknown:
        raise InputError(f"--int-range names {unknown[0]!r}, which is not a model input",
                         expected=_expected(inputs), received=unknown[0], hint=did_you_mean(unknown[0],
                                                                                           [i.name for i in inputs]))
    out = {}
    for info in inputs:
        if np.dtype(info.dtype).kind not in "iu":
            continue
        low_high = (given or {}).get(info.name) or everywhere or (
            (0, int(vocab[info.name])) if vocab and info.name in vocab else
            MASK_INT_RANGE if "mask" in info.name.lower() else DEFAULT_INT_RANGE)
        out[info.name] = _check_range(info, low_high)
    return out


def _check_range(info: TensorInfo, low_high: tuple[int, int]) -> tuple[int, int]:
    low, high = (int(x) for x in low_high)
    limits = np.iinfo(np.dtype(info.dtype))
    if not (limits.min <= low < high <= int(limits.max) + 1):
        raise InputError(f"integer range for input {info.name!r} is empty or does not fit {info.dtype}",
                         expected=f"LO:HI with {limits.min} <= LO < HI <= {int(limits.max) + 1} (HI excluded)",
                         received=f"{low}:{high}")
    return low, high


def resolve_shapes(inputs: Sequence[TensorInfo], *, dims: Mapping[str, int] | None = None,
                   shapes: Mapping[str, Sequence[int]] | None = None,
                   fixed: Mapping[str, Sequence[int]] | None = None) -> tuple[dict[str, tuple[int, ...]], list[str]]:
    """The shape of each input for random data, and what defaults were applied (to be printed).

    Sources, first wins: ``shapes[input]`` (``--shape``), ``fixed[input]`` (the policy's ``fixed_shapes``), then
    each dim: its static size, ``dims[name]`` (``--dim``), or 1 for a dim named like ``*batch*``. Any other
    symbolic dim without a size is an InputError naming it (never a silent 1).

    >>> resolve_shapes([TensorInfo("ids", ("batch", "seq"), "int64")], dims={"seq": 128})
    ({'ids': (1, 128)}, ["dim 'batch' = 1 (default for a batch dim; pass --dim batch=N)"])
    """
    dims, shapes, fixed = dict(dims or {}), dict(shapes or {}), dict(fixed or {})
    _check_names(inputs, dims, shapes)
    out, missing, defaults = {}, {}, []
    for info in inputs:
        whole = shapes.get(info.name) or fixed.get(info.name)
        if whole:
            out[info.name] = tuple(int(d) for d in whole)
            continue
        out[info.name] = tuple(_dim_size(info, i, d, dims, missing, defaults) for i, d in enumerate(info.shape or ()))
    if missing:
        _missing_dims(missing)
    return out, sorted(set(defaults))


def _dim_size(info: TensorInfo, axis: int, dim: Dim, dims: dict[str, int], missing: dict[str, list[str]],
              defaults: list[str]) -> int:
    if isinstance(dim, int) and dim > 0:
        return dim
    if isinstance(dim, str) and dim in dims:
        return int(dims[dim])
    if isinstance(dim, str) and DEFAULT_DIM_WORD in dim.lower():
        defaults.append(f"dim {dim!r} = 1 (default for a batch dim; pass --dim {dim}=N)")
        return 1
    missing.setdefault(dim if isinstance(dim, str) else f"{info.name}[{axis}]", []).append(info.name)
    return 1


def _missing_dims(missing: dict[str, list[str]]) -> None:
    named = [d for d in missing if not d.endswith("]")]
    listed = ", ".join(f"{d!r} (input {', '.join(sorted(set(ins)))})" for d, ins in missing.items())
    flag = f"--dim {named[0]}=N" if named else f"--shape {missing[next(iter(missing))][0]}=AxB"
    raise InputError(f"no size for the symbolic dim(s) {listed}", expected="a size for every symbolic dim of the "
                     "random inputs", received=f"no value for {', '.join(missing)}",
                     hint=f"pass {flag} (or --shape INPUT=AxB for a whole input); only dims named like "
                          f"'*{DEFAULT_DIM_WORD}*' default to 1")


def _check_names(inputs: Sequence[TensorInfo], dims: Mapping[str, int], shapes: Mapping[str, Any]) -> None:
    names = [i.name for i in inputs]
    symbolic = sorted({d for i in inputs for d in (i.shape or ()) if isinstance(d, str)})
    for name in shapes:
        if name not in names:
            raise InputError(f"--shape names {name!r}, which is not a model input", expected=_expected(inputs),
                             received=repr(name), hint=did_you_mean(name, names))
    for name, size in dims.items():
        if name not in symbolic:
            raise InputError(f"--dim names {name!r}, which is not a symbolic dim of the inputs",
                             expected=f"one of {', '.join(symbolic) or '(none: every dim is static)'}",
                             received=repr(name), hint=did_you_mean(name, symbolic))
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size <= 0:
            raise InputError(f"--dim {name} must be a positive integer", expected="NAME=N with N >= 1",
                             received=short_repr(size))


_ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 8: "object",
                9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64"}
_INDEX_PASS = frozenset({"Cast", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity"})


def onnx_inputs(proto: Any) -> list[TensorInfo]:
    """An ONNX model's inputs (initializers excluded) as TensorInfo, symbolic dims by name (None when unnamed).

    >>> [i.describe() for i in onnx_inputs(onnx.load("bert.onnx"))]   # doctest: +SKIP
    ['input_ids: int64[?, ?]', 'attention_mask: int64[?, ?]']
    """
    weights = {t.name for t in proto.graph.initializer}
    out = []
    for value in proto.graph.input:
        if value.name in weights:
            continue
        tensor = value.type.tensor_type
        shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim)
        out.append(TensorInfo(value.name, shape if tensor.HasField("shape") else None,
                              _ONNX_DTYPES.get(tensor.elem_type, "float32")))
    return out


def embedding_sizes(proto: Any) -> dict[str, int]:
    """Graph inputs that index an embedding (a Gather on an initializer, reached through Cast/Reshape/Unsqueeze/
    Squeeze/Flatten/Identity), with the number of rows: valid ids are ``[0, rows)``.

    >>> embedding_sizes(onnx.load("bert.onnx"))   # doctest: +SKIP
    {'input_ids': 30522}
    """
    graph = proto.graph
    rows = {t.name: int(t.dims[0]) for t in graph.initializer if len(t.dims) >= 1}
    inputs = {v.name for v in graph.input} - set(rows)
    producer = {o: n for n in graph.node for o in n.output}
    out: dict[str, int] = {}
    for node in graph.node:
        if node.op_type != "Gather" or len(node.input) < 2 or node.input[0] not in rows:
            continue
        if any(a.name == "axis" and a.i != 0 for a in node.attribute):
            continue
        name = node.input[1]
        while name in producer and producer[name].op_type in _INDEX_PASS:
            name = producer[name].input[0]
        if name in inputs:
            out[name] = min(out.get(name, rows[node.input[0]]), rows[node.input[0]])
    return out


def _random_shape(info: TensorInfo, fixed: Sequence[int] | None) -> tuple[int, ...]:
    shape = tuple(fixed) if fixed else tuple(d if isinstance(d, int) and d > 0 else 1 for d in (info.shape or ()))
    if any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 0 for d in shape):
        raise InputError(f"input {info.name!r}: invalid shape for random data", expected=info.describe(),
                         received=short_repr(list(shape)))
    _check_shape(info.name, shape, np.dtype(info.dtype), info)
    check_nbytes(info.name, shape, np.dtype(info.dtype), "as random data")
    return shape


def _random_array(rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype,
                  bounds: tuple[int, int] | None = None) -> np.ndarray:
    """Made in the target dtype (no float64 twice the size first)."""
    if dtype.kind in "iu":
        low, high = bounds or DEFAULT_INT_RANGE
        return rng.integers(low, high, size=shape, dtype=dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, size=shape, dtype=np.bool_)
    if dtype in (np.float32, np.float64):
        return rng.standard_normal(shape, dtype=dtype)
    if dtype.kind == "O":
        return np.full(shape, "", dtype=object)
    return rng.standard_normal(shape, dtype=np.float32).astype(dtype)


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
        self.fast = all(spec[0].kind != "O" for spec in self.spec.values())  # string inputs: every element checked
        # the device feeds of the last full check, by tensor_key, and its result
        self.last: tuple[tuple[tuple[str, tuple[Any, ...]], ...], dict[str, Any]] | None = None

    def quick(self, feeds: Any) -> bool:
        """True when ``feeds`` is a dict of C-contiguous numpy arrays that already match (the fast path alone:
        an engine with tensor feeds of its own tries this before its own check)."""
        return self.fast and type(feeds) is dict and len(feeds) == len(self.spec) and self._matches(feeds)

    def __call__(self, feeds: Any) -> dict[str, Any]:
        if self.fast and type(feeds) is dict and len(feeds) == len(self.spec):
            if self._matches(feeds):
                return feeds
            last = self.last
            if last is not None and all(tensor_key(feeds.get(name)) == key for name, key in last[0]):
                return dict(last[1])
        checked = normalize_feeds(feeds, self.inputs)
        if type(feeds) is dict:
            self.last = _device_record(feeds, checked)
        return checked

    def _matches(self, feeds: dict[str, Any]) -> bool:
        for name, value in feeds.items():
            spec = self.spec.get(name)
            if spec is None or type(value) is not np.ndarray or value.dtype != spec[0]:
                return False
            shape = value.shape
            if spec[1] is not None and len(shape) != spec[1] or not value.flags.c_contiguous:
                return False
            for axis, dim in spec[2]:
                if shape[axis] != dim:
                    return False
        for where in self.shared:  # usually none
            if len({feeds[name].shape[axis] for name, axis in where}) > 1:
                return False
        return True


def tensor_key(value: Any) -> tuple[Any, ...] | None:
    """What a check of a torch tensor depends on: the object, its address, shape, dtype and device; None for anything
    else, or a tensor that is not contiguous. Equal keys: the same tensor, not resized, re-pointed or re-strided in
    place since (a serving loop refilling one set of tensors pays these attribute reads instead of a full check)."""
    data_ptr = getattr(value, "data_ptr", None)
    if data_ptr is None or not value.is_contiguous():
        return None
    return id(value), data_ptr(), value.shape, value.dtype, value.device


def _device_record(feeds: dict[str, Any], checked: dict[str, Any]) -> Any:
    """What :class:`FeedChecker` remembers of device feeds it checked: each feed's :func:`tensor_key`, and the
    result; None unless every feed is a torch CUDA tensor wrapped as it is (the wrapper keeps it alive, so its id
    cannot be reused while remembered)."""
    record = []
    for name, value in feeds.items():
        wrapped, key = checked.get(name), tensor_key(value)
        if not isinstance(wrapped, DeviceArray) or wrapped.owner is not value or key is None:
            return None
        record.append((name, key))
    return tuple(record), checked


#: kinds of caller-owned output buffers: host numpy arrays, torch tensors (any device), CUDA arrays (cupy, ...)
OUTPUT_BUFFER_KINDS = ("numpy", "torch", "cuda")


def check_output_buffer(name: str, buffer: Any, info: TensorInfo,
                        accepts: Sequence[str] = OUTPUT_BUFFER_KINDS, device: Any = None) -> None:
    """A caller-owned output, checked before any engine writes into it: a kind the engine ``accepts``
    (:data:`OUTPUT_BUFFER_KINDS`), writable, C-contiguous, with the output's dtype, rank and static dims.

    An engine that accepts ``"cuda"`` takes a torch tensor on a CUDA device as a CUDA array (it binds the tensor's
    memory through ``__cuda_array_interface__``); a torch tensor on the CPU is then refused (pass a numpy array,
    ``t.numpy()`` shares its memory). Such a device buffer must sit on the engine's ``device`` (a runtime
    ``Device``; ``None`` skips that check): another CUDA index, or any CUDA buffer beside a CPU session, is refused.

    A read-only buffer (``np.load(f, mmap_mode="r")``, ``np.frombuffer(bytes(16))``, a read-only CUDA array) is an
    :class:`InputError`: an engine would write into it regardless (ONNX Runtime crashed the process on the first).

    >>> check_output_buffer("y", np.frombuffer(bytes(16), np.float32), TensorInfo("y", (4,), "float32"))
    Traceback (most recent call last):
    xpuruntime.errors.InputError: preallocated output 'y' is read-only
    ...
    """
    kind = _buffer_kind(buffer)
    as_cuda = kind == "cuda" or kind == "torch" and "torch" not in accepts and bool(getattr(buffer, "is_cuda", False))
    if kind is None or kind not in accepts and not (as_cuda and "cuda" in accepts):
        raise InputError(f"preallocated output {short_repr(name)} is not a buffer this engine can write",
                         expected=f"{' or '.join(_KIND_WORDS[k] for k in accepts)}, {info.describe()}",
                         received=_KIND_WORDS.get(kind or "", type(buffer).__name__),
                         hint="pass a numpy array (np.empty(shape, dtype)); for a DLPack tensor on the CPU, "
                              "np.from_dlpack(t)")
    shape, dtype, problem = _buffer_facts(kind, buffer)
    if problem:
        raise InputError(f"preallocated output {short_repr(name)} {problem}", expected="a writable, C-contiguous "
                         f"buffer: {info.describe()}", received=f"{dtype}{list(shape)}",
                         hint="allocate it with np.empty(shape, dtype) (or .contiguous() / .detach() a tensor)")
    fits = info.shape is None or len(shape) == len(info.shape) and all(
        not isinstance(want, int) or want < 0 or got == want for got, want in zip(shape, info.shape))
    fits = fits and _dtype_name(dtype) == _dtype_name(info.dtype)
    if not fits:
        raise InputError(f"preallocated output {short_repr(name)} does not fit the output", expected=info.describe(),
                         received=f"{dtype}{list(shape)}", hint="allocate it with the output's dtype and shape")
    if as_cuda and device is not None:
        _check_buffer_device(name, buffer, device)


def _check_buffer_device(name: str, buffer: Any, device: Any) -> None:
    """A CUDA buffer an engine binds as it is must live on the engine's own device."""
    index = _device_id(buffer)
    kind = getattr(device, "kind", None)
    want = int(getattr(device, "index", None) or getattr(device, "id", None) or 0)  # a DeviceSpec or a Device
    if kind == "cpu" or kind == "cuda" and index != want:
        raise InputError(f"preallocated output {short_repr(name)} is on another device than the session",
                         expected=f"a buffer on {device}" if kind == "cuda" else "a numpy array (the session runs "
                                  "on the CPU)", received=f"a buffer on cuda:{index}",
                         hint=f"allocate it on {device}" if kind == "cuda" else "pass np.empty(shape, dtype)")


def check_output_dims(name: str, shape: tuple[int, ...], info: TensorInfo, inputs: Sequence[TensorInfo],
                      feeds: Mapping[str, Any]) -> None:
    """An output buffer's dims named like an input's (``y: [n, 4]`` beside ``x: [n, 8]``) must equal the feed's."""
    sizes: dict[str, int] = {}
    for inp in inputs:
        value = feeds.get(inp.name)
        if inp.shape is not None and value is not None and len(getattr(value, "shape", ())) == len(inp.shape):
            sizes.update({d: int(n) for d, n in zip(inp.shape, value.shape) if isinstance(d, str)})
    for axis, dim in enumerate(info.shape or ()):
        if isinstance(dim, str) and dim in sizes and shape[axis] != sizes[dim]:
            raise InputError(f"preallocated output {short_repr(name)} does not fit these feeds",
                             expected=f"{info.describe()} with {dim} = {sizes[dim]} (from the feeds)",
                             received=str(list(shape)), hint="allocate it for this run's input shapes")


_KIND_WORDS = {"numpy": "a numpy array", "torch": "a torch tensor", "cuda": "a CUDA array (torch, cupy, ...)"}


def _buffer_kind(buffer: Any) -> str | None:
    if isinstance(buffer, np.ndarray) and not isinstance(buffer, np.ma.MaskedArray):
        return "numpy"
    torch = sys.modules.get("torch")  # a torch tensor exists only once torch is imported
    if torch is not None and isinstance(buffer, torch.Tensor):
        return "torch"
    if getattr(buffer, "__cuda_array_interface__", None) is not None:
        return "cuda"
    return None


def _dtype_name(dtype: Any) -> str:
    try:
        return np.dtype(dtype).name
    except TypeError:  # bfloat16 and other types numpy lacks: by name
        return str(dtype).removeprefix("torch.")


def _buffer_facts(kind: str, buffer: Any) -> tuple[tuple[int, ...], Any, str | None]:
    """(shape, dtype, what makes it unusable or None)."""
    if kind == "numpy":
        problem = None if buffer.flags.writeable else "is read-only"
        problem = problem or (None if buffer.flags.c_contiguous else "is not C-contiguous")
        return tuple(buffer.shape), buffer.dtype, problem
    if kind == "torch":
        problem = "requires grad (an engine cannot write into it)" if buffer.requires_grad else None
        problem = problem or (None if buffer.is_contiguous() else "is not contiguous")
        return tuple(buffer.shape), str(buffer.dtype).removeprefix("torch."), problem
    cai = buffer.__cuda_array_interface__
    shape, dtype = tuple(cai["shape"]), np.dtype(cai["typestr"])
    readonly = bool(cai["data"][1])
    strided = cai.get("strides") is not None and tuple(cai["strides"]) != _c_strides(shape, dtype)
    return shape, dtype, "is read-only" if readonly else "is not C-contiguous" if strided else None


def load_array_file(path: str | os.PathLike[str], name: str | None = None) -> np.ndarray:
    """Read one array from a ``.npy`` file, checked before anything is allocated.

    The file must be a regular file (a FIFO would block the read, a device never end); its header is read and
    checked first: a ``.npy`` magic, no pickled objects, a size within :func:`max_input_bytes`, and a file long
    enough to hold the data it declares. Every failure is an :class:`~xpuruntime.errors.InputError`.

    >>> load_array_file("x.npy").shape                        # doctest: +SKIP
    (1, 16)
    """
    label = name if name is not None else str(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except ValueError:  # a NUL in the name
        raise _file_error(label, repr(os.fspath(path)), "not a file name (it holds a NUL)") from None
    except OSError as exc:
        raise _file_error(label, path, exc.strerror or str(exc)) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise _file_error(label, path, "not a regular file (a FIFO, device or folder)")
    with os.fdopen(fd, "rb") as fh:
        header = _npy_header(fh, label, path)
        _check_header(label, path, header, st.st_size - fh.tell())
        fh.seek(0)
        try:
            return np.lib.format.read_array(fh, allow_pickle=False)
        except (OSError, ValueError, OverflowError) as exc:  # e.g. dims whose product passes intp beside a 0
            raise _file_error(label, path, str(exc)) from None


def _file_error(label: str, path: str | os.PathLike[str], why: str) -> InputError:
    return InputError(f"cannot read input {label!r} from {os.fspath(path)}: {why}",
                      expected="a regular .npy file saved by numpy.save (no pickled objects)",
                      received=short_repr(os.fspath(path)))


def _npy_header(fh: Any, label: str, path: str | os.PathLike[str]) -> tuple[tuple[int, ...], bool, np.dtype]:
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fh)
        readers = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}
        if version not in readers:
            raise ValueError(f".npy format version {version[0]}.{version[1]} is not supported (1.0 and 2.0 are)")
        return readers[version](fh)
    except (OSError, ValueError, SyntaxError, TypeError, OverflowError) as exc:
        raise _file_error(label, path, f"not a .npy file ({exc})") from None


def _check_header(label: str, path: str | os.PathLike[str], header: tuple[Any, bool, np.dtype], left: int) -> None:
    shape, _, dtype = header
    if any(isinstance(d, bool) or not isinstance(d, int) or not 0 <= d <= _MAX_DIM for d in shape):
        raise _file_error(label, path, f"its header declares an invalid shape {short_repr(shape)}")
    if dtype.hasobject:
        raise _file_error(label, path, "it holds Python objects, which would need pickle")
    nbytes = check_nbytes(label, shape, dtype, "as declared by the .npy header")
    if left < nbytes:
        raise _file_error(label, path, f"truncated: its header declares {dtype}{list(shape)} ({nbytes} bytes) "
                                       f"but only {left} bytes follow")
