"""Model variants made with ONNX Runtime's own tools: a float16 copy, a dynamically quantised int8 copy.

Results are cached by model hash + policy hash + fingerprint under ``cache_dir/onnxruntime``
through :mod:`xpuruntime._cache` (a private folder, atomic writes, a checksum per entry, one
builder at a time across processes); without a cache_dir the last few live in memory. An entry
that fails its checksum or does not parse is rebuilt with a warning, never used.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from xpuruntime import _cache
from xpuruntime.errors import ModelLoadError, UnsupportedOperationError
from xpuruntime.inference.models import ModelSource

__all__ = ["convert"]

_memory: OrderedDict[str, ModelSource] = OrderedDict()  # only without a cache_dir: the disk is the cache
_MEMORY_ENTRIES = 4
_lock = threading.Lock()


def convert(model: ModelSource, variant: str, cache_dir: str | None, key: str) -> ModelSource:
    """The ``fp16`` or ``int8`` variant of a model, from the cache when present."""
    if model.has_external_data():
        raise UnsupportedOperationError(f"{variant} conversion of a model with external data is not supported",
                                        expected="a self-contained .onnx model", received=model.description,
                                        hint="convert it offline, or use precision='fp32'")
    name = f"{key}-{variant}.onnx"
    with _lock:
        if cache_dir:
            return _from_disk(cache_dir, name, model, variant)
        if name not in _memory:
            _memory[name] = _build(model, variant)
        _memory.move_to_end(name)
        while len(_memory) > _MEMORY_ENTRIES:
            _memory.popitem(last=False)
        return _memory[name]


def _from_disk(cache_dir: str, name: str, model: ModelSource, variant: str) -> ModelSource:
    """Under the entry's lock: a second process building the same copy waits, then reads it."""
    try:
        folder = _cache.private_folder(cache_dir, "onnxruntime")
    except _cache.CacheUnavailable as exc:
        warnings.warn(f"{exc}; the {variant} copy is built without a cache", RuntimeWarning, stacklevel=6)
        return _build(model, variant)
    with _cache.entry_lock(folder, name):
        cached = _read_cache(folder, name, model, variant)
        if cached is not None:
            return cached
        result = _build(model, variant)
        _cache.write_entry(folder, name, result.data or b"", warn_stacklevel=7)
    return result


def _note(variant: str) -> str:
    return {"fp16": "float16 copy made with onnxruntime.transformers.float16 (inputs and outputs kept float32)",
            "int8": "int8 copy made with onnxruntime.quantization.quantize_dynamic (weights QInt8)"}[variant]


def _build(model: ModelSource, variant: str) -> ModelSource:
    proto = _fp16(model.proto) if variant == "fp16" else _int8(model.proto)
    return model.replaced(proto, _note(variant))


def _fp16(proto: Any) -> Any:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    try:
        return convert_float_to_float16(proto, keep_io_types=True)
    except Exception as exc:  # the converter raises plain exceptions on models it cannot handle
        raise UnsupportedOperationError(f"the float16 converter failed: {exc}", expected="a float32 model",
                                        received="a model the converter rejects") from None


def _int8(proto: Any) -> Any:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="xpuruntime-int8-") as folder, _quiet_root_logger():
        out = Path(folder) / "int8.onnx"
        try:
            quantize_dynamic(proto, out, weight_type=QuantType.QInt8)
        except Exception as exc:
            raise UnsupportedOperationError(f"dynamic int8 quantisation failed: {exc}",
                                            expected="a float32 model with MatMul/Gemm/Conv weights",
                                            received="a model quantize_dynamic rejects",
                                            hint="quantise it offline (static QDQ) and pass precision='fp32'") from None
        return onnx.load(str(out))


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """quantize_dynamic logs advice on the root logger at WARNING; keep the user's console clean."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _read_cache(folder: Path, name: str, model: ModelSource, variant: str) -> ModelSource | None:
    data = _cache.read_entry(folder, name, warn_stacklevel=8)
    if data is None:
        return None
    try:
        from xpuruntime.inference.models import load_model_source

        cached = load_model_source(data)
    except ModelLoadError:  # the checksum matched bytes that are not a model: written by someone else
        warnings.warn(f"cache entry {folder / name} is corrupt (not a model); rebuilding it", RuntimeWarning,
                      stacklevel=7)
        return None
    cached.notes = [*model.notes, _note(variant) + f" (cached: {name})"]
    cached.description = model.description
    return cached
