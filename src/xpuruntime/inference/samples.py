"""Small ONNX models built on the fly: the demo's default model and test fixtures.

Weights come from a seeded generator, so a model (and its hash) is the same on every
machine. Models are saved at IR version 10, which every supported onnxruntime accepts.

>>> from xpuruntime.inference.samples import tiny_transformer
>>> model = tiny_transformer()        # one pre-norm block: attention + MLP
>>> [i.name for i in model.graph.input]
['x']
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["tiny_transformer", "matmul_relu", "add_mul", "tiny_convnet", "IR_VERSION", "OPSET"]

IR_VERSION = 10
OPSET = 17


def _helpers() -> tuple[Any, Any, Any]:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    return onnx, helper, (TensorProto, numpy_helper)


class _Builder:
    def __init__(self, seed: int) -> None:
        self.onnx, self.helper, (self.tp, self.nh) = _helpers()
        self.rng = np.random.default_rng(seed)
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.count = 0

    def weight(self, name: str, shape: tuple[int, ...], scale: float | None = None) -> str:
        scale = scale if scale is not None else 1.0 / np.sqrt(shape[0])
        self.inits.append(self.nh.from_array((self.rng.standard_normal(shape) * scale).astype(np.float32), name))
        return name

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(self.nh.from_array(value, name))
        return name

    def op(self, op_type: str, inputs: list[str], name: str, n_out: int = 1, **attrs: Any) -> str:
        outputs = [f"{name}_out{i}" if n_out > 1 else f"{name}_out" for i in range(n_out)]
        self.nodes.append(self.helper.make_node(op_type, inputs, outputs, name=name, **attrs))
        return outputs[0]

    def model(self, inputs: list[Any], outputs: list[Any], name: str) -> Any:
        graph = self.helper.make_graph(self.nodes, name, inputs, outputs, self.inits)
        model = self.helper.make_model(graph, opset_imports=[self.helper.make_opsetid("", OPSET)],
                                       producer_name="xpuruntime.samples")
        model.ir_version = IR_VERSION
        self.onnx.checker.check_model(model)
        return model


def tiny_transformer(d_model: int = 64, heads: int = 4, ffn: int = 256, seq: int | str = "seq",
                     batch: int | str = "batch", seed: int = 0) -> Any:
    """One pre-norm transformer block (LayerNorm, self-attention, LayerNorm, GELU-free MLP with Relu).

    Input ``x``: float32 ``[batch, seq, d_model]``; output ``y`` of the same shape.
    """
    b = _Builder(seed)
    head = d_model // heads
    ln1 = b.op("LayerNormalization", ["x", b.const("ln1_g", np.ones(d_model, np.float32)),
                                      b.const("ln1_b", np.zeros(d_model, np.float32))], "ln1", axis=-1)
    qkv = b.op("MatMul", [ln1, b.weight("w_qkv", (d_model, 3 * d_model))], "qkv_proj")
    qkv = b.op("Reshape", [qkv, b.const("qkv_shape", np.array([0, 0, 3, heads, head], np.int64))], "qkv_reshape")
    qkv = b.op("Transpose", [qkv], "qkv_transpose", perm=[2, 0, 3, 1, 4])  # 3, B, H, S, D
    b.op("Split", [qkv], "qkv_split", n_out=3, axis=0)
    q, k, v = "qkv_split_out0", "qkv_split_out1", "qkv_split_out2"
    q, k, v = (b.op("Squeeze", [t, b.const(f"sq_axes_{i}", np.array([0], np.int64))], f"squeeze_{n}")
               for i, (t, n) in enumerate(((q, "q"), (k, "k"), (v, "v"))))
    kt = b.op("Transpose", [k], "k_transpose", perm=[0, 1, 3, 2])
    scores = b.op("MatMul", [q, kt], "attn_scores")
    scores = b.op("Mul", [scores, b.const("attn_scale", np.array(1.0 / np.sqrt(head), np.float32))], "attn_scale_mul")
    probs = b.op("Softmax", [scores], "attn_softmax", axis=-1)
    ctx = b.op("MatMul", [probs, v], "attn_context")
    ctx = b.op("Transpose", [ctx], "ctx_transpose", perm=[0, 2, 1, 3])
    ctx = b.op("Reshape", [ctx, b.const("ctx_shape", np.array([0, 0, d_model], np.int64))], "ctx_reshape")
    attn = b.op("MatMul", [ctx, b.weight("w_o", (d_model, d_model))], "out_proj")
    h = b.op("Add", ["x", attn], "residual1")
    ln2 = b.op("LayerNormalization", [h, b.const("ln2_g", np.ones(d_model, np.float32)),
                                      b.const("ln2_b", np.zeros(d_model, np.float32))], "ln2", axis=-1)
    up = b.op("MatMul", [ln2, b.weight("w_up", (d_model, ffn))], "mlp_up")
    up = b.op("Relu", [b.op("Add", [up, b.const("b_up", np.zeros(ffn, np.float32))], "mlp_up_bias")], "mlp_act")
    down = b.op("MatMul", [up, b.weight("w_down", (ffn, d_model))], "mlp_down")
    b.nodes.append(b.helper.make_node("Add", [h, down], ["y"], name="residual2"))
    shape = [batch, seq, d_model]
    x = b.helper.make_tensor_value_info("x", b.tp.FLOAT, shape)
    y = b.helper.make_tensor_value_info("y", b.tp.FLOAT, shape)
    return b.model([x], [y], "tiny_transformer")


def matmul_relu(m: int | str = "m", k: int = 256, n: int = 256, seed: int = 0) -> Any:
    """``y = relu(x @ W)``: x float32 ``[m, k]``; the smallest model that exercises a GEMM."""
    b = _Builder(seed)
    mm = b.op("MatMul", ["x", b.weight("w", (k, n))], "matmul")
    b.nodes.append(b.helper.make_node("Relu", [mm], ["y"], name="relu"))
    x = b.helper.make_tensor_value_info("x", b.tp.FLOAT, [m, k])
    y = b.helper.make_tensor_value_info("y", b.tp.FLOAT, [m, n])
    return b.model([x], [y], "matmul_relu")


def add_mul(rows: int | str = "n", cols: int = 4, outputs: tuple[str, str] = ("y", "z")) -> Any:
    """``a + b`` and ``a * b``: two float32 ``[rows, cols]`` inputs ``a`` and ``b``, two outputs (named ``outputs``),
    no weights: the smallest model with several inputs and outputs."""
    b = _Builder(0)
    b.nodes += [b.helper.make_node("Add", ["a", "b"], [outputs[0]], name="add"),
                b.helper.make_node("Mul", ["a", "b"], [outputs[1]], name="mul")]
    io = [b.helper.make_tensor_value_info(n, b.tp.FLOAT, [rows, cols]) for n in ("a", "b", *outputs)]
    return b.model(io[:2], io[2:], "add_mul")


def tiny_convnet(channels: int = 8, size: int = 32, classes: int = 10, batch: int | str = "batch",
                 seed: int = 0) -> Any:
    """Conv-Relu-Conv-Relu-GlobalAveragePool-Gemm: x float32 ``[batch, 3, size, size]`` -> logits."""
    b = _Builder(seed)
    c1 = b.op("Conv", ["x", b.weight("c1_w", (channels, 3, 3, 3), 0.2), b.const("c1_b", np.zeros(channels, np.float32))],
              "conv1", pads=[1, 1, 1, 1])
    r1 = b.op("Relu", [c1], "relu1")
    c2 = b.op("Conv", [r1, b.weight("c2_w", (channels, channels, 3, 3), 0.1),
                       b.const("c2_b", np.zeros(channels, np.float32))], "conv2", pads=[1, 1, 1, 1])
    r2 = b.op("Relu", [c2], "relu2")
    pooled = b.op("Flatten", [b.op("GlobalAveragePool", [r2], "pool")], "flatten")
    b.nodes.append(b.helper.make_node("Gemm", [pooled, b.weight("fc_w", (channels, classes)),
                                              b.const("fc_b", np.zeros(classes, np.float32))], ["logits"], name="fc"))
    x = b.helper.make_tensor_value_info("x", b.tp.FLOAT, [batch, 3, size, size])
    y = b.helper.make_tensor_value_info("logits", b.tp.FLOAT, [batch, classes])
    return b.model([x], [y], "tiny_convnet")
