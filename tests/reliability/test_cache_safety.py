"""Caches under faults: private folders named by hashes, atomic checked entries, one builder across processes,
damaged entries rebuilt with a warning (never loaded), planted symlinks neither read nor written through.

Two caches are exercised: ONNX Runtime's float16/int8 model copies (entries xpuruntime writes itself) and
OpenVINO's CACHE_DIR (blobs the engine writes, checked by xpuruntime before each compile).
"""

from __future__ import annotations

import multiprocessing
import os
import re
import stat
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _rel_models import ONNX_ENGINES

from xpuruntime import _cache
from xpuruntime.inference import InferenceSession
from xpuruntime.inference.samples import matmul_relu

onnx = pytest.importorskip("onnx")
needs_openvino = pytest.mark.skipif("openvino" not in ONNX_ENGINES, reason="openvino is not installed")
ENTRY = re.compile(r"^[0-9a-f]{24}-int8\.onnx(\.sha256|\.lock)?$")
X = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32)


@pytest.fixture(scope="module")
def model() -> Any:
    return matmul_relu(k=64, n=32)


def int8_session(model: Any, cache_dir: Path, **kw: Any) -> InferenceSession:
    return InferenceSession(model, exec_policy={"precision": "int8", "cache_dir": str(cache_dir), "fallback": "allow",
                                                **kw})


def cached(sess: InferenceSession) -> bool:
    return any("(cached:" in note for note in sess.report.notes)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def entry_of(cache_dir: Path) -> Path:
    (entry,) = (cache_dir / "onnxruntime").glob("*-int8.onnx")
    return entry


@pytest.fixture(scope="module")
def fresh(model: Any) -> np.ndarray:
    """The int8 outputs of a session without any cache: what every cached session must reproduce."""
    return InferenceSession(model, exec_policy={"precision": "int8", "fallback": "allow"}).run({"x": X})["y"]


# -- layout and permissions ---------------------------------------------------------------------
def test_folders_are_private_and_names_come_from_hashes(model: Any, tmp_path: Path, fresh: np.ndarray) -> None:
    root = tmp_path / "new" / "cache"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        int8_session(model, root, fixed_shapes=None)
        again = int8_session(model, root)
    assert cached(again)
    np.testing.assert_array_equal(again.run({"x": X})["y"], fresh)
    assert mode(root.parent) == mode(root) == mode(root / "onnxruntime") == 0o700  # every level created 0o700
    names = sorted(n for n in os.listdir(root / "onnxruntime") if n != ".xpuruntime-cache")  # the marker: ours
    assert len(names) == 3 and all(ENTRY.match(n) for n in names), names  # entry, checksum, lock
    assert all(mode(root / "onnxruntime" / n) == 0o600 for n in names)


def test_an_existing_open_folder_of_ours_is_made_private(model: Any, tmp_path: Path) -> None:
    int8_session(model, tmp_path)  # xpuruntime creates (and marks) the folder ...
    os.chmod(tmp_path / "onnxruntime", 0o777)  # ... someone opens it ...
    int8_session(model, tmp_path)  # ... and the next session tightens it again (test_cache_folders: a user's is not)
    assert mode(tmp_path / "onnxruntime") == 0o700
    assert mode(tmp_path) == stat.S_IMODE(os.stat(tmp_path).st_mode)  # the user's own folder is left as it is


def test_a_cache_that_cannot_be_created_is_a_warning_not_an_error(model: Any, tmp_path: Path,
                                                                   fresh: np.ndarray) -> None:
    (tmp_path / "file").write_text("not a folder")
    with pytest.warns(RuntimeWarning, match="without a cache"):
        sess = int8_session(model, tmp_path / "file" / "cache")
    np.testing.assert_array_equal(sess.run({"x": X})["y"], fresh)


@pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() != 0, reason="giving a folder to another user needs root")
def test_a_folder_of_ours_owned_by_someone_else_is_not_used(model: Any, tmp_path: Path, fresh: np.ndarray) -> None:
    (tmp_path / "onnxruntime").mkdir()
    os.chown(tmp_path / "onnxruntime", 65534, 65534)
    with pytest.warns(RuntimeWarning, match="another user"):
        sess = int8_session(model, tmp_path)
    np.testing.assert_array_equal(sess.run({"x": X})["y"], fresh)
    assert os.listdir(tmp_path / "onnxruntime") == []


def test_a_symlink_in_place_of_our_folder_is_not_followed(model: Any, tmp_path: Path, fresh: np.ndarray) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "onnxruntime").symlink_to(outside)
    with pytest.warns(RuntimeWarning, match="symlink"):
        sess = int8_session(model, tmp_path / "cache")
    np.testing.assert_array_equal(sess.run({"x": X})["y"], fresh)
    assert os.listdir(outside) == []


def test_cache_names_reject_anything_but_hash_like_names(tmp_path: Path) -> None:
    for name in ("../x", "a/b", "..", ".hidden", "", "a\x00b", "x" * 300):
        with pytest.raises(ValueError):
            _cache.private_folder(tmp_path, name)
        with pytest.raises(ValueError):
            _cache.read_entry(tmp_path, name)


# -- damaged entries -----------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["truncated", "another valid model", "no checksum", "garbage"])
def test_a_damaged_entry_is_rebuilt_with_a_warning_never_loaded(model: Any, tmp_path: Path, fresh: np.ndarray,
                                                                 damage: str) -> None:
    int8_session(model, tmp_path)
    entry = entry_of(tmp_path)
    good = entry.read_bytes()
    if damage == "truncated":
        entry.write_bytes(good[: len(good) // 2])
    elif damage == "another valid model":  # parses fine: only the checksum tells
        entry.write_bytes(matmul_relu(k=64, n=32, seed=1).SerializeToString())
    elif damage == "no checksum":
        entry.with_name(entry.name + ".sha256").unlink()
    else:
        entry.write_bytes(os.urandom(len(good)))
    with pytest.warns(RuntimeWarning, match="corrupt"):
        sess = int8_session(model, tmp_path)
    assert not cached(sess)
    np.testing.assert_array_equal(sess.run({"x": X})["y"], fresh)
    assert entry.read_bytes() == good and _cache.read_entry(entry.parent, entry.name) == good  # rewritten intact


def test_a_symlink_planted_in_place_of_an_entry_is_neither_read_nor_written_through(
        model: Any, tmp_path: Path, fresh: np.ndarray) -> None:
    int8_session(model, tmp_path)
    entry = entry_of(tmp_path)
    decoy = tmp_path / "decoy.onnx"  # a valid model with a matching checksum: only the symlink check stops it
    decoy.write_bytes(matmul_relu(k=64, n=32, seed=1).SerializeToString())
    before = decoy.read_bytes()
    entry.unlink()
    entry.symlink_to(decoy)
    entry.with_name(entry.name + ".sha256").write_text(_cache._sidecar_text(before))
    with pytest.warns(RuntimeWarning, match="symlink"):
        sess = int8_session(model, tmp_path)
    np.testing.assert_array_equal(sess.run({"x": X})["y"], fresh)
    assert decoy.read_bytes() == before  # not written through
    assert not entry.is_symlink() and entry.is_file()  # the link itself was replaced


# -- two processes, one entry -------------------------------------------------------------------
def _race(cache_dir: str, barrier: Any, results: Any) -> None:
    import warnings

    import numpy as np

    from xpuruntime.inference import InferenceSession
    from xpuruntime.inference.samples import matmul_relu

    model = matmul_relu(k=256, n=256)  # big enough that quantising it outlasts the other process's start
    barrier.wait(120)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sess = InferenceSession(model, exec_policy={"precision": "int8", "cache_dir": cache_dir, "fallback": "allow"})
    out = sess.run({"x": np.ones((2, 256), np.float32)})["y"]
    results.put((any("(cached:" in n for n in sess.report.notes), out.tobytes(), [str(w.message) for w in caught]))


@pytest.mark.slow
def test_two_processes_racing_on_one_entry_both_succeed_and_one_builds(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")  # no fork: the engines' thread pools do not survive one
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(str(tmp_path), barrier, results)) for _ in range(2)]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=240) for _ in procs]
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    assert sorted(hit for hit, _, _ in outcomes) == [False, True]  # one built, the other waited and read
    assert outcomes[0][1] == outcomes[1][1]
    assert not [m for _, _, msgs in outcomes for m in msgs if "corrupt" in m or "cache" in m]
    (entry,) = (tmp_path / "onnxruntime").glob("*-int8.onnx")
    assert _cache.read_entry(entry.parent, entry.name) is not None  # intact: checksum matches


