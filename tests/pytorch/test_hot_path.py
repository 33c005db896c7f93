"""The per-run application of a policy (an engine's hot path): cheap, and still exact about torch's switches."""

from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.torch

import xpuruntime as xrt
import xpuruntime.pytorch as xrt_torch
from xpuruntime.pytorch import _flags, _state, applied_policy, translate


def _plan(**execution):
    policy = xrt.Policy(kernels={"attention": ["flash", "math"]}, execution=xrt.ExecutionPolicy(**execution))
    return policy, translate(policy, execution=True)


def test_runs_inside_blocks_and_blocks_inside_runs_restore_every_switch(switches):
    before = switches()
    outer, outer_plan = _plan(precision="tf32", deterministic=True)
    inner, inner_plan = _plan(precision="fp32", num_threads=1)
    with xrt_torch.policy(outer):
        in_block = switches()
        for _ in range(3):
            with applied_policy(inner, inner_plan, receipt=False):
                with xrt_torch.policy(exec_policy={"precision": "tf32"}):
                    pass
            assert switches() == in_block
    assert switches() == before
    for _ in range(2):
        with applied_policy(outer, outer_plan, receipt=False):
            with xrt_torch.policy(inner):
                pass
            assert _flags.fp32_state()["matmul"] == "tf32"
        assert switches() == before


def _overlapping_runs(plans, *, both_in=None, first_out=None, in_run=None) -> list[BaseException]:
    """``plans[0]`` then ``plans[1]`` applied in two threads whose runs overlap; the first one in leaves first.
    ``both_in()`` runs while both are inside, ``first_out()`` after the first left, ``in_run(i)`` inside run ``i``.
    Returns the threads' errors."""
    entered, release = [threading.Event(), threading.Event()], [threading.Event(), threading.Event()]
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            with applied_policy(*plans[i], receipt=False):
                if in_run is not None:
                    in_run(i)
                entered[i].set()
                release[i].wait(10)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in (0, 1)]
    threads[0].start()
    entered[0].wait(10)
    threads[1].start()
    entered[1].wait(10)
    if both_in is not None:
        both_in()
    release[0].set()
    threads[0].join(10)
    if first_out is not None:
        first_out()
    release[1].set()
    threads[1].join(10)
    return errors


def test_runs_of_two_threads_leave_in_either_order_and_the_switches_come_back(switches):
    before = switches()
    plans = [_plan(precision="tf32"), _plan(precision="fp32", deterministic=True)]
    seen: list[bool] = []  # the first one in leaves first: the second keeps its switches
    errors = _overlapping_runs(plans, first_out=lambda: seen.append(torch.are_deterministic_algorithms_enabled()))
    assert seen == [True]
    assert not errors and switches() == before


def _replayed(plan) -> bool:
    hit = _state._programs.get(id(plan))
    return hit is not None and hit[0] is plan and hit[2] is not None


def test_a_plan_run_again_replays_its_writes_and_every_run_leaves_the_switches_exact(switches):
    before, snap = switches(), _flags.snapshot()
    policy, plan = _plan(precision="fp32", deterministic=True, num_threads=1)
    for i in range(4):
        with applied_policy(policy, plan, receipt=False):
            assert _flags.fp32_state() == {"matmul": "ieee", "conv": "ieee"}
            assert torch.are_deterministic_algorithms_enabled() and torch.get_num_threads() == 1
            assert _state._stack[-1].program is not None or i == 0  # the first run writes the general way
        assert switches() == before and _flags.snapshot() == snap and not _state._stack
    assert _replayed(plan)


def test_switches_moved_between_runs_take_the_general_path_and_stay_as_the_caller_left_them(switches):
    policy, plan = _plan(precision="fp32")
    for _ in range(2):
        with applied_policy(policy, plan, receipt=False):
            pass
    original = _flags.snapshot()
    torch.set_float32_matmul_precision("medium")
    torch.backends.cudnn.allow_tf32 = not torch.backends.cudnn.allow_tf32
    try:
        moved, snap = switches(), _flags.snapshot()
        for _ in range(2):
            with applied_policy(policy, plan, receipt=False):
                assert _flags.fp32_state() == {"matmul": "ieee", "conv": "ieee"}
            assert switches() == moved and _flags.snapshot() == snap
    finally:
        _flags.restore(original)


