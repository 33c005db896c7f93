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
