"""ONNX Runtime on the CPU, for real: receipts, fallback rules, precision, caches, bad models and bad feeds."""

from __future__ import annotations

import json
import os
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import xpuruntime as xrt
from xpuruntime.errors import (
    DeviceError,
    EngineUnavailableError,
    InputError,
    ModelLoadError,
    PolicyError,
    PolicyViolationError,
    XpuRuntimeError,
)
from xpuruntime.inference import InferenceSession, PolicyViolationWarning
from xpuruntime.inference.samples import matmul_relu, tiny_convnet, tiny_transformer

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TRT = "TensorrtExecutionProvider"
K, N = 32, 16

needs_no_cuda = pytest.mark.no_cuda("onnxruntime")  # checks the fallback of a machine without the CUDA provider


@pytest.fixture(scope="module")
def mm() -> Any:
    return matmul_relu(k=K, n=N)


@pytest.fixture(scope="module")
def mm_weight(mm: Any) -> np.ndarray:
    return onnx.numpy_helper.to_array(mm.graph.initializer[0])


@pytest.fixture(scope="module")
def transformer() -> Any:
    return tiny_transformer()


@pytest.fixture(scope="module")
def sess(mm: Any) -> InferenceSession:
    return InferenceSession(mm, exec_policy={"fallback": "error"})


def x_of(rows: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, K)).astype(np.float32)


