"""Fixtures for the reliability tests; models and the engine list live in ``_rel_models``."""

from __future__ import annotations

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
