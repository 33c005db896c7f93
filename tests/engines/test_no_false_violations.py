"""Issue 11 item 4: what engines do on purpose is a note with the engine's reason, never a violation.

One test per deliberate-engine-behaviour case found on the corpus (``xpuruntime.corpus``, real transformers
architectures with seeded weights): OpenVINO's Subgraph layers that select on a boolean mask, OpenVINO's integer
layers, OpenVINO's port names with fixed shapes, ONNX Runtime's shape computations on the CPU beside CUDA, and
integer/boolean ops under a float precision request.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from xpuruntime.receipts import NodeRecord

INTEGER_OPS = {"Where", "Equal", "Not", "Cast", "Gather", "Shape", "Unsqueeze", "Concat", "Reshape", "Expand",
               "ConstantOfShape", "Range", "Slice", "Squeeze", "And", "Or", "Less", "Greater"}


@pytest.fixture(scope="module")
def corpus_cache(request: pytest.FixtureRequest) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    return Path(request.config.cache.mkdir("xpuruntime-corpus"))


def _build(name: str, dynamic: bool, cache: Path) -> Path:
    from xpuruntime import corpus

    return corpus.build_onnx(name, dynamic=dynamic, cache_dir=cache)


def _openvino(path: Path, precision: str = "fp32"):
    pytest.importorskip("openvino")
    from xpuruntime.inference.session import InferenceSession

    return InferenceSession(path, engine="openvino", exec_policy={"precision": precision, "fallback": "error"})


def test_openvino_mask_subgraphs_are_judged_by_their_floating_tensors(corpus_cache: Path) -> None:
    """BERT, fixed shapes, fp32: the Where_1 Subgraphs read runtimePrecision u8 (the boolean mask, their first
    input) but compute f32 (outputPrecisions): honoured, with a note, and the receipt shows fp32."""
    from xpuruntime import corpus

    sess = _openvino(_build("bert", False, corpus_cache))
    assert sess.report.honored, sess.report.table()
    where = [n for n in sess.report.nodes if n.name.endswith("attention/self/Where_1")]
    assert where and all(n.precision == "fp32" for n in where), [(n.name, n.precision) for n in where]
    assert any("integer runtimePrecision" in note and "outputPrecisions" in note for note in sess.report.notes)
    assert sess.explain(corpus.sample_feeds("bert")).honored


def test_openvino_integer_layers_are_a_note_not_a_precision(corpus_cache: Path) -> None:
    """Layers with no floating tensor at all (mask conversion, position ids, shape math) are integer by nature:
    named in a note, never a violation, under any float precision."""
    sess = _openvino(_build("bert", False, corpus_cache), "fp16")
    note = next(n for n in sess.report.notes if "integer/boolean tensors only" in n)
    assert "never judged as float compute" in note
    assert not [v for v in sess.report.violations if v.kind == "precision"], sess.report.table()


def test_openvino_ports_are_named_as_in_the_onnx_graph(corpus_cache: Path) -> None:
    """GPT-2 with fixed shapes: OpenVINO folds the no-op Reshape into the Parameter, whose port then has two
    names; the session feeds and lists it as 'input_ids'."""
    from xpuruntime import corpus

    sess = _openvino(_build("gpt2", False, corpus_cache))
    assert [i.name for i in sess.input_info] == ["input_ids", "attention_mask"]
    out = sess.run(corpus.sample_feeds("gpt2"))
    assert list(out) == [o.name for o in sess.output_info] and sess.report.honored


def _assignment(proto, on_cpu: set[str]) -> list[NodeRecord]:
    from xpuruntime.inference.engines import _onnxruntime as tr

    return [NodeRecord(n.name, n.op_type, tr.CPU if n.name in on_cpu else tr.CUDA, requested=tr.CUDA)
            for n in proto.graph.node if n.op_type != "Constant"]


def test_onnxruntime_shape_computations_beside_cuda_are_a_note(corpus_cache: Path) -> None:
    """BERT with dynamic axes on CUDA (tested as data: ONNX Runtime's GetCpuPreferredNodes rule recomputed on the
    real graph, with the assignment it produces): the CPU nodes are integer shape math, a note, no violation."""
    import onnx

    from xpuruntime.inference.engines import _onnxruntime as tr

    proto = onnx.load(_build("bert", True, corpus_cache))
    preferred = tr.cpu_preferred_nodes(proto)
    ops = {n.name: n.op_type for n in proto.graph.node}
    assert preferred and {ops[n] for n in preferred} <= INTEGER_OPS, sorted({ops[n] for n in preferred})
    types = tr._value_types(proto)
    node_by_name = {n.name: n for n in proto.graph.node}
    floats = [n for n in preferred for t in [*node_by_name[n].input, *node_by_name[n].output]
              if types.get(t) in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)]
    assert not floats, floats  # every tensor they touch is integer or boolean
    nodes = _assignment(proto, preferred | {n for n, op in ops.items() if op == "Shape"})
    found, notes = tr.judge_placement(nodes, tr.CUDA, proto, lambda n: "no kernel", beside_cuda=True)
    assert found == [] and len(notes) == 1 and "GetCpuPreferredNodes" in notes[0]
    assert all(n.honored for n in nodes)


def test_onnxruntime_float_compute_on_the_cpu_beside_cuda_stays_a_fallback(corpus_cache: Path) -> None:
    """The rule covers shape math only: a MatMul on the CPU beside CUDA is a provider_fallback with the reason."""
    import onnx

    from xpuruntime.inference.engines import _onnxruntime as tr

    proto = onnx.load(_build("bert", True, corpus_cache))
    matmul = next(n.name for n in proto.graph.node if n.op_type == "MatMul")
    nodes = _assignment(proto, tr.cpu_preferred_nodes(proto) | {matmul})
    found, _ = tr.judge_placement(nodes, tr.CUDA, proto, lambda n: f"no kernel for {n.op_type}", beside_cuda=True)
    assert [(v.kind, v.subject, v.reason) for v in found] == [("provider_fallback", matmul, "no kernel for MatMul")]


def test_onnxruntime_integer_and_boolean_ops_are_never_judged_as_float_compute(corpus_cache: Path) -> None:
    """Under fp16 the profile judges matrix products and convolutions only: Where on masks, Equal, Not, Cast to
    int, Gather of ids and Shape carry no float precision and are never a precision violation."""
    from xpuruntime import corpus
    from xpuruntime.inference.session import InferenceSession

    sess = InferenceSession(_build("bert", True, corpus_cache), exec_policy={"precision": "fp16", "fallback": "allow"})
    report = sess.explain(corpus.sample_feeds("bert"))
    ops = {n.name: n.op_type for n in report.nodes}
    judged = {ops.get(v.subject) for v in report.violations if v.kind == "precision"}
    assert not judged & INTEGER_OPS, sorted(judged & INTEGER_OPS)
