"""Session feeds, fuzzed on every ONNX engine: a correct result or an InputError, never a crash in an engine.

Feeds get random names, ranks, shapes (zero-size dims included), dtypes, memory layouts (Fortran order,
negative and stepped strides, broadcast views) and values (NaN, +-inf). Whatever runs must equal the run
on C-contiguous copies, bit for bit, and numpy's reference where the inputs are finite.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest
from _rel_models import ONNX_ENGINES, select_model

from xpuruntime.errors import InputError
from xpuruntime.inference import InferenceSession

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

EXAMPLES = int(os.environ.get("XPURUNTIME_FUZZ_EXAMPLES", "200"))  # per engine; README "Reliability" quotes it
DTYPES = ["float32", "float64", "float16", "int64", "int32", "bool", "uint8"]
LAYOUTS = ["c", "fortran", "reversed", "stepped", "broadcast", "list"]
SPECIAL = [np.nan, np.inf, -np.inf, -0.0, 3.4e38, 1e-45]


@pytest.fixture(scope="module")
def model_and_weight() -> tuple[Any, np.ndarray]:
    return select_model()


@pytest.fixture(scope="module")
def sessions(model_and_weight: tuple[Any, np.ndarray]) -> dict[str, InferenceSession]:
    return {e: InferenceSession(model_and_weight[0], engine=e, exec_policy={"fallback": "allow"}) for e in ONNX_ENGINES}


SPEC = {"a": ("float32", 2), "b": ("float32", 2), "c": ("bool", 2), "k": ("int64", 1)}  # name: dtype, rank


def values(draw: Any, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if dtype == "bool":
        return rng.random(shape) < 0.5
    if np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(max(info.min, -(2**40)), min(info.max, 2**40), size=shape, dtype=dtype, endpoint=True)
    data = rng.standard_normal(shape)
    if data.size and draw(st.booleans()):
        flat = data.reshape(-1)
        for index in draw(st.lists(st.integers(0, flat.size - 1), max_size=4)):
            flat[index] = draw(st.sampled_from(SPECIAL))
    with np.errstate(over="ignore"):
        return data.astype(dtype)


def laid_out(draw: Any, array: np.ndarray) -> Any:
    """The same values in another memory layout (a view the engine must not misread)."""
    layout = draw(st.sampled_from(LAYOUTS))
    if layout == "fortran":
        return np.asfortranarray(array)
    if layout == "reversed" and array.ndim:
        return np.ascontiguousarray(array[::-1])[::-1]
    if layout == "stepped" and array.ndim:
        wide = np.empty((array.shape[0] * 2, *array.shape[1:]), array.dtype)
        wide[::2] = array
        return wide[::2]
    if layout == "broadcast" and array.ndim and array.shape[0] and (array == array[:1]).all():
        return np.broadcast_to(array[:1], array.shape)
    if layout == "list" and array.dtype != np.float16 and array.size:  # [] cannot say (0, 4)
        return array.tolist()
    return array


@st.composite
def feed_sets(draw: Any) -> tuple[dict[Any, Any], bool]:
    """Feeds and whether they are valid (right names, ranks, dtypes and one size for dim ``n``)."""
    n = draw(st.integers(0, 5))
    feeds: dict[Any, Any] = {}
    valid = True
    for name, (dtype, rank) in SPEC.items():
        if draw(st.integers(0, 19)) == 0:
            valid = False
            continue  # a missing input
        shape = (n, 4)[:rank]
        if draw(st.integers(0, 4)) == 0:  # a wrong rank, dim or dtype, maybe
            shape = tuple(draw(st.lists(st.integers(0, 5), max_size=4)))
            dtype = draw(st.sampled_from(DTYPES))
            valid = valid and shape == (n, 4)[:rank] and dtype == SPEC[name][0]
        feeds[name] = laid_out(draw, values(draw, dtype, shape))
    if draw(st.integers(0, 19)) == 0:
        feeds[draw(st.text(max_size=4) | st.integers())] = np.zeros(1, np.float32)
        valid = False
    return feeds, valid


def contiguous(feeds: dict[str, Any]) -> dict[str, np.ndarray]:
    return {name: np.ascontiguousarray(np.asarray(v, dtype=SPEC[name][0])) for name, v in feeds.items()}


def reference(feeds: dict[str, np.ndarray], w: np.ndarray) -> dict[str, np.ndarray]:
    selected = np.where(feeds["c"], feeds["a"], feeds["b"]).astype(np.float64)
    return {"y": selected @ w.astype(np.float64), "z": feeds["k"].astype(np.float32)}


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.function_scoped_fixture])
@given(case=feed_sets())
def test_any_feeds_give_a_correct_result_or_an_input_error(engine: str, sessions: dict[str, InferenceSession],
                                                           model_and_weight: tuple[Any, np.ndarray],
                                                           case: tuple[dict[Any, Any], bool]) -> None:
    feeds, valid = case
    sess = sessions[engine]
    try:
        out = sess.run(feeds)
    except InputError as exc:
        assert not valid, f"valid feeds refused: {exc}"
        return
    same = sess.run(contiguous(feeds))
    for name in ("y", "z"):
        np.testing.assert_array_equal(out[name], same[name])  # NaN in the same places, every bit equal
    clean = contiguous(feeds)
    if all(np.isfinite(v).all() for v in clean.values() if v.dtype.kind == "f"):
        for name, want in reference(clean, model_and_weight[1]).items():
            np.testing.assert_allclose(out[name], want, rtol=1e-4, atol=1e-4)


def test_inputs_sharing_a_symbolic_dim_must_agree(engine: str, sessions: dict[str, InferenceSession]) -> None:
    feeds = {"a": np.zeros((3, 4), np.float32), "b": np.zeros((1, 4), np.float32),
             "c": np.zeros((3, 4), bool), "k": np.zeros(3, np.int64)}
    with pytest.raises(InputError, match="dim 'n'") as info:
        sessions[engine].run(feeds)  # b would broadcast inside the engine; the model says n is one size
    assert "'b' axis 0: 1" in str(info.value)


# -- .npy input files, fuzzed: an array or an InputError, never an allocation past the limit ---------------------
_NPY_LIMIT = 1 << 20
_DESCRS = ["<f4", "<f4", ">f8", "|b1", "<i8", "|u1", "<f2", "|O", "<U3", "<c8", "V4", "x", "<f4, <i4",
           "[('a', '<f4')]"]
_SHAPES = st.lists(st.integers(0, 9) | st.integers(0, 9) | st.integers(-2, -1)
                   | st.sampled_from([2**20, 2**40, 2**63, 2**70]), max_size=4).map(tuple)


def _exact_size(descr: str, shape: tuple[int, ...]) -> int:
    try:
        return int(np.prod(shape, dtype=object)) * np.dtype(descr).itemsize if min(shape, default=0) >= 0 else 0
    except (TypeError, ValueError):
        return 0


@st.composite
def npy_files(draw: Any) -> bytes:
    """A .npy header (often valid, sometimes lying or malformed) and a body of arbitrary length."""
    valid = "{{'descr': {d!r}, 'fortran_order': {f}, 'shape': {s}, }}"
    header = draw(st.sampled_from([valid, valid, valid, valid, "{{'descr': {d!r}, 'shape': {s}}}",
                                   "{{'descr': {d}, 'fortran_order': {f}, 'shape': {s}, }}", "not a dict {s}"]))
    descr, shape = draw(st.sampled_from(_DESCRS)), draw(_SHAPES)
    text = header.format(d=descr, f=draw(st.booleans()), s=shape)
    text += " " * (-(len(text) + 11) % 64) + "\n"
    major = draw(st.sampled_from([1, 1, 1, 2, 3, 9]))
    length = len(text).to_bytes(2 if major == 1 else 4, "little")
    exact = min(_exact_size(descr, shape), 1 << 21)
    body = draw(st.just(b"\1" * exact) | st.just(b"\1" * exact) | st.binary(max_size=300)
                | st.integers(0, 4096).map(lambda n: b"\0" * n))
    raw = b"\x93NUMPY" + bytes([major, 0]) + length + text.encode("latin1") + body
    return raw[:draw(st.just(len(raw)) | st.just(len(raw)) | st.integers(0, len(raw)))]


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.function_scoped_fixture])
@given(content=npy_files())
def test_any_npy_file_gives_an_array_or_an_input_error(tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
                                                       content: bytes) -> None:
    from xpuruntime.inference.feeds import MAX_INPUT_BYTES_ENV, load_array_file

    monkeypatch.setenv(MAX_INPUT_BYTES_ENV, str(_NPY_LIMIT))
    path = tmp_path / "x.npy"
    path.write_bytes(content)
    try:
        array = load_array_file(path)
    except InputError as exc:
        assert str(exc)
        return
    assert isinstance(array, np.ndarray) and array.nbytes <= _NPY_LIMIT and not array.dtype.hasobject


@pytest.mark.parametrize("kind", ["fifo", "symlink_to_fifo", "char_device", "dev_null", "dir", "socket",
                                  "huge_npy", "truncated_npy", "object_npy", "npz", "empty"])
def test_the_hostile_folder_gives_input_errors_as_feeds(hostile_paths: dict[str, Any], kind: str) -> None:
    from xpuruntime.inference.feeds import load_array_file

    if kind not in hostile_paths:
        pytest.skip(f"no {kind} can be made here")
    with pytest.raises(InputError):
        load_array_file(hostile_paths[kind])
