"""Cache folders: every level xpuruntime creates is 0o700; only folders xpuruntime created are tightened.

Pointing ``cache_dir`` at a shared folder that already holds ``onnxruntime/`` or ``openvino/`` must not lock the
others out: a folder the user made keeps its mode. A folder xpuruntime made carries a marker and is made private
again if someone opens it. (test_cache_safety.py covers entries, checksums, symlinks and races.)
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from xpuruntime import InferenceSession, _cache
from xpuruntime.inference.samples import matmul_relu

SUBFOLDER = {"onnxruntime": "onnxruntime", "openvino": "openvino"}


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture(autouse=True)
def open_umask() -> Iterator[None]:
    old = os.umask(0o022)  # what most users run with: makedirs would give parents 0o755
    yield
    os.umask(old)


def cached_session(engine: str, cache_dir: Path) -> InferenceSession:
    """A session that writes into cache_dir: ONNX Runtime's int8 copy, OpenVINO's compiled blobs."""
    ex = {"cache_dir": str(cache_dir), "fallback": "allow"}
    sess = InferenceSession(matmul_relu(k=8, n=4), engine=engine,
                            exec_policy={**ex, "precision": "int8"} if engine == "onnxruntime" else ex)
    sess.run({"x": np.ones((2, 8), np.float32)})
    return sess


def test_every_level_created_is_private(tmp_path: Path) -> None:
    root = tmp_path / "a" / "b" / "cache"
    folder = _cache.private_folder(root, "onnxruntime", "sub")
    assert [mode(p) for p in (tmp_path / "a", tmp_path / "a" / "b", root, root / "onnxruntime", folder)] == [0o700] * 5


def test_what_existed_before_is_left_as_it_was(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o1777)  # a sticky, world-writable team folder
    (shared / "onnxruntime").mkdir()
    os.chmod(shared / "onnxruntime", 0o775)  # made by the user, not by xpuruntime
    _cache.private_folder(shared, "onnxruntime")
    _cache.private_folder(shared, "openvino")
    assert mode(shared) == 0o1777 and mode(shared / "onnxruntime") == 0o775  # untouched
    assert mode(shared / "openvino") == 0o700 and (shared / "openvino" / _cache.MARKER).is_file()  # created: ours


def test_a_folder_of_ours_opened_later_is_tightened_again(tmp_path: Path) -> None:
    folder = _cache.private_folder(tmp_path, "openvino")
    os.chmod(folder, 0o755)
    _cache.private_folder(tmp_path, "openvino")
    assert mode(folder) == 0o700


@pytest.mark.parametrize("planted", ["symlink", "folder"])
def test_a_planted_marker_does_not_make_a_folder_ours(tmp_path: Path, planted: str) -> None:
    (tmp_path / "onnxruntime").mkdir()
    os.chmod(tmp_path / "onnxruntime", 0o755)
    marker = tmp_path / "onnxruntime" / _cache.MARKER
    if planted == "symlink":
        (tmp_path / "elsewhere").write_text("")
        marker.symlink_to(tmp_path / "elsewhere")
    else:
        marker.mkdir()
    _cache.private_folder(tmp_path, "onnxruntime")
    assert mode(tmp_path / "onnxruntime") == 0o755


def test_a_user_made_engine_folder_keeps_its_mode_through_real_sessions(engine: str, tmp_path: Path) -> None:
    mine = tmp_path / SUBFOLDER[engine]
    mine.mkdir()
    os.chmod(mine, 0o750)  # shared with the group on purpose
    first, second = cached_session(engine, tmp_path), cached_session(engine, tmp_path)
    assert mode(mine) == 0o750 and first.report.to_dict() and second.report.to_dict()
    entries = [p for p in mine.rglob("*") if p.name != _cache.MARKER]
    assert entries and all(mode(p) == (0o700 if p.is_dir() else 0o600) for p in entries), \
        {p.name: oct(mode(p)) for p in entries}  # what xpuruntime writes inside is private all the same


def test_a_new_cache_dir_is_private_at_every_level_through_real_sessions(engine: str, tmp_path: Path) -> None:
    root = tmp_path / "new" / "cache"
    cached_session(engine, root)
    folders = [tmp_path / "new", root, *[p for p in root.rglob("*") if p.is_dir()]]
    assert len(folders) >= 3 and all(mode(p) == 0o700 for p in folders), {str(p): oct(mode(p)) for p in folders}


def test_the_qnn_context_folder_is_private_at_every_level(tmp_path: Path) -> None:
    """The QNN provider writes its context model but not its folder; xpuruntime makes it, 0o700, marked as ours."""
    from xpuruntime import Policy
    from xpuruntime._cache import cache_key
    from xpuruntime.inference.engines._onnxruntime import CPU, QNN, translate

    root = tmp_path / "new" / "cache"
    plan = translate(Policy(execution={"cache_dir": str(root)}), "npu", None, tensorrt=False, available=[QNN, CPU],
                     key=cache_key("m", "p", "f"))
    assert plan.config["ep.context_file_path"].startswith(str(root / "qnn"))
    assert [mode(p) for p in (tmp_path / "new", root, root / "qnn")] == [0o700] * 3
    assert (root / "qnn" / _cache.MARKER).is_file()
