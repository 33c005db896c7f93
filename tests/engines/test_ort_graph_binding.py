"""The CUDA-graph binding of the ONNX Runtime engine, driven on the CPU provider with real ONNX Runtime.

``GraphBinding`` takes every output's shape and dtype from ONNX Runtime's own first run, never from ONNX shape
inference: that knows neither ORT's fused contrib ops (``fusions: bert`` -> ``SkipLayerNormalization``) nor the
free-dimension overrides of ``fixed_shapes`` (a dynamic-batch CNN). On the GPU the same binding runs under
``cuda_graphs`` (tests/gpu/test_ort_cuda.py); here its OrtValues live on the CPU, which exercises the same calls.

The CPU provider captures nothing, so which buffer a replay writes is tested on a fake session that behaves as
ONNX Runtime's CUDA-graph session does (``InferenceSession::Run`` recurses through the warm-up runs into the
capture inside the first call; later calls are bare ``ReplayGraph()`` into the captured addresses). That test is
plumbing only: the numbers come from the GPU tests.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from xpuruntime.errors import InputError
from xpuruntime.inference import InferenceSession
from xpuruntime.inference.engines import _onnxruntime as tr
from xpuruntime.inference.samples import tiny_convnet, tiny_transformer

ort = pytest.importorskip("onnxruntime")


def _binding(sess: InferenceSession) -> tuple[Any, Any]:
    session = sess.engine.session
    graph = tr.GraphBinding(ort, session, 0, device="cpu")
    return graph, lambda binding: session.run_with_iobinding(binding)


def test_fused_contrib_ops_get_their_output_shapes_from_onnx_runtime() -> None:
    x0 = np.random.default_rng(0).standard_normal((2, 8, 64)).astype(np.float32)
    sess = InferenceSession(tiny_transformer(), exec_policy={"fusions": "bert",
                                                             "fixed_shapes": {"x": list(x0.shape)}})
    assert any(n.domain == "com.microsoft" for n in sess.engine.model.proto.graph.node)
    graph, run = _binding(sess)
    kept = x0.copy()
    rng = np.random.default_rng(1)
    for x in (x0, *(rng.standard_normal(x0.shape).astype(np.float32) for _ in range(3))):
        (y,) = graph.run({"x": x}, ["y"], run)
        np.testing.assert_allclose(y, sess.engine.session.run(["y"], {"x": x})[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(x0, kept)  # the first feed was copied in, never written to


def test_a_dynamic_batch_cnn_with_fixed_shapes_binds_a_static_output() -> None:
    x = np.random.default_rng(2).standard_normal((3, 3, 32, 32)).astype(np.float32)
    sess = InferenceSession(tiny_convnet(), exec_policy={"fixed_shapes": {"x": list(x.shape)}})
    assert sess.engine.session.get_outputs()[0].shape[0] in ("batch", None, 3)
    graph, run = _binding(sess)
    for scale in (1.0, -2.0):
        (logits,) = graph.run({"x": x * scale}, ["logits"], run)
        assert logits.shape == (3, 10)
        np.testing.assert_allclose(logits, sess.run({"x": x * scale})["logits"], rtol=1e-5, atol=1e-5)
    assert list(graph.outputs["logits"].shape()) == [3, 10]


def test_a_new_shape_after_capture_is_an_input_error() -> None:
    x = np.ones((2, 3, 32, 32), np.float32)
    sess = InferenceSession(tiny_convnet(), exec_policy={"fixed_shapes": {"x": list(x.shape)}})
    graph, run = _binding(sess)
    graph.run({"x": x}, ["logits"], run)
    with pytest.raises(InputError, match="changed shape under cuda_graphs") as info:
        graph.run({"x": np.ones((4, 3, 32, 32), np.float32)}, ["logits"], run)
    assert "one session per shape" in str(info.value)


# -- plumbing only: a fake CUDA-graph session (which buffer each call returns) ------------------------------------
class _Value:
    """An OrtValue stand-in: a buffer whose identity is its address."""

    def __init__(self, data: np.ndarray) -> None:
        self.data = data

    def shape(self) -> list[int]:
        return list(self.data.shape)

    def data_type(self) -> str:
        return "tensor(float)"

    def numpy(self) -> np.ndarray:
        return self.data.copy()  # a device OrtValue's numpy() is a host copy

    def update_inplace(self, array: np.ndarray) -> None:
        self.data[...] = array


class _Binding:
    def __init__(self) -> None:
        self.inputs: dict[str, _Value] = {}
        self.outputs: dict[str, _Value | None] = {}

    def bind_ortvalue_input(self, name: str, value: _Value) -> None:
        self.inputs[name] = value

    def bind_output(self, name: str, device: str, device_id: int) -> None:
        self.outputs[name] = None  # ONNX Runtime allocates it on the next run

    def bind_ortvalue_output(self, name: str, value: _Value) -> None:
        self.outputs[name] = value

    def clear_binding_outputs(self) -> None:
        self.outputs = {}

    def get_outputs(self) -> list[_Value]:
        return [v for v in self.outputs.values() if v is not None]


class _GraphSession:
    """Runs ``y = 2x + 1`` as a CUDA-graph session does: warm-up runs and the capture inside the first call."""

    def __init__(self) -> None:
        self.captured: tuple[_Value, _Value] | None = None
        self.allocations = 0

    def get_outputs(self) -> list[Any]:
        return [SimpleNamespace(name="y")]

    def io_binding(self) -> _Binding:
        return _Binding()

    def run_with_iobinding(self, binding: _Binding) -> None:
        if self.captured is None:  # warm-up runs, capture, replay: ORT allocates unbound outputs once
            if binding.outputs.get("y") is None:
                self.allocations += 1
                binding.outputs["y"] = _Value(np.zeros_like(binding.inputs["x"].data))
            self.captured = (binding.inputs["x"], binding.outputs["y"])
        x, y = self.captured  # a replay reads and writes the captured addresses, whatever is bound now
        y.data[...] = 2 * x.data + 1


def test_every_call_returns_its_own_outputs_from_the_captured_buffers() -> None:
    """Plumbing only (a fake session): the first call (warm-up + capture) and every replay return that run's
    outputs, read from the buffers the graph was captured with."""
    fake = _GraphSession()
    fake_ort = SimpleNamespace(OrtValue=SimpleNamespace(
        ortvalue_from_numpy=lambda a, device, index: _Value(np.array(a, copy=True)),
        ortvalue_from_shape_and_type=lambda shape, dtype, device, index: _Value(np.zeros(shape, dtype))))
    graph = tr.GraphBinding(fake_ort, fake, 0, device="cuda")
    xs = [np.full((2, 3), float(i), np.float32) for i in range(5)]
    results = [graph.run({"x": x}, ["y"], fake.run_with_iobinding)[0] for x in xs]
    for x, y in zip(xs, results):
        np.testing.assert_array_equal(y, 2 * x + 1)
    assert fake.allocations == 1 and graph.outputs["y"] is fake.captured[1]
