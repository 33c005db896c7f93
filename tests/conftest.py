"""Shared test setup: GPU tests are skipped here, in one place, when no CUDA device is present."""

from __future__ import annotations

import pytest


def _cuda_count() -> int:
    from xpuruntime.runtime.devices import get_device_count

    return get_device_count("cuda")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items or _cuda_count() > 0:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (none found through NVML or cuda.core)")
    for item in gpu_items:
        item.add_marker(skip)
