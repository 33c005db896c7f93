"""Model sources: a path, bytes or an ``onnx.ModelProto``, checked before any engine sees them."""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from xpuruntime.errors import ModelLoadError

__all__ = ["ModelSource", "load_model_source"]

_HASH_CHUNK = 1 << 20


@dataclass
class ModelSource:
    """A validated model: where it came from, its bytes (or path) and a content hash."""

    path: Path | None = None
    data: bytes | None = None
    description: str = ""
    notes: list[str] = field(default_factory=list)
    _proto: Any = None

    @cached_property
    def hash(self) -> str:
        """SHA-256 of the model bytes (external data files not included)."""
        if self.data is not None:
            return hashlib.sha256(self.data).hexdigest()
        digest = hashlib.sha256()
        with open(self.path, "rb") as fh:  # type: ignore[arg-type]
            for chunk in iter(lambda: fh.read(_HASH_CHUNK), b""):
                digest.update(chunk)
        return digest.hexdigest()

    @property
    def proto(self) -> Any:
        """The parsed ``onnx.ModelProto`` (external data not loaded); parsed on first use."""
        if self._proto is None:
            self._proto = _parse(self.data if self.data is not None else self.path.read_bytes(),  # type: ignore
                                 self.description)
        return self._proto

    @property
    def folder(self) -> Path | None:
        return self.path.parent if self.path else None

    def has_external_data(self) -> bool:
        from onnx.external_data_helper import uses_external_data

        return any(uses_external_data(t) for t in self.proto.graph.initializer)

    def replaced(self, proto: Any, note: str) -> ModelSource:
        """A copy holding a modified model (bytes), with a note saying what changed."""
        new = ModelSource(path=None, data=proto.SerializeToString(), description=self.description,
                          notes=[*self.notes, note])
        new._proto = proto
        return new


def load_model_source(model: Any) -> ModelSource:
    """Check a model argument and wrap it; bad input raises ModelLoadError saying what to pass."""
    if isinstance(model, ModelSource):
        return model
    if isinstance(model, (str, os.PathLike)):
        return _from_path(Path(model))
    if isinstance(model, (bytes, bytearray, memoryview)):
        data = bytes(model)
        if not data:
            raise ModelLoadError("the model bytes are empty", expected="a serialized ONNX model", received="0 bytes")
        src = ModelSource(data=data, description=f"<{len(data)} bytes>")
        src._proto = _parse(data, src.description)
        return src
    if type(model).__name__ == "ModelProto" and hasattr(model, "SerializeToString"):
        src = ModelSource(data=model.SerializeToString(), description="<onnx.ModelProto>")
        src._proto = model
        return src
    raise ModelLoadError("unsupported model argument", expected="a path, bytes or an onnx.ModelProto",
                         received=type(model).__name__)


def _from_path(path: Path) -> ModelSource:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ModelLoadError("model file not found", expected="an existing .onnx file", received=str(path),
                             hint="check the path (relative paths start from the current directory)") from None
    except OSError as exc:
        raise ModelLoadError(f"cannot access the model: {exc.strerror}", expected="a readable .onnx file",
                             received=str(path)) from None
    if stat.S_ISDIR(st.st_mode):
        raise ModelLoadError("the model path is a directory", expected="an .onnx file", received=str(path),
                             hint="point at the .onnx file inside it")
    if not stat.S_ISREG(st.st_mode):
        raise ModelLoadError("the model path is not a regular file", expected="an .onnx file",
                             received=f"{path} (a FIFO, socket or device)")
    if st.st_size == 0:
        raise ModelLoadError("the model file is empty", expected="a serialized ONNX model", received=f"{path} (0 bytes)")
    src = ModelSource(path=path.resolve(), description=str(path))
    src.proto  # parse now: a corrupt file fails here with a clear message, not deep in an engine
    return src


def _parse(data: bytes, where: str) -> Any:
    import onnx
    from google.protobuf.message import DecodeError

    try:
        proto = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError, TypeError, OSError) as exc:
        raise ModelLoadError(f"not a valid ONNX model: {where}", expected="a serialized onnx.ModelProto",
                             received=f"{len(data)} bytes that do not parse ({type(exc).__name__}: {exc})",
                             hint="check the file is complete (not truncated) and really an .onnx model") from None
    if not proto.HasField("graph") or not proto.graph.node and not proto.graph.output:
        raise ModelLoadError(f"not a valid ONNX model: {where}", expected="a model with a graph",
                             received="a protobuf message without a graph",
                             hint="check the file is an .onnx model, not another format")
    return proto
