"""The conformance matrix on the CPU: corpus x {onnxruntime, openvino, torch} x precisions x shape modes.

Each cell is judged against the one table in ``expectations.py``: a receipt that names a violation the
truth does not have is a false alarm; a receipt that says honoured over a real violation is a false pass;
outputs must be finite. A sample runs on every push; every cell runs under ``-m slow``.
"""

from __future__ import annotations

import cells
import pytest
from expectations import CI_SAMPLE, MODELS, expected

pytest.importorskip("openvino")


def _cells() -> list[object]:
    params = []
    for model in MODELS:
        for engine in cells.ENGINES:
            for precision in cells.PRECISIONS:
                for shapes in cells.shape_modes(engine):
                    cell = (model, engine, precision, shapes)
                    marks = [] if cell in CI_SAMPLE else [pytest.mark.slow]
                    bug = expected(*cell).bug
                    marks += [pytest.mark.xfail(strict=True, reason=bug)] if bug else []
                    params.append(pytest.param(*cell, marks=marks, id="-".join(cell)))
    return params


@pytest.mark.parametrize(("model", "engine", "precision", "shapes"), _cells())
def test_cell(model, engine, precision, shapes, corpus_cache, references):
    want = expected(model, engine, precision, shapes)
    got = cells.run_cell(model, engine, precision, shapes, cache_dir=corpus_cache, ref=references[model])
    context = f"{got.row()}"
    assert got.error is None, context
    assert got.said_construction <= want.kinds, f"false alarm at construction: {context}"
    if not want.honoured:
        assert got.construction_honored is not True, f"false pass: the construction receipt says honoured; {context}"
    assert got.said_explain == want.kinds, f"explain() receipt differs from the truth {sorted(want.kinds)}: {context}"
    if want.reason:
        assert any(want.reason in v for v in got.violations), context
    assert got.finite or not got.reference_finite or "accuracy" in want.kinds, f"non-finite outputs: {context}"


def test_every_cell_has_one_expectation():
    """The table covers the whole matrix (a new model or engine needs its rows)."""
    for model in MODELS:
        for engine in cells.ENGINES:
            for precision in cells.PRECISIONS:
                for shapes in cells.shape_modes(engine):
                    assert expected(model, engine, precision, shapes) is not None
