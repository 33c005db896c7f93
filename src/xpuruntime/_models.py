"""Model sources: a path, bytes or an ``onnx.ModelProto``, checked before any engine sees them.

Checked statically, without loading any weights: the bytes parse as a model with a graph, every
string in it is UTF-8, and every external-data reference names a regular file inside the model's
own folder (no absolute path, no ``..``, no symlink that leads out, no FIFO, and long enough for
the offset and length it claims). A model given as bytes or a ModelProto has no folder, so it may
not reference external data at all. Nothing outside the model's folder is ever opened.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
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
        return any(_is_external(t) for t in _tensors(self.proto))

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
        _check_external_data(src.proto, None)
        return src
    if type(model).__name__ == "ModelProto" and hasattr(model, "SerializeToString"):
        src = ModelSource(data=model.SerializeToString(), description="<onnx.ModelProto>")
        src._proto = model
        _check_strings(model, src.description)
        _check_external_data(model, None)
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
    _check_external_data(src.proto, src.folder)  # parses now: a corrupt file fails here, not deep in an engine
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
    _check_strings(proto, where)
    return proto


def _check_strings(proto: Any, where: str) -> None:
    """Protobuf hands back a string field that is not UTF-8 as bytes; engines then fail on it in odd places.
    Only string and message fields are read: weights (bytes and numbers) are never copied."""
    from google.protobuf.descriptor import FieldDescriptor

    stack: list[tuple[Any, str]] = [(proto, "model")]
    while stack:
        message, path = stack.pop()
        for field_ in message.DESCRIPTOR.fields:
            if field_.type not in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_MESSAGE):
                continue
            value = getattr(message, field_.name)
            if field_.type == FieldDescriptor.TYPE_MESSAGE:
                if hasattr(value, "ListFields"):  # a single message: only when set
                    stack += [(value, f"{path}.{field_.name}")] if message.HasField(field_.name) else []
                else:
                    stack += [(v, f"{path}.{field_.name}[{i}]") for i, v in enumerate(value)]
            elif not all(isinstance(v, str) for v in ([value] if isinstance(value, (str, bytes)) else value)):
                raise ModelLoadError(f"not a valid ONNX model: {where}", expected="UTF-8 names and strings",
                                     received=f"bytes that are not UTF-8 in {path}.{field_.name}",
                                     hint="the file is damaged, or was written by a broken exporter; re-export it")


# -- external data ------------------------------------------------------------------------
_EXTERNAL = 1  # onnx.TensorProto.EXTERNAL


def _tensors(proto: Any) -> Iterator[Any]:
    """Every TensorProto of a model: initializers, sparse ones, node attributes, subgraphs and functions."""
    graphs, nodes = [proto.graph], [n for f in proto.functions for n in f.node]
    while graphs or nodes:
        if graphs:
            graph = graphs.pop()
            yield from graph.initializer
            for sparse in graph.sparse_initializer:
                yield from (sparse.values, sparse.indices)
            nodes += list(graph.node)
            continue
        for attr in nodes.pop().attribute:
            yield from ([attr.t] if attr.HasField("t") else []) + list(attr.tensors)
            for sparse in ([attr.sparse_tensor] if attr.HasField("sparse_tensor") else []) + list(attr.sparse_tensors):
                yield from (sparse.values, sparse.indices)
            graphs += ([attr.g] if attr.HasField("g") else []) + list(attr.graphs)


def _is_external(tensor: Any) -> bool:
    return tensor.data_location == _EXTERNAL or any(e.key == "location" for e in tensor.external_data)


def _check_external_data(proto: Any, folder: Path | None) -> None:
    """Every external-data file must be a regular file inside ``folder``, long enough for what the tensor claims."""
    sizes: dict[str, int] = {}
    for tensor in _tensors(proto):
        if not _is_external(tensor):
            continue
        entries = {e.key: e.value for e in tensor.external_data}
        location = entries.setdefault("location", "")
        if folder is None:
            raise _external_error(tensor, location, "the model was given as bytes or a ModelProto, so it has no "
                                  "folder to read external data from", "pass the path of the .onnx file instead")
        if location not in sizes:
            sizes[location] = _external_file_size(tensor, location, folder)
        _check_extent(tensor, entries, sizes[location])


def _external_file_size(tensor: Any, location: str, folder: Path) -> int:
    parts = location.replace("\\", "/").split("/")
    if not location or "\x00" in location or os.path.isabs(location) or location[1:2] == ":" or ".." in parts:
        raise _external_error(tensor, location, "the location must be a relative path inside the model's folder",
                              "keep external data files beside the model (onnx.save(..., location='weights.bin'))")
    root = folder.resolve()
    target = (root / location).resolve()
    if not target.is_relative_to(root):
        raise _external_error(tensor, location, f"it resolves to {target}, outside the model's folder {root} "
                              "(through a symlink)", "copy the file into the model's folder")
    try:
        st = os.stat(target)
    except OSError as exc:
        raise _external_error(tensor, location, f"the file cannot be read ({exc.strerror})",
                              "copy the external data file beside the model") from None
    if not stat.S_ISREG(st.st_mode):
        raise _external_error(tensor, location, "it is not a regular file (a FIFO, device or folder)", None)
    return st.st_size


def _check_extent(tensor: Any, entries: dict[str, str], size: int) -> None:
    try:
        offset, length = int(entries.get("offset") or 0), int(entries.get("length") or 0)
    except ValueError:
        raise _external_error(tensor, entries["location"], "its offset or length is not an integer", None) from None
    if offset < 0 or length < 0 or offset + length > size:
        raise _external_error(tensor, entries["location"], f"bytes {offset}..{offset + length} were asked of a "
                              f"file of {size} bytes (truncated?)", "copy the complete external data file again")


def _external_error(tensor: Any, location: str, why: str, hint: str | None) -> ModelLoadError:
    return ModelLoadError(f"tensor {tensor.name!r} refers to external data that will not be read: {why}",
                          expected="external data in regular files inside the model's folder",
                          received=f"location {location!r}", hint=hint)