def test_a_switch_moved_inside_a_replayed_run_is_put_back(switches):
    before, snap = switches(), _flags.snapshot()
    policy, plan = _plan(precision="fp32", deterministic=True)
    for _ in range(3):
        with applied_policy(policy, plan, receipt=False):
            torch.set_float32_matmul_precision("medium")  # the model's code moves a switch the plan holds
            torch.use_deterministic_algorithms(False)
        assert switches() == before and _flags.snapshot() == snap


def test_replayed_runs_of_two_threads_leave_in_either_order_and_the_switches_come_back(switches):
    before = switches()
    plans = [_plan(precision="tf32"), _plan(precision="fp32", deterministic=True)]
    for p in plans:
        for _ in range(2):
            with applied_policy(*p, receipt=False):
                pass
    assert all(_replayed(p[1]) for p in plans)
    seen: list[object] = []
    errors = _overlapping_runs(  # the second one in is on top; the first one in leaves first (the general path)
        plans, both_in=lambda: seen.append(_flags.fp32_state()["matmul"]),
        first_out=lambda: seen.append((torch.are_deterministic_algorithms_enabled(), _flags.fp32_state()["matmul"])))
    assert seen == ["ieee", (True, "ieee")]
    assert not errors and switches() == before and not _state._stack


def test_a_replayed_run_rewritten_when_a_frame_below_it_leaves_puts_back_what_was_before_it(switches):
    """A run replayed over another thread's switches (its remembered start includes them) is written again when
    that thread leaves first; leaving afterwards must not put the other thread's switches back."""
    before = switches()
    outer, inner = _plan(precision="tf32"), _plan(precision="fp32", deterministic=True)
    with applied_policy(*outer, receipt=False):
        for _ in range(3):  # inner's replay remembered over outer's switches
            with applied_policy(*inner, receipt=False):
                pass
    fast: list[bool] = []
    errors = _overlapping_runs((outer, inner), in_run=lambda i: i == 1 and fast.append(
        _state._stack[-1].program is not None))
    assert not errors
    assert fast == [True] and switches() == before and not _state._stack


def test_an_error_inside_a_run_restores_the_switches_and_propagates(switches):
    before = switches()
    policy, plan = _plan(precision="fp32", deterministic=True)
    with pytest.raises(ValueError, match="boom"):
        with applied_policy(policy, plan, receipt=False):
            raise ValueError("boom")
    assert switches() == before and not _state._stack


def test_a_plan_with_nothing_to_set_reads_no_switches(monkeypatch):
    policy = xrt.Policy(execution=xrt.ExecutionPolicy(precision="bf16"))
    plan = translate(policy, execution=True, device="cuda")
    assert plan.settings == {}
    monkeypatch.setattr(_flags, "snapshot", lambda *a, **k: pytest.fail("a switch was read"))
    with applied_policy(policy, plan, device_type="cpu", receipt=False):
        assert _state.active().policy is policy and torch.is_autocast_enabled("cpu")


def test_restoring_only_what_changed_keeps_the_fp32_flags_of_both_apis_exact(switches):
    before = switches()
    snap = _flags.snapshot()
    torch.set_float32_matmul_precision("medium")  # a legacy write moves the new-API flags too
    torch.backends.cudnn.allow_tf32 = not torch.backends.cudnn.allow_tf32
    _flags.restore(snap, changed_only=True)
    assert switches() == before and _flags.snapshot() == snap


def test_a_write_that_warns_stays_silenced_every_time(monkeypatch):
    calls = []

    def noisy(value):
        calls.append(value)
        warnings.warn("experimental switch", UserWarning)

    monkeypatch.setitem(_flags.SETTINGS, "cudnn.benchmark", noisy)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(3):
            _flags.restore({"cudnn.benchmark": True})
    assert calls == [True, True, True]
    assert ("write", "cudnn.benchmark", "True") not in _flags._QUIET


