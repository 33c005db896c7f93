"""Fixtures for the reliability tests; models and the engine list live in ``_rel_models``."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("onnx")

from _rel_models import ONNX_ENGINES  # noqa: E402
from onnx import numpy_helper  # noqa: E402

from xpuruntime.inference.samples import matmul_relu  # noqa: E402


@pytest.fixture(params=ONNX_ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    """Each installed engine that takes ONNX models on the CPU."""
    return request.param


@pytest.fixture(scope="session")
def mm() -> Any:
    return matmul_relu(k=8, n=4)


@pytest.fixture(scope="session")
def mm_weight(mm: Any) -> np.ndarray:
    return numpy_helper.to_array(mm.graph.initializer[0])


# -- hostile paths: what a user (or an attacker) may name where a file is expected ------------------------------
def _npy_header(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def _char_device(folder: Path) -> Path | None:
    """A character device to aim writes at. As root, a private null device made here (so a regression replaces
    a node in the test folder, never the system's /dev/null); otherwise /dev/null itself, which a non-root
    process cannot replace anyway."""
    if os.geteuid() != 0:
        return Path("/dev/null")
    node = folder / "null-device"
    try:
        os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except (OSError, AttributeError):
        return None
    return node


def _socket(folder: Path) -> Path | None:
    import socket

    path = folder / "sock"
    if len(os.fsencode(path)) > 100:  # AF_UNIX paths are short
        return None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(os.fspath(path))
    return path


@pytest.fixture
def hostile_paths(tmp_path: Path) -> dict[str, Path]:
    """A folder of things that are not what a path is expected to name, name -> path.

    Nodes that are not regular files (``fifo``, ``char_device``, ``dev_null``, ``socket``, ``dir``), symlinks
    (``symlink_to_file`` pointing at ``link_target``, ``dangling_symlink``, ``symlink_to_dir``, ``symlink_to_fifo``),
    regular files with odd content (``huge_npy``: a 200-byte .npy whose header claims 4 TiB; ``truncated_npy``,
    ``object_npy`` (pickled objects), ``npz``, ``not_npy``, ``empty``) and odd names (``odd_name``: spaces, a
    newline, a leading dash, non-ASCII; ``long_name``: 255 bytes). ``regular`` is a plain file of mode 0o640.
    Entries a platform or user cannot make (a socket in a long folder, a device node without the right) are absent.
    """
    folder = tmp_path / "hostile"
    folder.mkdir()
    paths: dict[str, Path | None] = {"dir": folder / "a-folder", "fifo": folder / "fifo",
                                     "link_target": folder / "link-target.txt", "regular": folder / "regular.txt"}
    paths["dir"].mkdir()
    os.mkfifo(paths["fifo"])
    paths["link_target"].write_text("the target's own content\n")
    paths["regular"].write_text("a regular file\n")
    os.chmod(paths["regular"], 0o640)
    for name, target in (("symlink_to_file", paths["link_target"]), ("dangling_symlink", folder / "nowhere" / "x"),
                         ("symlink_to_dir", paths["dir"]), ("symlink_to_fifo", paths["fifo"])):
        paths[name] = folder / name
        paths[name].symlink_to(target)
    paths["char_device"], paths["dev_null"], paths["socket"] = _char_device(folder), Path("/dev/null"), _socket(folder)
    files = {"huge_npy": _npy_header((2**20, 2**20)) + b"\0" * 72,
             "truncated_npy": _npy_header((1000,)) + b"\0" * 10,
             "not_npy": b"x = 1\n", "empty": b"",
             "-odd name \n ü.npy": None, "l" * 251 + ".npy": None}
    for name, data in files.items():
        key = {"-odd name \n ü.npy": "odd_name", "l" * 251 + ".npy": "long_name"}.get(name, name)
        paths[key] = folder / (name + (".npy" if key.endswith("_npy") else ""))
        if data is None:
            np.save(paths[key], np.arange(4, dtype=np.float32))
        else:
            paths[key].write_bytes(data)
    paths["object_npy"] = folder / "object.npy"
    np.save(paths["object_npy"], np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    paths["npz"] = folder / "arrays.npz"
    np.savez(paths["npz"], x=np.ones(3, np.float32))
    return {name: path for name, path in paths.items() if path is not None}

