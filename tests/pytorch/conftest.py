"""PyTorch extension tests: every test must leave torch's process-global switches as it found them.

Every module here is marked ``torch`` (tests/conftest.py skips them without torch), so torch is imported only
when a test runs.
"""

from __future__ import annotations

import os

import pytest


def switches() -> dict[str, object]:
    """torch's switches that xpuruntime.pytorch may touch, read through torch's own getters."""
    import torch

    cuda, cudnn = torch.backends.cuda, torch.backends.cudnn
    out: dict[str, object] = {
        "flash": cuda.flash_sdp_enabled(), "mem_efficient": cuda.mem_efficient_sdp_enabled(),
        "math": cuda.math_sdp_enabled(), "cudnn_sdp": cuda.cudnn_sdp_enabled(),
        "blas": str(cuda.preferred_blas_library()), "benchmark": cudnn.benchmark,
        "benchmark_limit": cudnn.benchmark_limit, "cudnn_deterministic": cudnn.deterministic,
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "threads": torch.get_num_threads(), "env": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    }
    if hasattr(torch._C, "_get_sdp_priority_order"):
        out["priority"] = list(torch._C._get_sdp_priority_order())
    if hasattr(torch._C, "_get_fp32_precision_getter"):
        for backend, op in (("generic", "all"), ("cuda", "all"), ("cuda", "matmul"), ("cuda", "conv"),
                            ("cuda", "rnn"), ("mkldnn", "matmul")):
            out[f"fp32 {backend}.{op}"] = torch._C._get_fp32_precision_getter(backend, op)
    for name, read in (("matmul_precision", torch.get_float32_matmul_precision),
                       ("cudnn_tf32", lambda: cudnn.allow_tf32), ("matmul_tf32", lambda: cuda.matmul.allow_tf32)):
        try:
            out[name] = read()
        except RuntimeError as exc:  # torch refuses legacy reads after mixed API use: that is state too
            out[name] = f"refused: {str(exc)[:40]}"
    return out


@pytest.fixture(name="read_switches")
def _read_switches():
    """The reader of torch's switches, for tests that compare them."""
    return switches


@pytest.fixture(name="switches")
def _switches_fixture():
    return switches


@pytest.fixture(autouse=True)
def _switches_restored():
    from xpuruntime.pytorch import _state

    before = switches()
    yield
    leaked = _state.active() is not None
    _state.reset()
    assert not leaked, "a test left a policy active"
    assert switches() == before, "a test left torch's switches changed"
