"""Hostile feeds and arguments: non-strings in string inputs, masked arrays, absurd device indices, bad seeds.

Each is an ``XpuRuntimeError`` subclass with expected / received, before the engine sees anything; none is a raw
traceback (the CLI cells check that the command exits cleanly).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from typer.testing import CliRunner

from xpuruntime import InferenceSession, compare
from xpuruntime.errors import DeviceError, InputError
from xpuruntime.inference.feeds import FeedChecker, TensorInfo, check_seed, random_feeds
from xpuruntime.inference.samples import IR_VERSION, OPSET
from xpuruntime.runtime.devices import parse_device

HUGE_INDEX = "cuda:" + "9" * 5000  # int() of it raises ValueError (more than 4300 digits)


@pytest.fixture(scope="module")
def strings() -> Any:
    """An Identity on a string input (ONNX Runtime runs it)."""
    graph = helper.make_graph([helper.make_node("Identity", ["s"], ["t"])], "strings",
                              [helper.make_tensor_value_info("s", TensorProto.STRING, [2])],
                              [helper.make_tensor_value_info("t", TensorProto.STRING, [2])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)


# -- string inputs -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [[1, None], ["a", None], [1.5, "b"], np.array(["a", 3], dtype=object),
                                   np.array([None, None], dtype=object)])
def test_non_strings_in_a_string_input_are_refused(strings: Any, value: Any) -> None:
    sess = InferenceSession(strings)
    with pytest.raises(InputError, match="string input but holds a") as err:
        sess.run({"s": value})
    assert "str or bytes elements" in str(err.value)


def test_strings_run_and_come_back_unchanged(strings: Any) -> None:
    sess = InferenceSession(strings)
    for value in (["a", "b"], np.array(["x", "ü"], dtype=object)):
        assert list(sess.run({"s": value})["t"]) == list(value)
    sess.run({"s": ["a", "b"]})
    with pytest.raises(InputError):  # the fast path is off for string inputs: every call is checked
        sess.run({"s": np.array(["a", None], dtype=object)})


def test_the_feed_checker_never_fast_paths_a_string_input() -> None:
    check = FeedChecker([TensorInfo("s", (2,), "object")])
    with pytest.raises(InputError):
        check({"s": np.array([b"a", 2], dtype=object)})


# -- masked arrays -------------------------------------------------------------------------------------------
def test_a_masked_array_is_refused_on_every_engine(engine: str, mm: Any) -> None:
    sess = InferenceSession(mm, engine=engine)
    masked = np.ma.masked_array(np.ones((2, 8), np.float32), mask=np.eye(2, 8, dtype=bool))
    with pytest.raises(InputError, match="masked array") as err:
        sess.run({"x": masked})
    assert "filled" in str(err.value)
    with pytest.raises(InputError, match="masked array"):
        sess.run([masked])
    np.testing.assert_array_equal(sess.run({"x": masked.filled(0)})["y"],
                                  sess.run({"x": np.where(masked.mask, 0, 1).astype(np.float32)})["y"])


# -- devices -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", [HUGE_INDEX, "cuda:65536", "gpu:" + "1" * 40, "cuda:²", "cuda:٣", 2**80, -1,
                                  "cdua:" + "7" * 5000])
def test_absurd_device_strings_are_device_errors_with_short_messages(spec: Any) -> None:
    with pytest.raises(DeviceError, match="malformed device") as err:
        parse_device(spec)
    assert len(str(err.value)) < 1000


def test_a_session_and_the_cli_refuse_a_5000_digit_device_index(mm: Any, tmp_path: Path) -> None:
    from xpuruntime.cli import app

    with pytest.raises(DeviceError):
        InferenceSession(mm, device=HUGE_INDEX)
    onnx.save(mm, tmp_path / "m.onnx")
    result = CliRunner().invoke(app, ["run", str(tmp_path / "m.onnx"), "--random-inputs", "--device", HUGE_INDEX])
    assert result.exit_code == 1 and "malformed device" in result.output and isinstance(result.exception, SystemExit)


# -- seeds ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [-1, True, 1.5, "3", 2**128, None])
def test_a_bad_seed_is_an_input_error(seed: Any, mm: Any) -> None:
    with pytest.raises(InputError, match="invalid seed"):
        check_seed(seed)
    with pytest.raises(InputError, match="invalid seed"):
        random_feeds([TensorInfo("x", ("n", 8), "float32")], seed=seed)
    with pytest.raises(InputError, match="invalid seed"):
        compare(mm, ["onnxruntime", "onnxrt"], seed=seed)


def test_the_cli_refuses_a_negative_seed_cleanly(mm: Any, tmp_path: Path) -> None:
    from xpuruntime.cli import app

    onnx.save(mm, tmp_path / "m.onnx")
    result = CliRunner().invoke(app, ["compare", str(tmp_path / "m.onnx"), "--engines", "onnxruntime,onnxrt",
                                      "--seed", "-1"])
    assert result.exit_code == 1 and "invalid seed" in result.output and isinstance(result.exception, SystemExit)


def test_large_valid_seeds_work() -> None:
    a = random_feeds([TensorInfo("x", (3,), "float32")], seed=2**128 - 1)["x"]
    b = random_feeds([TensorInfo("x", (3,), "float32")], seed=np.uint64(2**63))["x"]
    assert a.shape == b.shape == (3,)


class _TorchLikeCuda:
    """A CUDA tensor as torch presents one to the feed check (``__cuda_array_interface__``, ``data_ptr()``, shape,
    dtype, ``is_contiguous()``); never dereferenced."""

    def __init__(self, shape: tuple[int, ...], ptr: int = 1 << 20) -> None:
        self.shape, self.dtype, self.ptr, self.contiguous = shape, "float32", ptr, True
        self.device = type("Dev", (), {"index": 0})()

    @property
    def __cuda_array_interface__(self) -> dict:
        strides = None if self.contiguous else (4, 4 * self.shape[0])
        return {"shape": self.shape, "typestr": "<f4", "data": (self.ptr, False), "version": 2, "strides": strides}

    def data_ptr(self) -> int:
        return self.ptr

    def is_contiguous(self) -> bool:
        return self.contiguous


def test_device_feeds_passed_again_skip_the_full_check_until_they_move_or_change(monkeypatch):
    from xpuruntime.inference import feeds as feeds_module

    full = []
    real = feeds_module.normalize_feeds
    monkeypatch.setattr(feeds_module, "normalize_feeds", lambda f, i: full.append(1) or real(f, i))
    check = FeedChecker([TensorInfo("x", ("batch", 4), "float32")])
    x = _TorchLikeCuda((2, 4))
    first = check({"x": x})
    again = check({"x": x})
    assert len(full) == 1 and again == first and again is not first and again["x"].ptr == 1 << 20
    x.ptr = 1 << 21  # re-pointed in place (set_, resize_): checked again, and the new address is what is bound
    assert check({"x": x})["x"].ptr == 1 << 21 and len(full) == 2
    x.contiguous = False
    with pytest.raises(InputError):
        check({"x": x})
    x.contiguous, x.shape = True, (2, 5)
    with pytest.raises(InputError, match="x"):  # the model's 4 columns
        check({"x": x})
    check({"x": _TorchLikeCuda((3, 4))})  # another tensor: a full check
    assert len(full) == 5
