"""Memory before checks: ranks, dtypes and byte sizes are checked before xpuruntime allocates anything.

A 200-byte ``.npy`` whose header claims 4 TiB, random inputs on dims [2**20, 2**20], ``fixed_shapes`` of
[2**30, 8] and a 4 TiB broadcast view each give an ``InputError`` at once, never a ``MemoryError`` or a
multi-GB copy; a FIFO named as an input file is refused instead of blocking the reader. The limit is
``max_input_bytes()``: ``XPURUNTIME_MAX_INPUT_BYTES``, else 16 GiB or half the machine's memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from xpuruntime import InferenceSession, compare
from xpuruntime.errors import InputError
from xpuruntime.inference.feeds import MAX_INPUT_BYTES_ENV, TensorInfo, load_array_file, max_input_bytes, random_feeds

BIG = (2**37, 8)  # 4 TiB of float32, as a broadcast view of one row


# -- .npy input files ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind, message", [
    ("huge_npy", "too large: float32\\[1048576, 1048576\\] is 4 TiB"),
    ("truncated_npy", "truncated: its header declares float32\\[1000\\]"),
    ("object_npy", "Python objects"),
    ("npz", "not a .npy file"), ("not_npy", "not a .npy file"), ("empty", "not a .npy file"),
    ("symlink_to_file", "not a .npy file"),
    ("fifo", "not a regular file"), ("symlink_to_fifo", "not a regular file"), ("dev_null", "not a regular file"),
    ("dir", "not a regular file"), ("symlink_to_dir", "not a regular file"), ("socket", "cannot read input"),
    ("dangling_symlink", "No such file"),
])
def test_a_bad_input_file_is_an_input_error_before_any_allocation(hostile_paths: dict[str, Path], kind: str,
                                                                  message: str) -> None:
    if kind not in hostile_paths:
        pytest.skip(f"no {kind} can be made here")
    with pytest.raises(InputError, match=message):
        load_array_file(hostile_paths[kind], "x")


def test_a_header_is_checked_against_the_file_even_under_a_huge_limit(hostile_paths: dict[str, Path],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MAX_INPUT_BYTES_ENV, str(1 << 50))
    with pytest.raises(InputError, match=r"truncated: .*\(4398046511104 bytes\) but only 72 bytes follow"):
        load_array_file(hostile_paths["huge_npy"])


@pytest.mark.parametrize("kind", ["odd_name", "long_name"])
def test_good_files_under_odd_names_load(hostile_paths: dict[str, Path], kind: str) -> None:
    np.testing.assert_array_equal(load_array_file(hostile_paths[kind]), np.arange(4, dtype=np.float32))


@pytest.mark.parametrize("order", ["C", "F"])
def test_a_real_file_loads_exactly(tmp_path: Path, order: str) -> None:
    data = np.asarray(np.random.default_rng(0).standard_normal((3, 5)), order=order)
    np.save(tmp_path / "x.npy", data)
    np.testing.assert_array_equal(load_array_file(tmp_path / "x.npy"), data)


def test_the_cli_refuses_a_fifo_and_a_huge_header_as_input(hostile_paths: dict[str, Path], tmp_path: Path,
                                                           mm: Any) -> None:
    from xpuruntime.cli import app

    onnx.save(mm, tmp_path / "m.onnx")
    for kind, said in (("fifo", "not a regular file"), ("huge_npy", "too large")):
        result = CliRunner().invoke(app, ["run", str(tmp_path / "m.onnx"), "--input", f"x={hostile_paths[kind]}"])
        assert result.exit_code == 1 and said in result.output and isinstance(result.exception, SystemExit)


# -- random inputs -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("info, fixed", [
    (TensorInfo("x", (2**20, 2**20), "float32"), None),
    (TensorInfo("x", ("n", 8), "float32"), {"x": (2**30, 8)}),
    (TensorInfo("x", ("n", 8), "int64"), {"x": (2**62, 8)}),
], ids=["static dims", "fixed_shapes", "int64"])
def test_random_inputs_are_sized_before_they_are_made(info: TensorInfo, fixed: Any) -> None:
    with pytest.raises(InputError, match="too large") as err:
        random_feeds([info], fixed)
    assert MAX_INPUT_BYTES_ENV in str(err.value)


def test_random_inputs_of_the_wrong_rank_are_refused_before_they_are_made() -> None:
    with pytest.raises(InputError, match="rank 3"):
        random_feeds([TensorInfo("x", ("n", 8), "float32")], {"x": (2**20, 2**20, 2**20)})


def test_random_inputs_are_made_in_their_own_dtype() -> None:
    feeds = random_feeds([TensorInfo(n, ("n", 3), d) for n, d in
                          (("f", "float32"), ("h", "float16"), ("i", "int8"), ("b", "bool"), ("d", "float64"))], seed=3)
    assert {k: str(v.dtype) for k, v in feeds.items()} == {"f": "float32", "h": "float16", "i": "int8", "b": "bool",
                                                            "d": "float64"}
    again = random_feeds([TensorInfo("f", ("n", 3), "float32")], seed=3)["f"]
    np.testing.assert_array_equal(again, feeds["f"])  # seeded


def test_compare_with_huge_fixed_shapes_is_an_input_error(mm: Any) -> None:
    with pytest.raises(InputError, match="too large"):
        compare(mm, ["onnxruntime", "onnxrt"], exec_policy={"fixed_shapes": {"x": [2**30, 8]}})


# -- feeds given by the caller -------------------------------------------------------------------------------
def test_a_broadcast_view_of_the_wrong_rank_is_refused_without_a_copy(engine: str, mm: Any) -> None:
    sess = InferenceSession(mm, engine=engine)
    view = np.broadcast_to(np.float32(1), (2**20, 2**20, 8))  # 32 TiB if copied
    with pytest.raises(InputError, match="rank 3"):
        sess.run({"x": view})


def test_a_huge_broadcast_view_is_refused_before_its_contiguous_copy(engine: str, mm: Any) -> None:
    sess = InferenceSession(mm, engine=engine)
    with pytest.raises(InputError, match="too large: float32\\[137438953472, 8\\] is 4 TiB .*contiguous copy"):
        sess.run({"x": np.broadcast_to(np.ones(8, np.float32), BIG)})
    out = sess.run({"x": np.ones((2, 8), np.float32)})["y"]  # the session runs on
    assert out.shape == (2, 4)


def test_the_limit_is_the_environment_variable_when_set(engine: str, mm: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MAX_INPUT_BYTES_ENV, str(64 * 8 * 4))  # 64 rows
    sess = InferenceSession(mm, engine=engine)
    row = np.arange(8, dtype=np.float32)
    with pytest.raises(InputError, match="too large"):
        sess.run({"x": np.broadcast_to(row, (65, 8))})
    np.testing.assert_array_equal(sess.run({"x": np.broadcast_to(row, (64, 8))})["y"],
                                  sess.run({"x": np.tile(row, (64, 1))})["y"])
    assert max_input_bytes() == 2048


@pytest.mark.parametrize("value", ["lots", "-1", "0", "1e9", "9" * 30])
def test_an_invalid_limit_is_an_input_error(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MAX_INPUT_BYTES_ENV, value)
    with pytest.raises(InputError, match=MAX_INPUT_BYTES_ENV):
        max_input_bytes()


def test_the_default_limit_is_at_most_16_gib(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MAX_INPUT_BYTES_ENV, raising=False)
    assert 0 < max_input_bytes() <= 16 << 30


@pytest.mark.parametrize("shape", ["(0, 1180591620717411303424)", "(0, 4611686018427387904, 8)", "(-1,)", "(3, -2)"])
def test_headers_found_by_the_fuzzer_are_input_errors(tmp_path: Path, shape: str) -> None:
    """A zero beside a dim past int64 passed the size check and raised OverflowError inside numpy."""
    text = f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}"
    text += " " * (-(len(text) + 11) % 64) + "\n"
    (tmp_path / "x.npy").write_bytes(b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text.encode())
    with pytest.raises(InputError, match="cannot read input"):
        load_array_file(tmp_path / "x.npy")