# -- OpenVINO's CACHE_DIR --------------------------------------------------------------------------
def ov_session(model: Any, cache_dir: Path) -> InferenceSession:
    return InferenceSession(model, engine="openvino", exec_policy={"cache_dir": str(cache_dir), "fallback": "allow"})


@pytest.fixture(scope="module")
def ov_fresh(model: Any) -> np.ndarray:
    if "openvino" not in ONNX_ENGINES:
        pytest.skip("openvino is not installed")
    return InferenceSession(model, engine="openvino").run({"x": X})["y"]


def blobs(cache_dir: Path) -> list[Path]:
    return sorted((cache_dir / "openvino").glob("*/*.blob"))


@needs_openvino
def test_openvino_cache_folder_is_private_with_a_checksum_per_blob(model: Any, tmp_path: Path,
                                                                   ov_fresh: np.ndarray) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ov_session(model, tmp_path)
        again = ov_session(model, tmp_path)
    assert any("imported from the cache" in n for n in again.report.notes)
    np.testing.assert_array_equal(again.run({"x": X})["y"], ov_fresh)
    (blob,) = blobs(tmp_path)
    assert mode(tmp_path / "openvino") == 0o700 and mode(blob.parent) == 0o700 and mode(blob) == 0o600
    assert blob.with_name(blob.name + ".sha256").read_text() == _cache._digest_file(blob)


@needs_openvino
@pytest.mark.parametrize("damage", ["weights flipped", "truncated", "no checksum"])
def test_a_damaged_openvino_blob_is_removed_and_recompiled_never_loaded(model: Any, tmp_path: Path,
                                                                        ov_fresh: np.ndarray, damage: str) -> None:
    ov_session(model, tmp_path)
    (blob,) = blobs(tmp_path)
    data = bytearray(blob.read_bytes())
    if damage == "weights flipped":  # OpenVINO itself loads this blob and computes wrong outputs
        weights = onnx.numpy_helper.to_array(model.graph.initializer[0]).tobytes()
        at = bytes(data).find(weights[:64])
        assert at > 0
        data[at:at + 256] = bytes(b ^ 0x55 for b in data[at:at + 256])
        blob.write_bytes(bytes(data))
    elif damage == "truncated":
        blob.write_bytes(bytes(data[: len(data) // 2]))
    else:
        blob.with_name(blob.name + ".sha256").unlink()
    with pytest.warns(RuntimeWarning, match="failed the checksum"):
        sess = ov_session(model, tmp_path)
    assert any("exported to the cache" in n for n in sess.report.notes)
    np.testing.assert_array_equal(sess.run({"x": X})["y"], ov_fresh)


@needs_openvino
def test_a_symlink_planted_as_an_openvino_blob_is_not_followed(model: Any, tmp_path: Path,
                                                               ov_fresh: np.ndarray) -> None:
    ov_session(model, tmp_path)
    (blob,) = blobs(tmp_path)
    outside = tmp_path / "outside.blob"
    outside.write_bytes(blob.read_bytes())
    before = outside.read_bytes()
    blob.unlink()
    blob.symlink_to(outside)
    with pytest.warns(RuntimeWarning, match="failed the checksum"):
        sess = ov_session(model, tmp_path)
    np.testing.assert_array_equal(sess.run({"x": X})["y"], ov_fresh)
    assert outside.read_bytes() == before and outside.exists()
    assert not blob.is_symlink()
