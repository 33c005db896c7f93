"""A failed CUDA-graph capture leaves the process usable (plumbing only: torch's capture objects are fakes here).

On torch < 2.12 a capture whose ``capture_end()`` fails (a host sync such as ``.item()`` inside it) left the
capture stream current and the default CUDA generator in capture mode: every later ``torch.randn(...,
device="cuda")`` raised "Offset increment outside graph capture encountered unexpectedly". These tests check the
order of the cleanup calls on fakes; tests/gpu/test_runtime_gpu.py checks the real thing on a GPU.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

pytestmark = pytest.mark.torch

import xpuruntime.pytorch as xrt_torch  # noqa: E402
from xpuruntime import PolicyViolationError  # noqa: E402
from xpuruntime.pytorch import _graphs  # noqa: E402


class _Graph:
    def __init__(self) -> None:
        self.replays = 0

    def replay(self) -> None:
        self.replays += 1


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    state: dict[str, Any] = {"log": [], "end_fails": False}

    class _Stream:
        def __exit__(self, *args: Any) -> None:
            state["log"].append("stream left")

    class _Capture:
        def __init__(self, graph: Any, pool: Any = None) -> None:
            self.cuda_graph, self.stream_ctx = graph, _Stream()

        def __enter__(self) -> None:
            state["log"].append("capture begun")

        def __exit__(self, *args: Any) -> None:
            if state["end_fails"]:  # torch's __exit__ raises in capture_end, before leaving the stream
                raise RuntimeError("CUDA error: operation failed due to a previous error during capture")
            state["log"].append("capture ended")
            self.stream_ctx.__exit__(*args)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "CUDAGraph", _Graph)
    monkeypatch.setattr(torch.cuda, "graph", _Capture)
    monkeypatch.setattr(_graphs, "_release_rng", lambda: state["log"].append("generator released"))
    return state


def test_a_refused_capture_leaves_the_stream_and_releases_the_generator(fake: dict[str, Any]) -> None:
    fake["end_fails"] = True
    with pytest.raises(PolicyViolationError, match="could not capture the block"):
        with xrt_torch.capture_graph(fallback="allow"):
            raise RuntimeError("operation not permitted when stream is capturing")  # as .item() raises
    assert fake["log"] == ["capture begun", "stream left", "generator released"]


def test_a_failed_end_after_a_clean_block_is_refused_too(fake: dict[str, Any]) -> None:
    fake["end_fails"] = True
    with pytest.raises(PolicyViolationError, match="could not capture the block"):
        with xrt_torch.capture_graph(fallback="allow") as g:
            pass
    assert not g.captured and fake["log"][-2:] == ["stream left", "generator released"]


def test_a_clean_capture_ends_once_and_replays_once(fake: dict[str, Any]) -> None:
    with xrt_torch.capture_graph() as g:
        pass
    assert g.captured and g.graph.replays == 1
    assert fake["log"] == ["capture begun", "capture ended", "stream left"]


def test_the_blocks_own_error_passes_through_after_a_clean_end(fake: dict[str, Any]) -> None:
    with pytest.raises(KeyError):
        with xrt_torch.capture_graph():
            raise KeyError("x")
    assert fake["log"] == ["capture begun", "capture ended", "stream left"]  # nothing to release


def test_the_function_form_cleans_up_and_falls_back(fake: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    fake["end_fails"] = True
    monkeypatch.setattr(_graphs, "_why_not", lambda args: None)
    monkeypatch.setattr(_graphs, "_warm_up", lambda fn, args, n: None)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    step = xrt_torch.capture_graph(lambda x: x + 1, torch.ones(2), fallback="allow")
    assert not step.captured and "torch could not capture it" in step.violations[0].reason
    assert fake["log"] == ["capture begun", "stream left", "generator released"]
    assert torch.equal(step(torch.ones(2)), torch.full((2,), 2.0))  # eager
