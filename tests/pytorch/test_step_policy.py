"""A training step as the unit of a policy: ``compile_step`` (execution.compile in the training policy) and the
tuner's whole-step check (``check_end_to_end``, ``tune --entry``'s end_to_end lock section). CPU; no timed
assertions: what is checked is that the outcome and the written policy agree with the figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

pytestmark = pytest.mark.torch

import xpuruntime.pytorch as xrt_torch  # noqa: E402
from xpuruntime import Policy, PolicyError  # noqa: E402
from xpuruntime.cli import app  # noqa: E402
from xpuruntime.policies.lock import Lock  # noqa: E402


def _workload() -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.Tensor]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.LayerNorm(32), torch.nn.Linear(32, 8))
    return model, torch.optim.SGD(model.parameters(), lr=0.1), torch.randn(4, 6, 16)


def test_compile_step_compiles_in_the_policys_mode_and_runs_under_the_policy():
    model, _, x = _workload()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        reference = model(x).detach()
    step = xrt_torch.compile_step(model, {"execution": {"precision": "bf16", "compile": "default"}})
    assert step.mode == "default" and step.notes == []
    out = step(x)  # the policy's autocast is on around the compiled call
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), reference.float(), rtol=2e-2, atol=2e-2)
    assert xrt_torch.compile_step(model, {"execution": {"compile": "max-autotune"}}).mode == "max-autotune"
    off = xrt_torch.compile_step(model, Policy())
    assert off.mode == "default" and "off" in off.notes[0]
    with pytest.raises(PolicyError, match="compile mode"):
        xrt_torch.compile_step(model, mode="fastest")


def _step_fn():
    model, opt, x = _workload()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        model(x).square().mean().backward()
        opt.step()

    return step


TUNED = {"kernels": {
    "matmul": {"prefer": "default", "rules": [{"when": {"m": 24, "n": 32, "k": 16}, "use": ["default"]}]},
    "layernorm": {"prefer": "default", "rules": [{"when": {"rows": 24, "hidden": 32}, "use": ["native"]}]}}}


def test_check_end_to_end_writes_a_policy_that_matches_its_figures():
    base, tuned = Policy(), Policy.from_dict(TUNED)
    outcome = xrt_torch.check_end_to_end(_step_fn(), base, tuned, warmup=1, repeats=2, rounds=2)
    times = outcome.data["times"]
    assert set(times) == {"base", "tuned", "only matmul", "only layernorm"}
    assert outcome.data["ops"] == ["matmul", "layernorm"] and outcome.why == outcome.data["why"]
    assert outcome.written in ("tuned", "partial", "base")
    if outcome.written == "base":
        assert outcome.policy == base and "wrote the base policy" in outcome.why
    elif outcome.written == "tuned":
        assert outcome.policy == tuned and times["tuned"]["ms"] <= times["base"]["ms"]
    else:
        kept = outcome.data["kept"]
        assert 0 < len(kept) < 2 and set(outcome.policy.kernels.ops) == set(kept)
        assert outcome.data["partial_times"]["partial"]["ms"] <= outcome.data["partial_times"]["base"]["ms"]


def test_check_end_to_end_without_rules_keeps_the_tuned_policy():
    outcome = xrt_torch.check_end_to_end(_step_fn(), Policy(), Policy(), repeats=1, rounds=1)
    assert outcome.written == "unchanged" and outcome.data["ops"] == []


WORKLOAD = '''
import torch

torch.manual_seed(0)
MODEL = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.LayerNorm(32))
X = torch.randn(2, 8, 16)

def step():
    MODEL(X).sum().backward()
'''


def test_tune_entry_records_the_end_to_end_check_in_the_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "e2e_workload.py").write_text(WORKLOAD)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["tune", "--entry", "e2e_workload:step", "--repeats", "2", "--warmup", "1",
                                      "-o", "tuned.yaml", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    lock = Lock.load("tuned.lock.json")
    section = lock.end_to_end
    assert section == summary["end_to_end"] and section["written"] in ("unchanged", "tuned", "partial", "base")
    assert any(n.startswith("end-to-end: ") for n in summary["notes"])
    if section["written"] == "base":
        assert lock.tuned_policy.kernels.ops == []
    skipped = CliRunner().invoke(app, ["tune", "--entry", "e2e_workload:step", "--repeats", "2", "--no-check",
                                       "-o", "unchecked.yaml", "--json"])
    assert skipped.exit_code == 0 and json.loads(skipped.stdout)["end_to_end"] is None