class _CpuGraph:
    """Stands in for torch.cuda.CUDAGraph on the CPU (plumbing only): a replay recomputes into the static outputs."""

    def __init__(self, fn, static_args, outputs):
        self.fn, self.static_args, self.outputs = fn, static_args, outputs
        self.replays = 0

    def replay(self):
        self.replays += 1
        with torch.inference_mode():
            self.outputs.copy_(self.fn(*self.static_args))


def test_a_captured_graph_fed_numpy_copies_into_its_static_inputs_and_returns_fresh_host_outputs():
    import numpy as np

    from xpuruntime.pytorch._graphs import CapturedGraph

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.GELU(), torch.nn.Linear(8, 3)).eval()
    x = torch.randn(2, 8)
    session = xrt.InferenceSession(model, engine="torch", device="cpu", engine_options={"example_inputs": (x,)})
    eng = session.engine
    static = (x.clone(),)
    with torch.inference_mode():
        out = model(*static).clone()
    fake = _CpuGraph(model, static, out)
    eng._graph = CapturedGraph(model, static, graph=fake, outputs=out)
    eng._replay = eng._replayer()
    name = session.input_info[0].name
    a, b = np.random.default_rng(0).standard_normal((2, 2, 8)).astype(np.float32)
    first = session.run({name: a})
    second = session.run({name: b})
    with torch.inference_mode():
        want_a, want_b = model(torch.from_numpy(a)).numpy(), model(torch.from_numpy(b)).numpy()
    assert fake.replays == 2
    assert np.allclose(first["output"], want_a, atol=1e-6) and np.allclose(second["output"], want_b, atol=1e-6)
    with pytest.raises(xrt.InputError, match="size 3 on axis 0"):
        session.run({name: np.zeros((3, 8), np.float32)})  # another shape: refused, never replayed
    assert fake.replays == 2


def test_ieee_fp32_on_cuda_says_what_it_costs_and_the_cpu_plan_does_not():
    policy = xrt.Policy(execution=xrt.ExecutionPolicy(precision="fp32"))
    assert any("precision: tf32" in n for n in translate(policy, execution=True, device="cuda").notes)
    assert not any("precision: tf32" in n for n in translate(policy, execution=True, device="cpu").notes)


