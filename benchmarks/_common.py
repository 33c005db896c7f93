"""Helpers shared by the benchmark scripts (run as ``python benchmarks/NAME.py``, so this imports as ``_common``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

try:
    from xpuruntime._io import atomic_write_text
except ImportError:  # a checkout without an install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from xpuruntime._io import atomic_write_text


def quantiles(values: np.ndarray) -> dict[str, float]:
    """p10 / median / p90 of a sample."""
    p10, p50, p90 = np.percentile(values, [10, 50, 90])
    return {"p10": float(p10), "median": float(p50), "p90": float(p90)}


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write a results file atomically, creating its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")
