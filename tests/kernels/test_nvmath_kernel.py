"""The nvmath matmul kernel's own logic on the CPU, against a stand-in for nvmath-python's ``Matmul``.

The stand-in has the API the kernel uses (``Matmul(a, b, stream=)``, ``plan(preferences=, stream=)`` returning
``Algorithm``-like objects with ``algorithm_id``/``tile``/... attributes, ``reset_operands``, ``execute(algorithm=)``,
``free``), so planning, algorithm pinning, the plan cache and the dispatch checks are tested here; the real
library runs in tests/gpu/test_tuning_gpu.py.
"""

from __future__ import annotations

import sys
import types
import warnings

import pytest
import torch

pytestmark = pytest.mark.torch

import xpuruntime.kernels as xk  # noqa: E402
from xpuruntime import KernelPolicy  # noqa: E402
from xpuruntime.kernels import nvmath_matmul as nm  # noqa: E402
from xpuruntime.kernels.registry import DispatchContext  # noqa: E402


class FakeAlgorithm:
    def __init__(self, i: int, layout: tuple[str, str]) -> None:
        self.algorithm_id = 20 + i % 3
        self.tile = i + (0 if layout == ("row", "row") else 100)  # another layout, other algorithms
        self.stages = 2 * i
        self.split_k = 1
        self.reduction_scheme = 0
        self.cta_swizzling = i % 2
        self.custom_option = 0
        self.inner_shape = 0

    @property
    def cluster_shape(self):  # a toolkit without this attribute: left out of the description
        raise AttributeError("not supported by this cuBLASLt")


class FakeMatmul:
    created: list[FakeMatmul] = []

    def __init__(self, a, b, *, stream=None) -> None:
        self.a, self.b = a, b
        self.layout = (nm._layout(tuple(a.shape), a.stride()), nm._layout(tuple(b.shape), b.stride()))
        self.executed: list[FakeAlgorithm] = []
        FakeMatmul.created.append(self)

    def plan(self, *, preferences=None, stream=None):
        self.algorithms = tuple(FakeAlgorithm(i, self.layout) for i in range(preferences["limit"]))
        return self.algorithms

    def reset_operands(self, a=None, b=None, *, stream=None) -> None:
        self.a, self.b = a, b

    def execute(self, *, algorithm=None, stream=None):
        assert algorithm in self.algorithms, "nvmath refuses an algorithm that is not from this plan"
        self.executed.append(algorithm)
        return self.a @ self.b

    def free(self) -> None:
        pass


@pytest.fixture
def fake_nvmath(monkeypatch):
    advanced = types.ModuleType("nvmath.linalg.advanced")
    advanced.Matmul = FakeMatmul
    linalg = types.ModuleType("nvmath.linalg")
    linalg.advanced = advanced
    root = types.ModuleType("nvmath")
    root.linalg = linalg
    for name, mod in (("nvmath", root), ("nvmath.linalg", linalg), ("nvmath.linalg.advanced", advanced)):
        monkeypatch.setitem(sys.modules, name, mod)
    FakeMatmul.created.clear()
    nm.clear_plans()
    nm.clear_executed_algorithms()
    yield FakeMatmul
    nm.clear_plans()


def _ctx(a, b) -> DispatchContext:
    return DispatchContext("matmul", device="cuda", dtype="fp32", dims={"batch": 1, "m": a.shape[0], "n": b.shape[1],
                                                                         "k": a.shape[1]},
                           shapes=(tuple(a.shape), tuple(b.shape)), strides=(a.stride(), b.stride()))


def test_variants_describe_every_algorithm_of_the_plan_as_plain_params(fake_nvmath):
    a, b = torch.randn(32, 16), torch.randn(16, 8)
    variants = nm.variants_for(a, b, limit=4)
    assert [v["rank"] for v in variants] == [0, 1, 2, 3]
    assert variants[2] == {"algorithm": {"id": 22, "tile": 2, "stages": 4, "split_k": 1, "reduction_scheme": 0,
                                         "cta_swizzling": 0, "custom_option": 0, "inner_shape": 0},
                           "layout": ["row", "row"], "limit": 4, "rank": 2}


def test_a_pinned_algorithm_is_the_one_executed_and_plans_are_reused(fake_nvmath):
    a, b = torch.randn(32, 16), torch.randn(16, 8)
    pinned = nm.variants_for(a, b)[3]
    out = nm.matmul(a, b, params=pinned)
    torch.testing.assert_close(out, a @ b)
    a.copy_(torch.randn(32, 16))
    torch.testing.assert_close(nm.matmul(a, b, params=pinned), a @ b)  # same problem and alignment: same plan
    assert len(fake_nvmath.created) == 1
    mm = fake_nvmath.created[0]
    assert [x.tile for x in mm.executed] == [3, 3]
    last = nm.executed_algorithms()[-1]
    assert last["algorithm"] == pinned["algorithm"] and last["matched"] is True and (last["m"], last["n"]) == (32, 8)


