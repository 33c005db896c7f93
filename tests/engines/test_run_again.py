"""``Engine.run``'s repeat path (issue 13): a run of torch tensors into caller-owned torch tensors is repeated with no
check while the caller passes the same tensors again, and any change a check depends on takes the full path.

The engine here is plumbing only (torch on the CPU, ``y = relu(x @ w)``): it counts which path each run took. The
ONNX Runtime engine's repeat (``run_with_iobinding`` of its binding) runs on CUDA in ``tests/gpu/test_ort_cuda.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest

import xpuruntime as xrt
from xpuruntime.inference import registered_engine
from xpuruntime.inference.engine import Engine
from xpuruntime.inference.feeds import TensorInfo
from xpuruntime.inference.plan import Plan
from xpuruntime.inference.samples import matmul_relu
from xpuruntime.receipts import ExecutionReport

torch = pytest.importorskip("torch")


class TensorEngine(Engine):
    """Takes torch tensors as they are and writes into caller-owned torch tensors; counts full runs and repeats."""

    name = "tensor-example"
    module = "torch"
    package = "torch"
    devices = ("cpu",)
    output_buffers = ("torch",)

    def translate(self, policy: Any, device: Any, options: Mapping[str, Any]) -> Plan:
        return Plan({}, requested={}, targets=("torch",))

    def load_impl(self) -> None:
        from onnx.numpy_helper import to_array

        self.weight = torch.from_numpy(to_array(self.model.proto.graph.initializer[0]).copy())
        self.full, self.repeats = 0, 0

    def inputs_impl(self) -> list[TensorInfo]:
        return [TensorInfo("x", ("m", self.weight.shape[0]), "float32")]

    def outputs_impl(self) -> list[TensorInfo]:
        return [TensorInfo("y", ("m", self.weight.shape[1]), "float32")]

    def check_feeds(self, feeds: Any, checker: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
        return dict(feeds) if isinstance(feeds, dict) and all(isinstance(v, torch.Tensor) for v in feeds.values()) \
            else checker(feeds)

    def run_impl(self, feeds: dict[str, Any], output_names: Sequence[str], outputs: Any) -> list[Any]:
        self.full += 1
        y = torch.relu(torch.as_tensor(feeds["x"]) @ self.weight)
        if outputs:
            outputs["y"].copy_(y)
            return [outputs["y"]]
        return [y.numpy()]

    def again_impl(self, feeds: dict[str, Any], output_names: Sequence[str],
                   outputs: dict[str, Any]) -> Callable[[], None] | None:
        x, y, w = feeds["x"], outputs["y"], self.weight

        def again() -> None:
            self.repeats += 1
            torch.matmul(x, w, out=y)
            y.relu_()
        return again

    def report_impl(self, report: ExecutionReport) -> None:
        report.evidence.append("torch on the CPU")


@pytest.fixture()
def sess() -> Any:
    with registered_engine(TensorEngine), xrt.InferenceSession(matmul_relu(k=4, n=4), engine="tensor-example") as s:
        yield s


def _want(sess: Any, x: Any) -> Any:
    return torch.relu(x @ sess.engine.weight)


def test_the_same_tensors_again_take_the_repeat_and_see_new_values(sess: Any) -> None:
    x, y = torch.randn(3, 4), torch.empty(3, 4)
    out = sess.run({"x": x}, outputs={"y": y})
    assert out["y"] is y and sess.engine.full == 1
    for _ in range(3):
        x.copy_(torch.randn(3, 4))  # refilled in place, as a serving loop does
        out = sess.run({"x": x}, outputs={"y": y})
        assert out == {"y": y} and torch.equal(y, _want(sess, x))
    assert (sess.engine.full, sess.engine.repeats) == (1, 3)
    assert [s["name"] for s in sess.engine._spans.items()][-4:] == ["run"] * 4  # every run is still a span


@pytest.mark.parametrize("change", ["other tensor", "resized", "transposed in place", "dtype", "other storage",
                                    "output resized", "extra feed", "output names", "a list"])
def test_anything_a_check_depends_on_takes_the_full_path(sess: Any, change: str) -> None:
    x, y = torch.randn(4, 4), torch.empty(4, 4)
    sess.run({"x": x}, outputs={"y": y})
    feeds: Any = {"x": x}
    outputs, names = {"y": y}, None
    if change == "other tensor":
        feeds = {"x": x.clone()}
    elif change == "resized":
        x.resize_(2, 4)
    elif change == "transposed in place":  # same address, shape and dtype; no longer contiguous
        x.t_()
    elif change == "dtype":
        x.data = x.data.view(torch.int32)
    elif change == "other storage":
        x.set_(torch.randn(4, 4))
    elif change == "output resized":
        y.resize_(2, 4)
    elif change == "extra feed":
        feeds = {"x": x, "z": x}
    elif change == "output names":
        names = ["y"]
    elif change == "a list":
        feeds = [x]
    try:
        sess.run(feeds, names, outputs=outputs)
    except xrt.XpuRuntimeError:
        pass  # refused by the full check: what matters is that the repeat did not run
    assert sess.engine.repeats == 0 and sess.engine.full >= 1


def test_outputs_that_do_not_cover_every_name_or_numpy_feeds_never_repeat(sess: Any) -> None:
    x = torch.randn(2, 4)
    for _ in range(2):
        sess.run({"x": x.numpy()}, outputs={"y": torch.empty(2, 4)})
        sess.run({"x": x})
    assert sess.engine.repeats == 0 and sess.engine._again is None


def test_a_closed_session_refuses_the_repeat_too(sess: Any) -> None:
    x, y = torch.randn(2, 4), torch.empty(2, 4)
    sess.run({"x": x}, outputs={"y": y})
    sess.close()
    with pytest.raises(xrt.XpuRuntimeError, match="closed"):
        sess.run({"x": x}, outputs={"y": y})


def test_an_error_in_the_repeat_is_wrapped_and_the_session_stays_usable(sess: Any) -> None:
    x, y = torch.randn(2, 4), torch.empty(2, 4)
    sess.run({"x": x}, outputs={"y": y})
    sess.engine._again.call = lambda: (_ for _ in ()).throw(RuntimeError("device lost"))
    with pytest.raises(xrt.XpuRuntimeError, match="failed during the run: device lost"):
        sess.run({"x": x}, outputs={"y": y})
    out = sess.run({"x": x.clone()}, outputs={"y": y})
    assert torch.equal(out["y"], _want(sess, x))
