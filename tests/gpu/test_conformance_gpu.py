"""The conformance matrix on a CUDA GPU: corpus x {onnxruntime (CUDA provider), torch} x precisions x shapes.

The GPU truth is not tabled yet (issue 11: first run on an H100), so these cells check the invariants
that need no table: no silent garbage (non-finite outputs where the float32 reference is finite must come
with a violation), no false pass (a construction receipt that says honoured where the profiled receipt
finds a violation), and, for BERT with dynamic axes, that the nodes ONNX Runtime keeps on the CPU are
shape computations (integer tensors) that it places there on purpose.

    XPURUNTIME_CONFORMANCE=all python -m pytest -q tests/gpu/test_conformance_gpu.py -rxXs
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "conformance"))
pytest.importorskip("torch")
pytest.importorskip("transformers")

import cells
from expectations import MODELS

pytestmark = pytest.mark.gpu
_GPU_PRECISIONS = ("fp32", "tf32", "fp16", "bf16")
# ops whose CPU placement beside the CUDA provider is ONNX Runtime's shape-subgraph rule
# (onnxruntime/core/framework/fallback_cpu_capability.cc, GetCpuPreferredNodes)
_SHAPE_MATH = {"Shape", "Size", "Gather", "Unsqueeze", "Squeeze", "Concat", "Slice", "Cast", "Reshape", "Range",
               "ConstantOfShape", "Equal", "Where", "Expand", "Mul", "Add", "Sub", "Div", "Not", "Less", "Greater",
               "Min", "Max", "Neg", "Tile", "Trilu", "CumSum", "And", "Or"}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(os.environ.get("XPURUNTIME_CORPUS_CACHE") or tmp_path_factory.mktemp("corpus"))


def _needs_ort_cuda() -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime has no CUDA provider: install onnxruntime-gpu (the `gpu` extra)")


def _gpu_cells() -> list[object]:
    return [pytest.param(m, e, p, s, id=f"{m}-{e}-{p}-{s}") for m in MODELS for e in cells.GPU_ENGINES
            for p in _GPU_PRECISIONS for s in cells.shape_modes(e)]


@pytest.mark.parametrize(("model", "engine", "precision", "shapes"), _gpu_cells())
def test_gpu_cell_receipt_is_not_silent(model, engine, precision, shapes, cache):
    if engine == "onnxruntime":
        _needs_ort_cuda()
    ref = cells.reference(model, cache)
    got = cells.run_cell(model, engine, precision, shapes, cache_dir=cache, device="cuda", ref=ref)
    print(model, engine, precision, shapes, got.row())  # the lead copies these into the GPU table
    assert got.error is None, got.row()
    if got.said_explain:
        assert got.construction_honored is not True or got.said_explain <= {"accuracy"}, \
            f"false pass: construction honoured, explain found {sorted(got.said_explain)}: {got.row()}"
    if not got.finite and got.reference_finite:
        assert got.said(), f"silent garbage: non-finite outputs under a receipt that says honoured: {got.row()}"


def _bert_dynamic_session(cache: Path, fallback: str = "allow"):
    from xpuruntime import corpus
    from xpuruntime.inference.session import InferenceSession

    path = corpus.build_onnx("bert", dynamic=True, cache_dir=cache)
    return InferenceSession(path, device="cuda", exec_policy={"precision": "fp32", "fallback": fallback})


def test_bert_dynamic_cpu_nodes_are_shape_computations(cache):
    """ONNX Runtime keeps shape arithmetic on the CPU beside the CUDA provider (GetCpuPreferredNodes): every node
    it places there must be integer shape math (profiling JSON: no float tensor in or out)."""
    _needs_ort_cuda()
    from xpuruntime import corpus

    sess = _bert_dynamic_session(cache)
    on_cpu = [n for n in sess.report.nodes if n.provider == "CPUExecutionProvider"]
    print("CPU nodes:", [(n.name, n.op_type) for n in on_cpu])
    assert {n.op_type for n in on_cpu} <= _SHAPE_MATH, [(n.name, n.op_type) for n in on_cpu]
    profiled = sess.explain(corpus.sample_feeds("bert", {"batch": 8, "seq": 128}))
    cpu_profiled = [n for n in profiled.nodes if n.provider == "CPUExecutionProvider"]
    assert all(n.precision in (None, "int8") for n in cpu_profiled if n.op_type != "Cast"), \
        [(n.name, n.op_type, n.precision) for n in cpu_profiled]  # int64/bool tensors carry no float precision


def test_bert_dynamic_fp32_is_honoured_on_cuda(cache):
    """ONNX Runtime's shape computations on the CPU beside CUDA (GetCpuPreferredNodes, recomputed on the graph by
    _onnxruntime.cpu_preferred_nodes) are a note, not provider_fallback (issue 11)."""
    _needs_ort_cuda()
    sess = _bert_dynamic_session(cache)
    on_cpu = [(n.name, n.op_type) for n in sess.report.nodes if n.provider == "CPUExecutionProvider"]
    print("CPU nodes:", on_cpu, "notes:", sess.report.notes)
    assert sess.report.honored, sess.report.table()
    assert not on_cpu or any("GetCpuPreferredNodes" in note for note in sess.report.notes)


def test_bert_fixed_fp32_is_all_on_cuda(cache):
    """With fixed shapes the shape arithmetic folds into constants: every node on the CUDA provider."""
    _needs_ort_cuda()
    from xpuruntime import corpus
    from xpuruntime.inference.session import InferenceSession

    sess = InferenceSession(corpus.build_onnx("bert", dynamic=False, cache_dir=cache), device="cuda",
                            exec_policy={"precision": "fp32", "fallback": "error"})
    assert sess.report.honored, sess.report.table()
    ref = cells.reference("bert", cache)
    out = sess.run(corpus.sample_feeds("bert"))["last_hidden_state"]
    np.testing.assert_allclose(out, ref, rtol=1e-3, atol=1e-3)
