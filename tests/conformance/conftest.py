"""Conformance fixtures: the corpus is built once per test session and cached across sessions.

The cache lives in pytest's own cache folder (``.pytest_cache/d/xpuruntime-corpus``), or in
``$XPURUNTIME_CORPUS_CACHE`` when set; entries are keyed by model, config and library versions.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # cells.py and expectations.py, shared with the report script

pytest.importorskip("torch")
pytest.importorskip("transformers")


@pytest.fixture(scope="session")
def corpus_cache(request: pytest.FixtureRequest) -> Path:
    """Folder of the cached corpus exports."""
    if os.environ.get("XPURUNTIME_CORPUS_CACHE"):
        return Path(os.environ["XPURUNTIME_CORPUS_CACHE"])
    return Path(request.config.cache.mkdir("xpuruntime-corpus"))


@pytest.fixture(scope="session")
def references(corpus_cache: Path) -> dict:
    """model -> its float32 torch outputs on the default sample feeds, computed once."""
    import cells

    class _Refs(dict):
        def __missing__(self, model: str):
            self[model] = cells.reference(model, corpus_cache)
            return self[model]

    return _Refs()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The full matrix (``slow`` cells) runs only when asked: ``-m slow`` or ``XPURUNTIME_CONFORMANCE=all``."""
    if "slow" in (config.getoption("-m") or "") or os.environ.get("XPURUNTIME_CONFORMANCE") == "all":
        return
    here = Path(__file__).parent
    skip = pytest.mark.skip(reason="full conformance matrix: run with -m slow or XPURUNTIME_CONFORMANCE=all")
    for item in items:
        if "slow" in item.keywords and here in Path(item.path).parents:
            item.add_marker(skip)
