"""A small ONNX model built in memory (a two-layer MLP block), so the examples download nothing."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper


def mlp_block(batch: int = 8, width: int = 64, seed: int = 0) -> bytes:
    """x[batch, width] -> MatMul -> Relu -> MatMul -> + x, as serialised ONNX bytes."""
    rng = np.random.default_rng(seed)
    w1, w2 = (rng.standard_normal((width, width)).astype(np.float32) / np.sqrt(width) for _ in range(2))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, width])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, width])
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"), helper.make_node("Relu", ["h"], ["a"], name="act"),
             helper.make_node("MatMul", ["a", "w2"], ["o"], name="fc2"), helper.make_node("Add", ["o", "x"], ["y"], name="residual")]
    inits = [helper.make_tensor(n, TensorProto.FLOAT, list(w.shape), w.ravel()) for n, w in (("w1", w1), ("w2", w2))]
    model = helper.make_model(helper.make_graph(nodes, "mlp_block", [x], [y], inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model.SerializeToString()
