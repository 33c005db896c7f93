"""Small ONNX models and the list of installed ONNX engines, shared by the reliability tests.

``ONNX_ENGINES``: each installed engine whose ``load_model`` accepts an ONNX model and that targets the CPU
(an engine added later joins by itself).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from xpuruntime._models import ModelSource
from xpuruntime.errors import XpuRuntimeError
from xpuruntime.inference.engine import get_engine_class, list_engines
from xpuruntime.inference.samples import IR_VERSION, OPSET, matmul_relu


def _takes_onnx(name: str) -> bool:
    try:
        return isinstance(get_engine_class(name).load_model(matmul_relu(k=2, n=2)), ModelSource)
    except XpuRuntimeError:
        return False


ONNX_ENGINES = [e.name for e in list_engines()
                if e.installed and "cpu" in e.devices and e.source.startswith("xpuruntime.") and _takes_onnx(e.name)]


def make_model(nodes: list[Any], inputs: list[Any], outputs: list[Any], inits: list[Any] = (), name: str = "m") -> Any:
    model = helper.make_model(helper.make_graph(nodes, name, inputs, outputs, list(inits)),
                              opset_imports=[helper.make_opsetid("", OPSET)], producer_name="xpuruntime.tests")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def weight(shape: tuple[int, ...], name: str = "w", seed: int = 0) -> tuple[np.ndarray, Any]:
    w = (np.random.default_rng(seed).standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)
    return w, numpy_helper.from_array(w, name)


def vi(name: str, dtype: int, shape: list[Any]) -> Any:
    return helper.make_tensor_value_info(name, dtype, shape)


def select_model() -> tuple[Any, np.ndarray]:
    """Four inputs of three dtypes sharing the dim ``n``: ``y = where(c, a, b) @ W``, ``z = float(k)``."""
    w, w_init = weight((4, 3))
    nodes = [helper.make_node("Where", ["c", "a", "b"], ["sel"], name="where"),
             helper.make_node("MatMul", ["sel", "w"], ["y"], name="matmul"),
             helper.make_node("Cast", ["k"], ["z"], name="cast", to=TensorProto.FLOAT)]
    inputs = [vi("a", TensorProto.FLOAT, ["n", 4]), vi("b", TensorProto.FLOAT, ["n", 4]),
              vi("c", TensorProto.BOOL, ["n", 4]), vi("k", TensorProto.INT64, ["n"])]
    outputs = [vi("y", TensorProto.FLOAT, ["n", 3]), vi("z", TensorProto.FLOAT, ["n"])]
    return make_model(nodes, inputs, outputs, [w_init], "select"), w


def reshape_model() -> Any:
    """``y = reshape(x, s)``: a shape that does not fit the data fails inside the engine, at run time."""
    nodes = [helper.make_node("Reshape", ["x", "s"], ["y"], name="reshape")]
    return make_model(nodes, [vi("x", TensorProto.FLOAT, ["n"]), vi("s", TensorProto.INT64, [2])],
                      [vi("y", TensorProto.FLOAT, ["r", "c"])], name="reshape")


def matmul_chain(layers: int = 64, d: int = 256) -> Any:
    """``layers`` MatMuls in a row with one shared weight: slow enough to be interrupted between nodes."""
    _, w_init = weight((d, d))
    names = ["x", *(f"h{i}" for i in range(layers - 1)), "y"]
    nodes = [helper.make_node("MatMul", [names[i], "w"], [names[i + 1]], name=f"mm{i}") for i in range(layers)]
    return make_model(nodes, [vi("x", TensorProto.FLOAT, ["m", d])], [vi("y", TensorProto.FLOAT, ["m", d])],
                      [w_init], "chain")

#: entries of the ``hostile_paths`` fixture (conftest.py) that are not regular files: a write must refuse them
#: (neither write through nor replace them), a read must not block on them
NOT_REGULAR = ("fifo", "char_device", "socket", "dir", "symlink_to_file", "dangling_symlink", "symlink_to_dir",
               "symlink_to_fifo")