def test_numpy_feeds_reach_the_module_as_inference_tensors_as_a_hand_written_loop_makes_them():
    """torch.compile guards on the kind of tensor: an engine fed numpy must hand the module what
    ``with torch.inference_mode(): model(torch.from_numpy(x))`` does, or it compiles a second variant and runs the
    slower one (reduce-overhead cost ~150 us more per call on an H100 before this)."""
    seen: list[tuple[bool, bool]] = []

    class Spy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(8, 4)

        def forward(self, ids: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            seen.append((ids.is_inference(), x.is_inference()))
            return self.emb(ids).sum(-1) + x

    ids, x = torch.zeros(2, 3, dtype=torch.int64), torch.randn(2, 3)
    for precision in ("fp32", "bf16"):
        sess = xrt.InferenceSession(Spy(), engine="torch", exec_policy={"precision": precision},
                                    engine_options={"example_inputs": (ids, x)})
        seen.clear()
        out = sess.run({"ids": ids.numpy(), "x": x.numpy()})
        assert seen == [(True, True)] and out["output"].shape == (2, 3)
        seen.clear()
        sess.run([ids, x])  # the caller's own tensors are passed as they are (no copy to make them inference tensors)
        assert seen == [(False, precision == "bf16")]  # (a cast input is a new tensor, made in inference mode)


@pytest.mark.parametrize("inline", [True, False], ids=["contextvars-inline", "scope-object"])
def test_numpy_runs_after_the_first_take_the_lean_path_with_the_same_results_scope_and_errors(inline, monkeypatch):
    """From the second numpy run on, the torch engine runs a prepared path (no per-run decisions): the results,
    the policy in force inside the module, the cast and the error wrapping are those of the general path. A plan
    that sets nothing (bf16 here, with no NVTX range to open) has its scope's two ContextVars set inline. A prepared
    run (``session.prepare``) runs the same body."""
    monkeypatch.setattr(_state, "nvtx_attached", lambda: not inline)
    monkeypatch.setattr(_state, "_HOT", {})
    seen: list[object] = []

    class Probe(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(4, 3)

        def forward(self, x: torch.Tensor, ids: torch.Tensor) -> dict[str, torch.Tensor]:
            from xpuruntime.kernels import active_policy

            state = _state.active()
            seen.append((state.policy.execution.precision if state else None, x.dtype, x.is_inference(),
                         state is not None and active_policy().hash == state.policy.hash))
            if bool((ids < 0).any()):
                raise RuntimeError("negative id")
            return {"y": self.lin(x), "n": ids.sum(-1)}

    x, ids = torch.randn(2, 4), torch.ones(2, 3, dtype=torch.int64)
    sess = xrt.InferenceSession(Probe(), engine="torch", exec_policy={"precision": "bf16"},
                                engine_options={"example_inputs": (x, ids)})
    eng = sess.engine
    assert (_state.prepared(eng.policy, eng.plan.native, eng.device_kind) is not None) == inline
    feeds = {"x": x.numpy(), "ids": ids.numpy()}
    first = sess.run(feeds)
    assert eng._replay is not None  # prepared by the first numpy run
    seen.clear()
    again = sess.run(feeds)
    assert seen == [("bf16", torch.bfloat16, True, True)]  # both ContextVars: the engine's policy
    assert eng._replay.__name__ == ("run_inline" if inline else "run")
    for k in ("y", "n"):
        assert again[k].dtype == first[k].dtype and np.array_equal(again[k], first[k])
    assert again["y"].dtype == np.float32 and sess.run(feeds, ["n"])["n"].tolist() == [3, 3]
    tensors = sess.run({"x": x, "ids": ids})  # tensors: the general path, tensors back
    assert isinstance(tensors["y"], torch.Tensor)
    with pytest.raises(xrt.XpuRuntimeError, match="negative id"):
        sess.run({"x": x.numpy(), "ids": -ids.numpy()})
    assert sess.run(feeds)["n"].tolist() == [3, 3] and not _state._stack and _state.active() is None
    from xpuruntime.kernels import active_policy

    assert active_policy() is not eng.policy and not list(active_policy().kernels.ops)  # nor the kernels policy
    # session.prepare's call (the same one-frame body, without the feed-kind test): the same policy, cast, results
    run = sess.prepare(feeds)
    seen.clear()
    got = run(feeds)
    assert seen == [("bf16", torch.bfloat16, True, True)]
    for k in ("y", "n"):
        assert got[k].dtype == first[k].dtype and np.array_equal(got[k], first[k])
    with pytest.raises(xrt.XpuRuntimeError, match="negative id"):
        run({"x": x.numpy(), "ids": -ids.numpy()})
    assert run(feeds)["n"].tolist() == [3, 3] and not _state._stack and _state.active() is None


def test_a_cast_model_returning_a_namedtuple_gives_float32_on_the_first_run_and_after():
    from collections import namedtuple

    Out = namedtuple("Out", ["y", "z"])

    class Pair(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> Out:
            y = self.lin(x)
            return Out(y, y * 2)

    x = torch.randn(2, 4)
    sess = xrt.InferenceSession(Pair(), engine="torch", exec_policy={"precision": "fp16"},  # numpy holds fp16
                                engine_options={"example_inputs": (x,)})
    runs = [sess.run({"x": x.numpy()}) for _ in range(3)]
    assert sess.engine._replay is not None
    for out in runs:
        assert [v.dtype for v in out.values()] == [np.float32, np.float32]
        assert np.array_equal(out[next(iter(out))], runs[0][next(iter(out))])
