"""``with capture_graph() as g: ...`` -- the original design's context form, as a CPU-only user meets it."""

from __future__ import annotations

import warnings

import pytest

import xpuruntime as xrt

torch = pytest.importorskip("torch")
import xpuruntime.pytorch as xrt_torch

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU fallback of the context form")


def test_without_cuda_the_block_runs_eagerly_and_says_why():
    x = torch.ones(3)
    with pytest.warns(xrt.receipts.PolicyViolationWarning, match="runs the block eagerly"):
        with xrt_torch.capture_graph() as g:
            y = x * 2
    assert torch.equal(y, torch.full((3,), 2.0)) and not g.captured
    assert g.violations[0].subject == "cuda_graphs"
    with pytest.raises(xrt.UnsupportedOperationError, match="capture_graph\\(step_fn"):
        g.replay()


def test_fallback_error_refuses_before_the_block():
    ran = []
    with pytest.raises(xrt.PolicyViolationError):
        with xrt_torch.capture_graph(fallback="error"):
            ran.append(1)
    assert ran == []


def test_fallback_allow_is_silent():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with xrt_torch.capture_graph(fallback="allow") as g:
            pass
    assert not g.captured


def test_function_form_arguments_in_the_context_form_name_the_function_form():
    with pytest.raises(xrt.PolicyError, match="capture_graph\\(step_fn"):
        xrt_torch.capture_graph(warmup=5)
    with pytest.raises(xrt.PolicyError):
        xrt_torch.capture_graph(None, torch.ones(1))


def test_design_example_autocast_and_capture_graph_together():
    model, x = torch.nn.Linear(4, 4), torch.ones(2, 4)
    with pytest.warns(xrt.receipts.PolicyViolationWarning):
        with xrt_torch.autocast(fp16=True), xrt_torch.capture_graph():
            loss = model(x).float().sum()
            loss.backward()
    assert model.weight.grad is not None

