"""``run --output DIR``: one ``.npy`` per output, written only inside DIR, under safe file names.

Output names come from the model, so they are never paths: ``../../x``, ``/abs/x``, ``a/b``, a NUL, a control
character or 300 characters all become plain file names inside DIR (``[A-Za-z0-9._-]`` kept, the rest ``_``,
at most 100 characters, numbered when two would collide). ``outputs.json`` maps each output name to its file.

    $ xpuruntime run model.onnx --random-inputs -o out/
    $ cat out/outputs.json
    {"y": "y.npy", "../../x": "x-1.npy"}
"""

from __future__ import annotations

import io
import json
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from xpuruntime._io import UnsafePathError, atomic_write_bytes, atomic_write_text, describe_node
from xpuruntime.errors import InputError, safe_text

__all__ = ["INDEX", "REPORT", "check_output_folder", "output_file_names", "write_output_folder"]

INDEX = "outputs.json"  #: output name -> file name, in DIR
REPORT = "report.json"  #: the receipt, in DIR
_MAX_STEM = 100
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]")


def check_output_folder(folder: Path) -> None:
    """Before the run: DIR is a folder or absent (its parent then must exist or be creatable), never a file,
    symlink, FIFO or device.

    >>> check_output_folder(Path("out"))   # doctest: +SKIP
    """
    try:
        st = os.lstat(folder)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise InputError(f"cannot use --output {safe_text(str(folder))}: {exc.strerror}",
                         expected="a folder", received=safe_text(str(folder))) from None
    if not stat.S_ISDIR(st.st_mode):
        kind = describe_node(st)
        raise UnsafePathError(f"--output {safe_text(str(folder))} is {kind}, not a folder",
                              expected="a new or existing folder (run writes one .npy per output into it)",
                              received=kind, hint="name a folder, e.g. --output out/")


def _stem(name: str) -> str:
    stem = _UNSAFE_CHARS.sub("_", name).lstrip(".")[:_MAX_STEM]
    return stem or "output"


def output_file_names(names: list[str]) -> dict[str, str]:
    """Output name -> a safe ``.npy`` file name, unique (case-insensitively) and never the index or report.

    >>> output_file_names(["y", "../../x", "a/b", "Y"])
    {'y': 'y.npy', '../../x': '_.._x.npy', 'a/b': 'a_b.npy', 'Y': 'Y-1.npy'}
    """
    taken = {INDEX.lower(), REPORT.lower()}
    files: dict[str, str] = {}
    for index, name in enumerate(names):
        stem = _stem(name)
        file = f"{stem}.npy"
        if file.lower() in taken:
            file = f"{stem}-{index}.npy"
        taken.add(file.lower())
        files[name] = file
    return files


def _npy(name: str, value: Any) -> bytes:
    arr = np.asarray(value)
    if arr.dtype.kind == "O":  # string outputs come back as object arrays of str
        try:
            arr = arr.astype(np.str_)
        except (TypeError, ValueError):
            raise InputError(f"output {safe_text(repr(name))} cannot be saved as .npy", expected="numbers or text",
                             received=f"an object array of {type(arr.flat[0]).__name__}" if arr.size else "objects",
                             hint="drop --output, or use the Python API") from None
    buffer = io.BytesIO()
    np.save(buffer, arr, allow_pickle=False)
    return buffer.getvalue()


def write_output_folder(folder: Path, outputs: Mapping[str, Any], report_json: str, overwrite: bool) -> dict[str, str]:
    """Write each output as ``.npy``, the index and the receipt into ``folder``; returns the index."""
    check_output_folder(folder)
    files = output_file_names(list(outputs))
    data = {files[name]: _npy(name, value) for name, value in outputs.items()}  # every one converts before writing
    folder.mkdir(parents=True, exist_ok=True)
    check_output_folder(folder)
    taken = [n for n in [*data, INDEX, REPORT] if os.path.lexists(folder / n)]
    if taken and not overwrite:
        raise InputError(f"{safe_text(str(folder))} already holds {safe_text(', '.join(taken))}",
                         expected="an empty or new folder", received=safe_text(str(folder)),
                         hint="choose another --output folder or pass --overwrite")
    for file_name, payload in data.items():
        atomic_write_bytes(folder / file_name, payload)
    atomic_write_text(folder / INDEX, json.dumps(files, indent=2, ensure_ascii=True) + "\n")
    atomic_write_text(folder / REPORT, report_json)
    return files
