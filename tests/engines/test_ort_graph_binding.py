"""The CUDA-graph binding of the ONNX Runtime engine, driven on the CPU provider with real ONNX Runtime.

``GraphBinding`` takes every output's shape and dtype from ONNX Runtime's own first run, never from ONNX shape
inference: that knows neither ORT's fused contrib ops (``fusions: bert`` -> ``SkipLayerNormalization``) nor the
free-dimension overrides of ``fixed_shapes`` (a dynamic-batch CNN). On the GPU the same binding runs under
``cuda_graphs`` (tests/gpu/test_ort_cuda.py); here its OrtValues live on the CPU, which exercises the same calls.
"""

from __future__ import annotations

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