def tx(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((2, 5, 64)).astype(np.float32)


def reference(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    return np.maximum(x.astype(np.float64) @ w.astype(np.float64), 0.0)


def strict(**execution: Any) -> dict[str, Any]:
    return {"fallback": "error", **execution}


# -- receipts -------------------------------------------------------------------------------
def test_receipt_names_every_node_on_the_cpu_provider(transformer: Any) -> None:
    s = InferenceSession(transformer, exec_policy=strict(optimize_level=0))
    names = [n.name for n in transformer.graph.node]
    assert [n.name for n in s.report.nodes] == names
    assert all(n.provider == CPU and n.requested == CPU and n.honored for n in s.report.nodes)
    assert s.report.honored and s.report.violations == []
    assert s.providers == [CPU] and s.providers_used == [CPU]
    assert s.engine_name == "onnxruntime"
    assert s.report.engine == "onnxruntime" and s.report.device == "cpu"
    assert s.report.policy_hash == s.policy.hash
    assert s.report.fingerprint_hash == xrt.fingerprint().hash
    assert s.report.engine_version == ort.__version__
    assert s.report.evidence


def test_input_and_output_info(sess: InferenceSession) -> None:
    (inp,) = sess.input_info
    (out,) = sess.output_info
    assert (inp.name, inp.shape, inp.dtype) == ("x", ("m", K), "float32")
    assert (out.name, out.shape, out.dtype) == ("y", ("m", N), "float32")
    assert "x: float32[m, 32]" in repr(sess)


def test_explain_gives_per_node_times_from_the_profiler(transformer: Any) -> None:
    s = InferenceSession(transformer, exec_policy=strict(optimize_level=0))
    report = s.explain({"x": tx()})
    assert report.profiled is True
    assert {n.name for n in report.nodes} == {n.name for n in transformer.graph.node}
    assert all(n.time_us is not None and n.time_us >= 0 and n.calls == 1 for n in report.nodes)
    assert report.total_time_us and report.total_time_us > 0
    assert all(n.precision == "fp32" for n in report.nodes if n.op_type in ("MatMul", "Add", "Softmax"))
    assert report.honored
    assert any("profiling" in e for e in report.evidence)
    assert "time us" in report.table()


def test_report_round_trips_through_json(sess: InferenceSession) -> None:
    data = json.loads(sess.report.to_json())
    assert data["honored"] is True
    assert data["providers_used"] == [CPU]
    assert [n["name"] for n in data["nodes"]] == ["matmul", "relu"]
    assert data["requested"]["providers"] == [CPU]
    assert data == json.loads(json.dumps(sess.report.to_dict(), default=str))
    profiled = json.loads(sess.explain(x_of()).to_json())
    assert profiled["profiled"] is True and all(n["time_us"] is not None for n in profiled["nodes"])


def test_table_and_summary_are_plain_text(sess: InferenceSession) -> None:
    text = sess.report.table()
    assert "matmul" in text and "policy honoured" in text and "\x1b[" not in text
    assert "2 nodes" in sess.report.summary()
    assert str(sess.report) == text


# -- fallback: CUDA asked on a machine without it -------------------------------------------------
@needs_no_cuda
@pytest.mark.parametrize("engine", ["onnxruntime", "onnxrt+trt"])
def test_cuda_without_cuda_raises_under_error_naming_nodes_and_reason(mm: Any, engine: str) -> None:
    with pytest.raises(PolicyViolationError) as info:
        InferenceSession(mm, device="cuda", engine=engine, exec_policy=strict())
    message = str(info.value)
    assert "matmul" in message and "relu" in message
    assert "provider_fallback" in message and "not in onnxruntime.get_available_providers()" in message
    assert "has no" in message  # the reason: this build has no CUDA / TensorRT provider
    assert {v.kind for v in info.value.violations} >= {"provider_unavailable", "provider_fallback"}


@needs_no_cuda
@pytest.mark.parametrize(("engine", "target"), [("onnxruntime", CUDA), ("onnxrt+trt", TRT)])
def test_cuda_without_cuda_warns_and_runs_on_the_cpu(mm: Any, mm_weight: np.ndarray, engine: str,
                                                     target: str) -> None:
    with pytest.warns(PolicyViolationWarning, match="did not honour"):
        s = InferenceSession(mm, device="cuda", engine=engine, exec_policy={"fallback": "warn"})
    x = x_of()
    np.testing.assert_allclose(s.run({"x": x})["y"], reference(x, mm_weight), rtol=1e-4, atol=1e-5)
    fallbacks = [v for v in s.report.violations if v.kind == "provider_fallback"]
    assert sorted(v.subject for v in fallbacks) == ["matmul", "relu"]
    assert all(v.requested == target and v.actual == CPU for v in fallbacks)
    assert s.providers[0] == target and s.providers[-1] == CPU
    assert s.providers_used == [CPU]
    assert not s.report.honored
    assert all(not n.honored for n in s.report.nodes)
    assert " !" in s.report.table()


@needs_no_cuda
@pytest.mark.parametrize("engine", ["onnxruntime", "onnxrt+trt"])
def test_cuda_without_cuda_under_allow_is_silent_but_recorded(mm: Any, engine: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = InferenceSession(mm, device="cuda", engine=engine, exec_policy={"fallback": "allow"})
        s.run(x_of())
        report = s.explain(x_of())
    assert {v.subject for v in s.report.violations if v.kind == "provider_fallback"} == {"matmul", "relu"}
    assert not report.honored


@needs_no_cuda
def test_preallocated_output_after_a_cuda_fallback_lands_on_the_host(mm: Any) -> None:
    s = InferenceSession(mm, device="cuda", exec_policy={"fallback": "allow"})
    out = np.empty((4, N), np.float32)
    result = s.run({"x": x_of()}, outputs={"y": out})
    assert result["y"] is out
    np.testing.assert_allclose(out, s.run(x_of())[0])


# -- outputs ----------------------------------------------------------------------------------
def test_outputs_match_a_float64_reference(sess: InferenceSession, mm_weight: np.ndarray) -> None:
    for rows in (1, 4, 17):
        x = x_of(rows, seed=rows)
        np.testing.assert_allclose(sess.run({"x": x})["y"], reference(x, mm_weight), rtol=1e-4, atol=1e-5)


def test_dict_feeds_give_a_dict_and_list_feeds_a_list(sess: InferenceSession) -> None:
    x = x_of()
    as_dict = sess.run({"x": x})
    as_list = sess.run([x])
    single = sess.run(x)
    assert isinstance(as_dict, dict) and list(as_dict) == ["y"]
    assert isinstance(as_list, list) and len(as_list) == 1
    np.testing.assert_array_equal(as_dict["y"], as_list[0])
    np.testing.assert_array_equal(single[0], as_list[0])


def test_output_names_subset_and_unknown_name(transformer: Any) -> None:
    s = InferenceSession(transformer)
    np.testing.assert_array_equal(s.run({"x": tx()}, ["y"])["y"], s.run({"x": tx()})["y"])
    assert list(s.run({"x": tx()}, "y")) == ["y"]
    with pytest.raises(InputError, match="unknown output name 'yy'") as info:
        s.run({"x": tx()}, ["yy"])
    assert "did you mean 'y'" in str(info.value)


def test_preallocated_numpy_output_lands_in_the_callers_array(sess: InferenceSession) -> None:
    x = x_of()
    out = np.full((4, N), np.nan, np.float32)
    result = sess.run({"x": x}, outputs={"y": out})
    assert result["y"] is out
    np.testing.assert_array_equal(out, sess.run({"x": x})["y"])


@pytest.mark.parametrize("bad", [np.empty((4, N), np.float64), np.empty((4, N, 1), np.float32),
                                 np.empty((4, N + 1), np.float32), [0.0] * N])
def test_unfit_preallocated_output_is_an_input_error(sess: InferenceSession, bad: Any) -> None:
    with pytest.raises(InputError, match="preallocated output 'y'") as info:
        sess.run({"x": x_of()}, outputs={"y": bad})
    assert "y: float32[m, 16]" in str(info.value)


def test_preallocated_output_with_a_wrong_dynamic_dim_is_an_input_error(sess: InferenceSession) -> None:
    with pytest.raises(InputError):
        sess.run({"x": x_of(4)}, outputs={"y": np.empty((3, N), np.float32)})
    assert sess.run(x_of())[0].shape == (4, N)


def test_preallocated_output_not_requested(sess: InferenceSession) -> None:
    with pytest.raises(InputError, match="not among the requested outputs"):
        sess.run({"x": x_of()}, outputs={"z": np.empty((4, N), np.float32)})


@pytest.mark.torch
def test_torch_cpu_tensor_feeds_through_dlpack(sess: InferenceSession) -> None:
    import torch

    x = x_of()
    np.testing.assert_array_equal(sess.run({"x": torch.from_numpy(x)})["y"], sess.run({"x": x})["y"])
    np.testing.assert_array_equal(sess.run(torch.from_numpy(x))[0], sess.run({"x": x})["y"])


@pytest.mark.torch
def test_tensor_that_requires_grad_is_refused_with_the_detach_hint(sess: InferenceSession) -> None:
    import torch

    with pytest.raises(InputError, match="DLPack") as info:
        sess.run({"x": torch.ones(4, K, requires_grad=True)})
    assert ".detach()" in str(info.value)


def test_non_contiguous_and_nested_list_feeds_are_accepted(sess: InferenceSession) -> None:
    x = x_of(K)
    expected = sess.run({"x": np.ascontiguousarray(x.T)})["y"]
    np.testing.assert_array_equal(sess.run({"x": x.T})["y"], expected)
    np.testing.assert_array_equal(sess.run({"x": x.T.tolist()})["y"], expected)


# -- precision --------------------------------------------------------------------------------
def test_fp16_outputs_are_close_to_fp32_and_the_receipt_notes_the_copy(transformer: Any) -> None:
    ref = InferenceSession(transformer).run({"x": tx()})["y"]
    s = InferenceSession(transformer, exec_policy={"precision": "fp16", "fallback": "allow"})
    np.testing.assert_allclose(s.run({"x": tx()})["y"], ref, rtol=0.05, atol=0.02)
    assert s.report.requested["model_variant"] == "fp16"
    assert any("float16 copy" in n for n in s.report.notes)
    assert s.output_info[0].dtype == "float32"  # inputs and outputs kept float32


def test_fp16_on_the_cpu_is_judged_per_node_from_the_profiled_run(transformer: Any) -> None:
    """The CPU provider runs most float16 ops in float32 behind Casts: explain() says so, node by node."""
    s = InferenceSession(transformer, exec_policy={"precision": "fp16", "fallback": "allow"})
    report = s.explain({"x": tx()})
    precisions = {n.precision for n in report.nodes}
    assert "fp16" in precisions  # some nodes do run in float16
    fp32 = [n for n in report.nodes if n.precision == "fp32" and n.op_type in ("MatMul", "FusedMatMul", "Gemm")]
    flagged = {v.subject for v in report.violations if v.kind == "precision"}
    assert flagged == {n.name for n in fp32}
    if fp32:  # under error the session verifies before it returns (one profiled run on seeded inputs)
        with pytest.raises(PolicyViolationError, match=r"\[precision\]"):
            InferenceSession(transformer, exec_policy=strict(precision="fp16"))


def test_fp16_of_a_convnet_is_close(mm: Any) -> None:
    model = tiny_convnet(channels=4, size=8)
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    ref = InferenceSession(model).run(x)[0]
    try:
        s = InferenceSession(model, exec_policy={"precision": "fp16", "fallback": "allow"})
    except XpuRuntimeError as exc:  # the documented refusal when float16 kernels are missing
        assert "float16" in str(exc) or "fp16" in str(exc)
        return
    np.testing.assert_allclose(s.run(x)[0], ref, rtol=0.05, atol=0.01)


def test_int8_outputs_are_close_and_int8_nodes_are_in_the_receipt(transformer: Any) -> None:
    ref = InferenceSession(transformer).run({"x": tx()})["y"]
    s = InferenceSession(transformer, exec_policy=strict(precision="int8"))
    y = s.run({"x": tx()})["y"]
    assert np.abs(y - ref).max() < 0.1 * np.abs(ref).max()
    assert s.report.requested["model_variant"] == "int8"
    int8 = [n for n in s.report.nodes if n.precision == "int8"]
    assert any(n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul") for n in int8)
    assert any("quantize_dynamic" in n for n in s.report.notes)
    profiled = s.explain({"x": tx()})
    assert any(n.precision == "int8" for n in profiled.nodes)


def test_bf16_on_the_cpu_is_a_precision_violation(mm: Any) -> None:
    with pytest.raises(PolicyViolationError, match="bf16"):
        InferenceSession(mm, exec_policy=strict(precision="bf16"))
    with pytest.warns(PolicyViolationWarning):
        s = InferenceSession(mm, exec_policy={"precision": "bf16"})
    assert [v.kind for v in s.report.violations] == ["precision"]


# -- caches ---------------------------------------------------------------------------------
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_converted_model_is_cached_and_reused(mm: Any, tmp_path: Path, precision: str) -> None:
    policy = {"precision": precision, "cache_dir": str(tmp_path), "fallback": "allow"}
    first = InferenceSession(mm, exec_policy=policy)
    (entry,) = (tmp_path / "onnxruntime").glob(f"*-{precision}.onnx")
    assert os.sep not in entry.name[:-5] and entry.stat().st_mode & 0o077 == 0
    mtime = entry.stat().st_mtime_ns
    second = InferenceSession(mm, exec_policy=policy)
    assert entry.stat().st_mtime_ns == mtime
    assert any("cached" in n for n in second.report.notes)
    np.testing.assert_array_equal(first.run(x_of())[0], second.run(x_of())[0])


def test_corrupt_cache_entry_warns_and_is_rebuilt(mm: Any, tmp_path: Path) -> None:
    policy = {"precision": "int8", "cache_dir": str(tmp_path), "fallback": "allow"}
    good = InferenceSession(mm, exec_policy=policy).run(x_of())[0]
    (entry,) = (tmp_path / "onnxruntime").glob("*-int8.onnx")
    entry.write_bytes(b"\x00garbage, not a model")
    with pytest.warns(RuntimeWarning, match="corrupt"):
        rebuilt = InferenceSession(mm, exec_policy=policy)
    np.testing.assert_array_equal(rebuilt.run(x_of())[0], good)
    assert onnx.load(str(entry)).graph.node  # rewritten with a valid model


# -- session options ---------------------------------------------------------------------------
def test_optimize_level_changes_the_receipts_node_list(transformer: Any) -> None:
    plain = InferenceSession(transformer, exec_policy=strict(optimize_level=0))
    full = InferenceSession(transformer, exec_policy=strict(optimize_level=3))
    assert plain.report.requested["graph_optimization_level"] == "ORT_DISABLE_ALL"
    assert [n.name for n in plain.report.nodes] != [n.name for n in full.report.nodes]
    plain_ops = {n.op_type for n in plain.explain({"x": tx()}).nodes}
    full_ops = {n.op_type for n in full.explain({"x": tx()}).nodes}
    assert "FusedMatMul" in full_ops and "FusedMatMul" not in plain_ops  # the fusion, seen in the receipt
    np.testing.assert_allclose(plain.run({"x": tx()})["y"], full.run({"x": tx()})["y"], rtol=1e-4, atol=1e-5)


def test_num_threads_and_determinism_are_accepted(sess: InferenceSession, mm: Any) -> None:
    s = InferenceSession(mm, exec_policy=strict(num_threads=1, deterministic=True))
    np.testing.assert_array_equal(s.run(x_of())[0], sess.run(x_of())[0])
    assert s.report.honored


def test_fixed_shapes_override_symbolic_dims(mm: Any) -> None:
    s = InferenceSession(mm, exec_policy=strict(fixed_shapes={"x": (3, K)}))
    assert s.input_info[0].shape == (3, K)
    assert s.run(x_of(3))[0].shape == (3, N)
    assert s.report.honored
    with pytest.raises(InputError, match="size 2 on axis 0"):
        s.run(x_of(2))


def test_static_shape_with_symbolic_dims_is_a_violation(mm: Any) -> None:
    s = InferenceSession(mm, exec_policy={"static_shape": True, "fallback": "allow"})
    (violation,) = s.report.violations
    assert (violation.kind, violation.subject) == ("static_shape", "x")
    assert "fixed_shapes" in violation.reason
    s.explain(x_of())
    s.explain(x_of())
    assert len(s.explain(x_of()).violations) == 1  # not one more per profiled run
    with pytest.raises(PolicyViolationError, match="static_shape"):
        InferenceSession(mm, exec_policy=strict(static_shape=True))


@pytest.mark.parametrize(("shapes", "match"), [({"xx": (3, K)}, "did you mean 'x'"), ({"x": (3,)}, "does not fit"),
                                               ({"x": (3, K + 1)}, "does not fit")])
def test_fixed_shapes_that_do_not_fit_the_model_are_policy_errors(mm: Any, shapes: dict, match: str) -> None:
    with pytest.raises(PolicyError, match=match):
        InferenceSession(mm, exec_policy={"fixed_shapes": shapes})


def test_cuda_graphs_on_the_cpu_is_a_recorded_violation(mm: Any) -> None:
    s = InferenceSession(mm, exec_policy={"cuda_graphs": True, "fixed_shapes": {"x": (4, K)}, "fallback": "allow"})
    assert [(v.kind, v.subject) for v in s.report.violations] == [("option", "cuda_graphs")]
    assert s.run(x_of())[0].shape == (4, N)


def test_execution_timeout_does_not_break_normal_runs(mm: Any, sess: InferenceSession) -> None:
    s = InferenceSession(mm, exec_policy=strict(execution_timeout_ms=10_000, compile_timeout_ms=60_000))
    for _ in range(3):
        np.testing.assert_array_equal(s.run(x_of())[0], sess.run(x_of())[0])


# -- engine_options -----------------------------------------------------------------------------
def test_unknown_engine_option_is_a_policy_error_with_did_you_mean(mm: Any) -> None:
    with pytest.raises(PolicyError, match="unknown engine option 'provider_option'") as info:
        InferenceSession(mm, engine_options={"provider_option": {}})
    assert "did you mean 'provider_options'" in str(info.value)
    with pytest.raises(PolicyError, match="must be a mapping"):
        InferenceSession(mm, engine_options=["providers"])


def test_provider_options_are_merged_and_visible_in_the_receipt(mm: Any) -> None:
    s = InferenceSession(mm, engine_options={"provider_options": {CPU: {"some_flag": 1}},
                                             "session_config": {"session.intra_op.allow_spinning": "0"}})
    assert s.report.requested["provider_options"][CPU] == {"some_flag": "1"}
    assert s.report.requested["session_config"]["session.intra_op.allow_spinning"] == "0"
    assert s.report.honored


def test_provider_options_for_a_misspelt_provider_is_a_policy_error(mm: Any) -> None:
    with pytest.raises(PolicyError, match="unknown ONNX Runtime provider") as info:
        InferenceSession(mm, engine_options={"provider_options": {"CUDAExecutionProvder": {}}})
    assert "did you mean 'CUDAExecutionProvider'" in str(info.value)


@needs_no_cuda
def test_providers_override_is_checked_like_the_plan(mm: Any) -> None:
    with pytest.raises(PolicyError, match="unknown ONNX Runtime provider"):
        InferenceSession(mm, engine_options={"providers": ["CPUExecutionProvidr"]})
    with pytest.raises(PolicyError, match="list of provider names"):
        InferenceSession(mm, engine_options={"providers": CPU})
    s = InferenceSession(mm, engine_options={"providers": [CUDA, CPU]}, exec_policy={"fallback": "allow"})
    assert s.providers == [CUDA, CPU]
    assert s.report.requested["passed_to_onnxruntime"] == [CPU]
    assert {v.kind for v in s.report.violations} == {"provider_unavailable", "provider_fallback"}


# -- bad models ---------------------------------------------------------------------------------
def _load_error(model: Any) -> ModelLoadError:
    with pytest.raises(ModelLoadError) as info:
        InferenceSession(model)
    return info.value


def test_missing_file(tmp_path: Path) -> None:
    error = _load_error(tmp_path / "missing.onnx")
    assert "not found" in str(error) and "missing.onnx" in str(error)


def test_directory(tmp_path: Path) -> None:
    assert "directory" in str(_load_error(tmp_path))


def test_not_onnx(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_text("this is not a protobuf at all")
    assert "not a valid ONNX model" in str(_load_error(path))
    assert "not a valid ONNX model" in str(_load_error(b"\xff\xfe\xfd"))


def test_empty_file_and_empty_bytes(tmp_path: Path) -> None:
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    assert "empty" in str(_load_error(path))
    assert "empty" in str(_load_error(b""))


def test_truncated_bytes_and_file(mm: Any, tmp_path: Path) -> None:
    data = mm.SerializeToString()
    _load_error(data[: len(data) // 2])
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[:-7])
    _load_error(path)


def test_every_truncation_of_a_small_model_is_a_clear_error() -> None:
    data = matmul_relu(k=2, n=2).SerializeToString()
    for cut in range(1, len(data), 3):
        with pytest.raises(ModelLoadError):
            InferenceSession(data[:cut])


@pytest.mark.parametrize("model", [42, 3.5, None, {"graph": 1}, ["model.onnx"], object()])
def test_wrong_type_for_model(model: Any) -> None:
    error = _load_error(model)
    assert "a path, bytes or an onnx.ModelProto" in str(error)


def test_model_from_path_bytes_and_proto_agree(mm: Any, tmp_path: Path, sess: InferenceSession) -> None:
    path = tmp_path / "mm.onnx"
    onnx.save(mm, str(path))
    expected = sess.run(x_of())[0]
    for model in (path, str(path), path.read_bytes(), bytearray(path.read_bytes())):
        np.testing.assert_array_equal(InferenceSession(model).run(x_of())[0], expected)


def _with_ir(model: Any, ir_version: int) -> Any:
    newer = onnx.ModelProto()
    newer.CopyFrom(model)
    newer.ir_version = ir_version
    return newer


def _ort_refuses(model: Any) -> bool:
    try:
        ort.InferenceSession(model.SerializeToString(), providers=[CPU])
    except Exception as exc:  # noqa: BLE001 - any refusal counts
        return "IR version" in str(exc)
    return False


def test_ir_version_too_new_is_lowered_when_safe_and_said_so(mm: Any, tmp_path: Path,
                                                            sess: InferenceSession) -> None:
    newer = _with_ir(mm, 14)
    path = tmp_path / "ir14.onnx"
    onnx.save(newer, str(path))
    refused = _ort_refuses(newer)
    for model in (newer, path, newer.SerializeToString()):
        s = InferenceSession(model, exec_policy=strict())
        np.testing.assert_array_equal(s.run(x_of())[0], sess.run(x_of())[0])
        lowered = [n for n in s.report.notes if "IR version 14 lowered to" in n]
        assert bool(lowered) == refused
        s.explain(x_of())  # the profiled session loads the lowered copy too


def test_ir_version_too_new_with_external_data_is_a_clear_error(mm: Any, tmp_path: Path) -> None:
    newer = _with_ir(mm, 14)
    if not _ort_refuses(newer):
        pytest.skip("this onnxruntime accepts IR version 14")
    path = tmp_path / "ext.onnx"
    onnx.save(newer, str(path), save_as_external_data=True, all_tensors_to_one_file=True, size_threshold=0)
    error = _load_error(path)
    assert "IR version" in str(error) and "ir_version" in (error.hint or "")


def test_default_onnx_helper_model_gives_a_clear_error_or_a_note() -> None:
    """onnx.helper.make_model stamps the newest IR and opset: too new for this onnxruntime, say so."""
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    try:
        s = InferenceSession(helper.make_model(graph))
    except ModelLoadError as exc:
        message = str(exc)
        assert "opset" in message or "IR version" in message
        assert "[ONNXRuntimeError]" not in message.splitlines()[0]
        assert exc.hint
    else:
        np.testing.assert_array_equal(s.run(np.array([-1, 2], np.float32))[0], [0, 2])


def test_unknown_engine_has_a_did_you_mean(mm: Any) -> None:
    with pytest.raises(EngineUnavailableError, match="unknown engine 'onnxrutime'") as info:
        InferenceSession(mm, engine="onnxrutime")
    assert "did you mean 'onnxruntime'" in str(info.value)


@pytest.mark.parametrize("alias", ["onnxruntime", "onnxrt", "ort", "ONNXRuntime"])
def test_engine_aliases(mm: Any, alias: str) -> None:
    assert InferenceSession(mm, engine=alias).engine_name == "onnxruntime"


@pytest.mark.parametrize("device", ["cuda:x", "tpu", -1, "cpu:0:1", 1.5])
def test_bad_device_string(mm: Any, device: Any) -> None:
    with pytest.raises(DeviceError):
        InferenceSession(mm, device=device)


def test_tensorrt_engine_on_the_cpu_is_a_device_error(mm: Any) -> None:
    with pytest.raises(DeviceError, match="cannot target cpu"):
        InferenceSession(mm, engine="onnxrt+trt", device="cpu")


# -- bad feeds ----------------------------------------------------------------------------------
def _feed_error(sess: InferenceSession, feeds: Any) -> str:
    with pytest.raises(InputError) as info:
        sess.run(feeds)
    message = str(info.value)
    assert "x: float32[m, 32]" in message  # every feed error lists what the model expects
    return message


def test_missing_input(sess: InferenceSession) -> None:
    assert "missing input 'x'" in _feed_error(sess, {})


def test_unknown_input_name_with_did_you_mean(sess: InferenceSession) -> None:
    message = _feed_error(sess, {"xx": x_of()})
    assert "unknown input name 'xx'" in message and "did you mean 'x'" in message
    assert "unknown input name 'extra'" in _feed_error(sess, {"x": x_of(), "extra": x_of()})


def test_wrong_rank(sess: InferenceSession) -> None:
    assert "rank 3" in _feed_error(sess, {"x": x_of()[None]})
    assert "rank 1" in _feed_error(sess, {"x": np.zeros(K, np.float32)})


def test_wrong_static_dim(sess: InferenceSession) -> None:
    assert "size 31 on axis 1" in _feed_error(sess, {"x": np.zeros((4, K - 1), np.float32)})


@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.int64, np.int32])
def test_wrong_dtype(sess: InferenceSession, dtype: Any) -> None:
    message = _feed_error(sess, {"x": x_of().astype(dtype)})
    assert "dtype" in message and "astype(np.float32)" in message


def test_wrong_number_of_positional_feeds_and_wrong_container(sess: InferenceSession) -> None:
    assert "2 inputs given by position" in _feed_error(sess, [x_of(), x_of()])
    _feed_error(sess, "x")
    _feed_error(sess, {"x": "not numbers"})


def test_session_stays_usable_after_failed_runs(sess: InferenceSession) -> None:
    expected = sess.run(x_of())[0]
    for bad in ({}, {"x": x_of().astype(np.float64)}, {"x": x_of()[None]}):
        with pytest.raises(InputError):
            sess.run(bad)
    with pytest.raises(InputError):
        sess.run({"x": x_of(4)}, outputs={"y": np.empty((3, N), np.float32)})
    np.testing.assert_array_equal(sess.run(x_of())[0], expected)


def test_closed_session_refuses_to_run(mm: Any) -> None:
    with InferenceSession(mm) as s:
        s.run(x_of())
    with pytest.raises(XpuRuntimeError, match="closed"):
        s.run(x_of())


# -- threads ------------------------------------------------------------------------------------
def test_eight_threads_get_the_same_results_as_serial_runs(transformer: Any) -> None:
    s = InferenceSession(transformer, exec_policy=strict(num_threads=1))
    feeds = [tx(seed) for seed in range(8)]
    serial = [s.run({"x": f})["y"] for f in feeds]
    results: dict[int, list[np.ndarray]] = {i: [] for i in range(8)}
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def worker(i: int) -> None:
        try:
            barrier.wait()
            for _ in range(50):
                results[i].append(s.run({"x": feeds[i]})["y"])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i in range(8):
        assert len(results[i]) == 50
        for y in results[i]:
            np.testing.assert_array_equal(y, serial[i])


# -- more than one input ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_inputs() -> InferenceSession:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Sub", ["a", "b"], ["d"], name="sub")], "two",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", 3]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("d", TensorProto.FLOAT, ["n", 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return InferenceSession(model, exec_policy=strict())


def test_list_feeds_follow_the_input_order(two_inputs: InferenceSession) -> None:
    a, b = np.ones((2, 3), np.float32), np.full((2, 3), 3, np.float32)
    np.testing.assert_array_equal(two_inputs.run([a, b])[0], a - b)
    np.testing.assert_array_equal(two_inputs.run({"b": b, "a": a})["d"], a - b)


def test_missing_second_input_lists_both(two_inputs: InferenceSession) -> None:
    with pytest.raises(InputError, match="missing input 'b'") as info:
        two_inputs.run({"a": np.ones((2, 3), np.float32)})
    assert "a: float32[n, 3]; b: float32[n, 3]" in str(info.value)
    with pytest.raises(InputError, match="1 inputs given by position"):
        two_inputs.run([np.ones((2, 3), np.float32)])


def test_unnamed_dynamic_dim_cannot_be_fixed_and_says_so() -> None:
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    s = InferenceSession(model, exec_policy={"fixed_shapes": {"x": (2, 3)}, "fallback": "allow"})
    assert [(v.kind, v.subject) for v in s.report.violations] == [("static_shape", "x")]


# -- kernels on the CPU -------------------------------------------------------------------------
def test_kernel_policy_on_the_cpu_is_a_kernel_violation_and_shown_per_node(mm: Any) -> None:
    with pytest.raises(PolicyViolationError, match=r"\[kernel\] matmul"):
        InferenceSession(mm, kernel_policy={"matmul": "cublaslt"}, exec_policy=strict())
    with pytest.warns(PolicyViolationWarning):
        s = InferenceSession(mm, kernel_policy={"matmul": "cublaslt"})
    (node,) = [n for n in s.report.nodes if n.op_type == "MatMul"]
    assert node.requested_kernel == "cublaslt"
    assert [(v.kind, v.subject) for v in s.report.violations] == [("kernel", "matmul")]
