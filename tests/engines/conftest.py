"""Models shared by the engine tests: transformers' BertModel (random weights, a small config) as a module and
exported to ONNX the way the benchmarks export it."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx
import pytest


@pytest.fixture(scope="session")
def bert_module() -> Any:
    """A small transformers BertModel in eval mode (seeded random weights)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                                  vocab_size=100, max_position_embeddings=64)
    torch.manual_seed(0)
    return transformers.BertModel(cfg).eval()


@pytest.fixture(scope="session")
def bert_onnx(bert_module: Any, tmp_path_factory: pytest.TempPathFactory) -> Callable[[bool], Path]:
    """``bert_onnx(pooled)``: :func:`bert_module` exported to ONNX (inputs ``input_ids`` and ``attention_mask``
    with dynamic batch and sequence; output ``last_hidden_state``, or ``hidden`` and ``pooled`` with ``pooled``),
    IR version 10 (ONNX Runtime 1.30/1.31 refuse newer)."""
    import torch

    made: dict[bool, Path] = {}

    class Wrapped(torch.nn.Module):
        def __init__(self, pooled: bool) -> None:
            super().__init__()
            self.bert, self.pooled = bert_module, pooled

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            out = self.bert(input_ids=input_ids, attention_mask=attention_mask)
            return (out.last_hidden_state, out.pooler_output) if self.pooled else out.last_hidden_state

    def export(pooled: bool = False) -> Path:
        if pooled not in made:
            path = tmp_path_factory.mktemp("bert") / "bert.onnx"
            ids, mask = torch.randint(0, 100, (1, 16)), torch.ones(1, 16, dtype=torch.int64)
            names = ["hidden", "pooled"] if pooled else ["last_hidden_state"]
            axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}}
            if not pooled:
                axes["last_hidden_state"] = {0: "batch", 1: "seq"}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(Wrapped(pooled).eval(), (ids, mask), str(path), dynamo=False, opset_version=17,
                                  input_names=["input_ids", "attention_mask"], output_names=names,
                                  dynamic_axes=axes)
            proto = onnx.load(str(path))
            proto.ir_version = 10
            onnx.save(proto, str(path))
            made[pooled] = path
        return made[pooled]
    return export


@pytest.fixture(scope="module")
def bert(bert_onnx: Callable[[bool], Path]) -> Path:
    """transformers' BertModel (random weights) exported to ONNX: inputs ``input_ids`` and ``attention_mask``,
    outputs ``hidden`` and ``pooled``."""
    return bert_onnx(True)


@pytest.fixture(scope="session")
def bert_feeds() -> Callable[..., dict[str, Any]]:
    """``bert_feeds(seed=0, batch=2, seq=16)``: seeded token ids and an all-ones mask for the ``bert`` model."""
    import numpy as np

    def make(seed: int = 0, batch: int = 2, seq: int = 16) -> dict[str, Any]:
        rng = np.random.default_rng(seed)
        return {"input_ids": rng.integers(0, 100, (batch, seq)).astype(np.int64),
                "attention_mask": np.ones((batch, seq), np.int64)}
    return make
