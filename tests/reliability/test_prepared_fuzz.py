"""Prepared runs (issue 13), fuzzed against ``session.run`` on every ONNX engine: any sequence of calls (new feeds in
any memory layout, arrays refilled in place, feeds of any other kind, ``session.run`` with other shapes in between)
gives bit for bit what ``session.run`` gives on the same data, or the InputError it gives, and a refused call leaves
the prepared run working.

The feeds come from ``test_feed_fuzz``'s generator (random names, ranks, shapes, dtypes, layouts, NaN and inf).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest
from _rel_models import select_model
from test_feed_fuzz import contiguous, feed_sets, laid_out, values

from xpuruntime.errors import InputError
from xpuruntime.inference import InferenceSession

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

EXAMPLES = int(os.environ.get("XPURUNTIME_FUZZ_EXAMPLES", "200")) // 2  # sequences per engine
ROWS = 3  # the prepared size of dim ``n``
NAMES = {"a": "float32", "b": "float32", "c": "bool", "k": "int64"}


@pytest.fixture(scope="module")
def sessions() -> dict[str, InferenceSession]:
    from _rel_models import ONNX_ENGINES

    model = select_model()[0]
    return {e: InferenceSession(model, engine=e, exec_policy={"fallback": "allow"}) for e in ONNX_ENGINES}


@st.composite
def prepared_feeds(draw: Any) -> dict[str, np.ndarray]:
    """Valid feeds of the prepared shape (``n`` = ROWS), C-contiguous."""
    return {name: np.ascontiguousarray(values(draw, dtype, (ROWS, 4)[: 1 if name == "k" else 2]))
            for name, dtype in NAMES.items()}


@st.composite
def steps(draw: Any) -> list[tuple[str, Any]]:
    """A sequence of calls: ("feeds", laid-out feeds of the prepared shape), ("refill", new values written into the
    prepared arrays), ("any", any feed set at all), ("session", session.run of any valid feed set)."""
    out: list[tuple[str, Any]] = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["feeds", "refill", "any", "session"]))
        if kind == "feeds":
            base = draw(prepared_feeds())
            out.append((kind, (base, {k: laid_out(draw, v) for k, v in base.items()})))
        elif kind == "refill":
            out.append((kind, draw(prepared_feeds())))
        else:
            out.append((kind, draw(feed_sets())))
    return out


def _same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert list(got) == list(want)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


@pytest.fixture(scope="module")
def torch_session() -> InferenceSession:
    """The same computation as a torch module on the torch engine (shapes fixed by the example inputs)."""
    torch = pytest.importorskip("torch")
    weight = torch.from_numpy(select_model()[1].astype(np.float32))

    class Select(torch.nn.Module):
        def forward(self, a: Any, b: Any, c: Any, k: Any) -> Any:
            return {"y": torch.where(c, a, b) @ weight, "z": k.to(torch.float32)}

    example = (torch.zeros(ROWS, 4), torch.zeros(ROWS, 4), torch.zeros(ROWS, 4, dtype=torch.bool),
               torch.zeros(ROWS, dtype=torch.int64))
    return InferenceSession(Select(), engine="torch", engine_options={"example_inputs": example,
                                                                      "input_names": list(NAMES)})


FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                             HealthCheck.function_scoped_fixture])


@FUZZ
@given(first=prepared_feeds(), sequence=steps())
def test_prepared_calls_give_what_run_gives_or_its_input_error(engine: str, sessions: dict[str, InferenceSession],
                                                               first: dict[str, np.ndarray],
                                                               sequence: list[tuple[str, Any]]) -> None:
    _check_sequence(sessions[engine], first, sequence)


@FUZZ
@given(first=prepared_feeds(), sequence=steps())
def test_prepared_calls_on_the_torch_engine_give_what_run_gives(torch_session: InferenceSession,
                                                                first: dict[str, np.ndarray],
                                                                sequence: list[tuple[str, Any]]) -> None:
    _check_sequence(torch_session, first, sequence)


def _check_sequence(sess: InferenceSession, first: dict[str, np.ndarray], sequence: list[tuple[str, Any]]) -> None:
    mine = {k: v.copy() for k, v in first.items()}  # the prepared arrays, refilled in place below
    run = sess.prepare(mine)
    _same(run(), sess.run(first))
    for kind, data in sequence:
        if kind == "feeds":
            base, laid = data
            _same(run(laid), sess.run(base))
        elif kind == "refill":
            for name, value in data.items():
                np.copyto(run.inputs[name], value)
            _same(run(), sess.run(data))
        elif kind == "any":
            feeds, _valid = data
            try:
                want: Any = sess.run(feeds)
            except InputError:
                want = InputError
            try:
                got: Any = run(feeds)
            except InputError:
                got = InputError
            if got is InputError:  # refused: what run refuses, or another shape than the prepared one
                same_shape = want is not InputError and all(v.shape[0] == ROWS for v in want.values())
                assert want is InputError or not same_shape, f"prepared run refused feeds run accepts: {feeds!r}"
            else:
                assert want is not InputError, "prepared run accepted feeds run refuses"
                _same(got, want)
        else:
            feeds, valid = data
            if valid:
                try:
                    sess.run(contiguous(feeds))  # another shape through the same engine meanwhile
                except InputError:  # the torch session's shapes are fixed by its example inputs
                    assert sess.engine_name == "torch"
        _same(run(), sess.run({k: np.array(v) for k, v in run.inputs.items()}))  # still the prepared arrays