def test_without_params_the_plans_first_algorithm_runs(fake_nvmath):
    a, b = torch.randn(4, 2, 16), torch.randn(16, 8)  # batch dims fold into M
    out = nm.matmul(a, b)
    torch.testing.assert_close(out, a @ b)
    assert fake_nvmath.created[0].executed[0].tile == 0 and nm.executed_algorithms()[-1]["pinned"] is None


def test_an_algorithm_cublaslt_no_longer_offers_runs_its_first_choice_with_a_warning(fake_nvmath):
    a, b = torch.randn(32, 16), torch.randn(16, 8)
    pinned = {"algorithm": {"id": 99, "tile": 7}, "limit": 8}
    with pytest.warns(RuntimeWarning, match="not among the 8 algorithms"):
        nm.matmul(a, b, params=pinned)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per problem and pin
        nm.matmul(a, b, params=pinned)
    assert nm.executed_algorithms()[-1]["matched"] is False


def test_dispatch_checks_layout_and_params(fake_nvmath):
    a, b = torch.randn(32, 16), torch.randn(8, 16).t()  # b column-major, as F.linear's weight.t()
    pinned = nm.variants_for(torch.randn(32, 16), torch.randn(16, 8))[1]  # measured with b row-major
    reason = nm.check_params(_ctx(a, b), pinned)
    assert "tuned for operands laid out row/row" in reason and "row/col" in reason
    assert nm.check_params(_ctx(a, b), {**pinned, "layout": ["row", "col"]}) is None
    assert "integer 'id'" in nm.check_params(_ctx(a, b), {"algorithm": {"tile": 1}})
    assert "unknown params" in nm.check_params(_ctx(a, b), {"algorithm": {"id": 1}, "tiles": 3})
    assert "batched b" in nm.supports(DispatchContext("matmul", shapes=((2, 4, 8), (2, 8, 4))))
    assert nm.supports(_ctx(a, b)) is None


def test_the_dispatcher_passes_a_rules_params_to_the_kernel(fake_nvmath, monkeypatch):
    from xpuruntime.kernels import registry

    monkeypatch.setattr(registry, "module_available", lambda name: True)  # the stand-in counts as installed
    a, b = torch.randn(32, 16), torch.randn(16, 8)
    pinned = nm.variants_for(a, b)[2]
    kp = KernelPolicy().set("matmul", ["nvmath", "default"], when={"m": 32, "n": 8, "k": 16},
                            params={"nvmath": pinned})
    with xk.dispatch_logging() as records:
        sel = xk.Dispatcher().select("matmul", _ctx(a, b), kp)
    assert sel.kernel == "nvmath" and sel.params == pinned and "with the policy's params" in sel.reason
    assert records[0].params == pinned
    sel.forward()(a, b)
    assert nm.executed_algorithms()[-1]["algorithm"] == pinned["algorithm"]
    other = _ctx(a, torch.randn(8, 16).t())  # F.linear's layout: the pin does not apply, the default runs
    sel = xk.Dispatcher().select("matmul", other, kp, log=False)
    assert sel.kernel == "default" and "tuned for operands laid out row/row" in sel.skipped[0][1]


def test_tuning_measures_each_algorithm_and_the_tuned_policy_runs_the_winner(fake_nvmath):
    """The tuner's path through nvmath's variants, on the CPU: a registry whose nvmath kernel runs anywhere."""
    import time

    from xpuruntime.kernels import tuner as T
    from xpuruntime.kernels.registry import KernelRegistry

    def slow_default(a, b):
        time.sleep(0.005)
        return a @ b

    reg = KernelRegistry()
    reg.register("matmul", "default", forward=slow_default, default=True)
    reg.register("matmul", "nvmath", forward=nm.matmul, supports=nm.supports, check_params=nm.check_params,
                 variants=nm.variants)
    target = T.parse_spec("matmul:fp32:64x32x48:nt")
    record = T.Tuner(registry=reg, warmup=1, repeats=3).tune_one(target)
    ranks = [c.params["rank"] for c in record.candidates if c.kernel == "nvmath"]
    assert ranks == list(range(nm.DEFAULT_LIMIT)) and all(c.status == "ok" for c in record.candidates)
    assert all(c.params["layout"] == ["row", "col"] for c in record.candidates if c.kernel == "nvmath")
    winner = min(record.candidates, key=lambda c: c.time_ms)
    assert record.kernel == "nvmath" and record.params == winner.params  # the default sleeps: an algorithm wins
    a, b = T.make_inputs(target, 3)
    sel = xk.Dispatcher(reg).select("matmul", target.context(), T.build_policy([record]), log=False)
    assert sel.kernel == "nvmath" and sel.params == record.params
    sel.forward()(a, b)
    assert nm.executed_algorithms()[-1]["algorithm"] == record.params["algorithm"]
