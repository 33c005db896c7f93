"""capture_graph where no CUDA graph can be captured: the fallback rule decides (this machine has no GPU)."""

from __future__ import annotations

import warnings

import pytest
import torch

import xpuruntime as xrt  # noqa: E402
import xpuruntime.pytorch as xrt_torch  # noqa: E402
from xpuruntime.receipts import PolicyViolationWarning  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.no_cuda("torch")]  # checks the behaviour without CUDA


def _training(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        return loss

    return model, opt, step


def _batches(n: int = 3):
    gen = torch.Generator().manual_seed(1)
    return [(torch.randn(4, 8, generator=gen), torch.randn(4, 1, generator=gen)) for _ in range(n)]


def test_error_refuses_to_run_a_graph_it_cannot_capture():
    model, opt, step = _training()
    x, y = _batches(1)[0]
    with pytest.raises(xrt.PolicyViolationError, match="no CUDA device") as caught:
        xrt_torch.capture_graph(step, x, y, fallback="error")
    assert [(v.kind, v.subject) for v in caught.value.violations] == [("option", "cuda_graphs")]


def test_warn_runs_the_step_eagerly_with_the_same_result_as_eager_steps():
    model, opt, step = _training()
    batches = _batches()
    with pytest.warns(PolicyViolationWarning, match="eagerly"):
        graphed = xrt_torch.capture_graph(step, *batches[0], state=(model, opt), fallback="warn")
    assert not graphed.captured and graphed.violations[0].actual == "eager execution"
    losses = [graphed(x, y).item() for x, y in batches]
    ref_model, _, ref_step = _training()
    assert losses == [ref_step(x, y).item() for x, y in batches]
    for a, b in zip(model.parameters(), ref_model.parameters()):
        assert torch.equal(a, b)


def test_allow_runs_eagerly_in_silence_and_the_active_policy_decides_by_default():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        graphed = xrt_torch.capture_graph(lambda x: x + 1, torch.zeros(3), fallback="allow")
    assert torch.equal(graphed(torch.ones(3)), torch.full((3,), 2.0))
    with xrt_torch.policy(exec_policy={"fallback": "error"}):
        with pytest.raises(xrt.PolicyViolationError):
            xrt_torch.capture_graph(lambda x: x + 1, torch.zeros(3))
    with pytest.raises(xrt.PolicyError, match="fallback"):
        xrt_torch.capture_graph(lambda x: x, torch.zeros(1), fallback="never")
