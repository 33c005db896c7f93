"""OpenVINO on the CPU, for real: outputs against ONNX Runtime, receipts, precision, devices, caches, threads."""

from __future__ import annotations

import importlib.util
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from xpuruntime.errors import (
    DeviceError,
    EngineUnavailableError,
    InputError,
    ModelLoadError,
    PolicyError,
    PolicyViolationError,
    XpuRuntimeError,
)
from xpuruntime.inference import InferenceSession, PolicyViolationWarning, list_engines
from xpuruntime.inference.engines._openvino import COMPUTE_LAYERS
from xpuruntime.inference.samples import matmul_relu, tiny_convnet, tiny_transformer

ov = pytest.importorskip("openvino")
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

CAPS = list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
DEVICES = list(ov.Core().available_devices)
SAMPLES = {
    "matmul_relu": (matmul_relu, lambda rng: {"x": rng.standard_normal((4, 256)).astype(np.float32)}),
    "tiny_convnet": (tiny_convnet, lambda rng: {"x": rng.standard_normal((2, 3, 32, 32)).astype(np.float32)}),
    "tiny_transformer": (tiny_transformer, lambda rng: {"x": rng.standard_normal((2, 5, 64)).astype(np.float32)}),
}


@pytest.fixture(scope="module")
def models() -> dict[str, Any]:
    return {name: build() for name, (build, _) in SAMPLES.items()}


@pytest.fixture(scope="module")
def transformer(models: dict[str, Any]) -> Any:
    return models["tiny_transformer"]


@pytest.fixture(scope="module")
def sess(transformer: Any) -> InferenceSession:
    return InferenceSession(transformer, engine="openvino", exec_policy=strict())


def feeds_of(name: str, seed: int = 0) -> dict[str, np.ndarray]:
    return SAMPLES[name][1](np.random.default_rng(seed))


def tx(seed: int = 0, batch: int = 2, seq: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, seq, 64)).astype(np.float32)


def strict(**execution: Any) -> dict[str, Any]:
    return {"fallback": "error", **execution}


def ort_outputs(model: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def compute(report: Any) -> list[Any]:
    return [n for n in report.nodes if n.op_type.lower() in COMPUTE_LAYERS]


def quantized(model: Any, feeds: dict[str, np.ndarray], tmp_path: Path) -> Path:
    """A QDQ (QuantizeLinear/DequantizeLinear) copy of ``model``, calibrated on a few random inputs."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(1)
            self.items = iter([{k: rng.standard_normal(v.shape).astype(np.float32) for k, v in feeds.items()}
                               for _ in range(4)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    src, dst = tmp_path / "float.onnx", tmp_path / "qdq.onnx"
    onnx.save(model, str(src))
    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return dst


# -- outputs ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(SAMPLES))
def test_fp32_outputs_match_onnxruntime(models: dict[str, Any], name: str) -> None:
    feeds = feeds_of(name)
    s = InferenceSession(models[name], engine="openvino", exec_policy=strict(precision="fp32"))
    for got, want in zip(s.run(feeds).values(), ort_outputs(models[name], feeds)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_reduced_precision_outputs_stay_close_to_onnxruntime(transformer: Any) -> None:
    feeds = {"x": tx()}
    want = ort_outputs(transformer, feeds)[0]
    s = InferenceSession(transformer, engine="openvino", exec_policy={"precision": "bf16", "fallback": "allow"})
    got = s.run(feeds)["y"]
    assert np.abs(got - want).max() < 0.1 * np.abs(want).max()


def test_list_feeds_give_lists_and_preallocated_outputs_are_filled(sess: InferenceSession) -> None:
    x = tx(3)
    expected = sess.run({"x": x})["y"]
    np.testing.assert_array_equal(sess.run([x])[0], expected)
    buffer = np.zeros_like(expected)
    out = sess.run({"x": x}, outputs={"y": buffer})
    assert out["y"] is buffer
    np.testing.assert_array_equal(buffer, expected)


def test_dynamic_shapes_run_at_several_sizes(sess: InferenceSession, transformer: Any) -> None:
    for batch, seq in ((1, 1), (3, 7), (2, 16)):
        x = tx(batch=batch, seq=seq)
        np.testing.assert_allclose(sess.run({"x": x})["y"], ort_outputs(transformer, {"x": x})[0], rtol=1e-4,
                                   atol=1e-4)


# -- receipts ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(SAMPLES))
def test_receipt_names_device_kernel_and_precision_of_every_compute_layer(models: dict[str, Any], name: str) -> None:
    report = InferenceSession(models[name], engine="openvino", exec_policy=strict()).report
    assert report.honored and report.providers_used == ["CPU"]
    layers = compute(report)
    assert layers, [n.op_type for n in report.nodes]
    assert all(n.precision == "fp32" and n.provider == "CPU" and n.requested == "CPU" for n in layers)
    assert any("get_runtime_model" in e for e in report.evidence)
    assert any("EXECUTION_DEVICES=CPU" in n and "INFERENCE_PRECISION_HINT=f32" in n for n in report.notes)


def test_fp32_policy_keeps_f32_where_openvino_would_pick_another_precision(transformer: Any) -> None:
    """The CPU plugin's own default precision depends on the host (bf16 where the CPU has it)."""
    default = ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()
    report = InferenceSession(transformer, engine="openvino", exec_policy=strict(precision="fp32")).report
    assert {n.precision for n in compute(report)} == {"fp32"}
    assert report.requested["config"]["INFERENCE_PRECISION_HINT"] == "f32"
    assert default == ("bf16" if "BF16" in CAPS else "f32")


def test_bf16_as_this_cpu_allows(transformer: Any) -> None:
    s = InferenceSession(transformer, engine="openvino", exec_policy={"precision": "bf16", "fallback": "allow"})
    precisions = {n.precision for n in compute(s.report)}
    if "BF16" in CAPS:
        assert precisions == {"bf16"} and s.report.honored
    else:  # OpenVINO quietly keeps f32: the receipt says so
        assert precisions == {"fp32"}
        assert {v.kind for v in s.report.violations} == {"precision"}
        assert all("OPTIMIZATION_CAPABILITIES" in v.reason for v in s.report.violations)


def test_fp16_as_this_cpu_allows(transformer: Any) -> None:
    s = InferenceSession(transformer, engine="openvino", exec_policy={"precision": "fp16", "fallback": "allow"})
    precisions = {n.precision for n in compute(s.report)}
    if "FP16" in CAPS:
        assert precisions == {"fp16"} and s.report.honored
    else:  # the CPU plugin swaps the f16 hint for what it has (bf16 or f32)
        assert "fp16" not in precisions
        violations = [v for v in s.report.violations if v.kind == "precision"]
        assert {v.subject for v in violations} == {n.name for n in compute(s.report)}
        assert all(v.requested == "fp16" and "no f16 compute" in v.reason for v in violations)
        with pytest.raises(PolicyViolationError, match="no f16 compute"):
            InferenceSession(transformer, engine="openvino", exec_policy=strict(precision="fp16"))


def test_explain_gives_per_layer_times_kernels_and_precisions(sess: InferenceSession) -> None:
    report = sess.explain({"x": tx()})
    assert report.profiled and any("profiling_info" in e for e in report.evidence)
    assert report.total_time_us and report.total_time_us > 0
    layers = compute(report)
    assert layers and all(n.time_us is not None and n.calls == 1 and n.precision == "fp32" for n in layers)
    assert all(n.kernel and not n.kernel.startswith("undef") for n in layers)
    assert report.honored


# -- int8 -------------------------------------------------------------------------------------
def test_int8_on_a_float_model_is_a_violation(models: dict[str, Any]) -> None:
    with pytest.raises(PolicyViolationError, match="quantised model") as info:
        InferenceSession(models["matmul_relu"], engine="openvino", exec_policy=strict(precision="int8"))
    assert "NNCF" in str(info.value)


def test_int8_on_a_quantised_model_runs_int8_layers(models: dict[str, Any], tmp_path: Path) -> None:
    feeds = feeds_of("tiny_convnet")
    path = quantized(models["tiny_convnet"], feeds, tmp_path)
    s = InferenceSession(path, engine="openvino", exec_policy=strict(precision="int8"))
    layers = compute(s.report)
    assert layers and {n.precision for n in layers} == {"int8"} and s.report.honored
    got, want = s.run(feeds)["logits"], ort_outputs(onnx.load(str(path)), feeds)[0]
    assert np.abs(got - want).max() < 0.1 * np.abs(want).max() + 1e-3


# -- devices and fallback ---------------------------------------------------------------------
@pytest.mark.skipif("NPU" in DEVICES, reason="checks a machine without an NPU")
def test_absent_npu_under_error_is_a_device_error_listing_the_devices(models: dict[str, Any]) -> None:
    with pytest.raises(DeviceError, match="NPU is not present") as info:
        InferenceSession(models["matmul_relu"], device="npu", engine="openvino",
                         exec_policy=strict(precision="int8", static_shape=True))
    assert ", ".join(DEVICES) in str(info.value.expected)


@pytest.mark.skipif("NPU" in DEVICES, reason="checks a machine without an NPU")
def test_absent_npu_under_warn_runs_on_the_cpu_and_says_so(models: dict[str, Any]) -> None:
    feeds = feeds_of("matmul_relu")
    with pytest.warns(PolicyViolationWarning, match="device_unavailable"):
        s = InferenceSession(models["matmul_relu"], device="npu", engine="openvino",
                             exec_policy={"fallback": "warn", "fixed_shapes": {"x": [4, 256]}})
    assert s.providers == ["NPU"] and s.providers_used == ["CPU"]
    kinds = {v.kind for v in s.report.violations}
    assert kinds == {"device_unavailable", "provider_fallback"}
    assert all(not n.honored and n.requested == "NPU" for n in s.report.nodes)
    np.testing.assert_allclose(s.run(feeds)["y"], ort_outputs(models["matmul_relu"], feeds)[0], rtol=1e-4, atol=1e-4)


def test_auto_and_hetero_run_where_openvino_says(models: dict[str, Any]) -> None:
    auto = InferenceSession(models["matmul_relu"], device="auto", engine="openvino", exec_policy=strict())
    assert auto.report.requested["device"] == "AUTO" and auto.report.honored
    assert auto.providers_used == ["CPU"] and all(n.requested is None for n in auto.report.nodes)
    hetero = InferenceSession(models["matmul_relu"], engine="openvino", engine_options={"device": "HETERO:CPU"},
                              exec_policy=strict())
    assert hetero.report.requested["device"] == "HETERO:CPU" and hetero.providers_used == ["CPU"]


def test_cuda_is_not_an_openvino_device(models: dict[str, Any]) -> None:
    with pytest.raises(DeviceError, match="cannot target cuda"):
        InferenceSession(models["matmul_relu"], device="cuda", engine="openvino")


# -- shapes, options, caches ------------------------------------------------------------------
def test_fixed_shapes_reshape_the_model(models: dict[str, Any]) -> None:
    s = InferenceSession(models["tiny_transformer"], engine="openvino",
                         exec_policy=strict(fixed_shapes={"x": [2, 5, 64]}))
    assert s.input_info[0].shape == (2, 5, 64) and s.report.requested["reshape"] == {"x": [2, 5, 64]}
    np.testing.assert_allclose(s.run({"x": tx()})["y"], ort_outputs(models["tiny_transformer"], {"x": tx()})[0],
                               rtol=1e-4, atol=1e-4)
    with pytest.raises(InputError, match="size 3 on axis 0"):
        s.run({"x": tx(batch=3)})


def test_static_shape_without_fixed_shapes_is_a_violation(models: dict[str, Any]) -> None:
    with pytest.raises(PolicyViolationError, match="static_shape"):
        InferenceSession(models["matmul_relu"], engine="openvino", exec_policy=strict(static_shape=True))


def test_options_reach_the_compiled_model(models: dict[str, Any]) -> None:
    s = InferenceSession(models["matmul_relu"], engine="openvino", exec_policy=strict(num_threads=1),
                         engine_options={"performance_hint": "THROUGHPUT"})
    note = next(n for n in s.report.notes if n.startswith("compiled model reports"))
    assert "PERFORMANCE_HINT=THROUGHPUT" in note and "INFERENCE_NUM_THREADS=1" in note


def test_bad_engine_options_are_policy_errors(models: dict[str, Any]) -> None:
    with pytest.raises(PolicyError, match="unknown engine option 'providers'"):
        InferenceSession(models["matmul_relu"], engine="openvino", engine_options={"providers": ["CPU"]})
    with pytest.raises(PolicyError, match="INFERENCE_NUM_THREAD") as info:
        InferenceSession(models["matmul_relu"], engine="openvino",
                         engine_options={"config": {"INFERENCE_NUM_THREAD": 1}})
    assert "INFERENCE_NUM_THREADS" in str(info.value.hint)


def test_kernel_choices_and_determinism_are_refused_by_name(models: dict[str, Any]) -> None:
    with pytest.raises(PolicyViolationError) as info:
        InferenceSession(models["matmul_relu"], engine="openvino", kernel_policy={"matmul": "cublaslt"},
                         exec_policy=strict(deterministic=True))
    assert {(v.kind, v.subject) for v in info.value.violations} == {("kernel", "matmul"), ("option", "deterministic")}


def test_cache_dir_is_keyed_and_reused(models: dict[str, Any], tmp_path: Path) -> None:
    first = InferenceSession(models["matmul_relu"], engine="openvino", exec_policy=strict(cache_dir=str(tmp_path)))
    folder = Path(first.report.requested["cache_folder"])
    assert folder.parent == tmp_path / "openvino" and len(folder.name) == 24
    blobs = sorted(p.name for p in folder.iterdir())
    assert blobs and any("exported to the cache" in n for n in first.report.notes)
    second = InferenceSession(models["matmul_relu"], engine="openvino", exec_policy=strict(cache_dir=str(tmp_path)))
    assert sorted(p.name for p in folder.iterdir()) == blobs
    assert any("imported from the cache" in n for n in second.report.notes)
    feeds = feeds_of("matmul_relu")
    np.testing.assert_array_equal(first.run(feeds)["y"], second.run(feeds)["y"])
    other = InferenceSession(models["matmul_relu"], engine="openvino",
                             exec_policy=strict(cache_dir=str(tmp_path), num_threads=1))
    assert Path(other.report.requested["cache_folder"]) != folder  # another policy, another folder


# -- many requests, threads -------------------------------------------------------------------
def test_run_many_matches_run(sess: InferenceSession) -> None:
    feeds = [{"x": tx(i, batch=1 + i % 3, seq=2 + i % 5)} for i in range(24)]
    many = sess.run_many(feeds)
    assert len(many) == len(feeds)
    for got, f in zip(many, feeds):
        np.testing.assert_array_equal(got["y"], sess.run(f)["y"])
    as_lists = sess.run_many([[f["x"]] for f in feeds[:3]])
    assert isinstance(as_lists[0], list)
    np.testing.assert_array_equal(as_lists[2][0], many[2]["y"])


def test_run_many_under_throughput_and_on_onnxruntime(transformer: Any) -> None:
    feeds = [{"x": tx(i)} for i in range(8)]
    tput = InferenceSession(transformer, engine="openvino", exec_policy=strict(),
                            engine_options={"performance_hint": "THROUGHPUT", "num_requests": 4})
    on_ort = InferenceSession(transformer, exec_policy=strict())
    for a, b in zip(tput.run_many(feeds), on_ort.run_many(feeds)):  # the base class loops where there is no queue
        np.testing.assert_allclose(a["y"], b["y"], rtol=1e-4, atol=1e-4)
    with pytest.raises(InputError, match="run_many takes a list"):
        tput.run_many({"x": tx()})


def test_execution_timeout_path_gives_the_same_outputs(transformer: Any, sess: InferenceSession) -> None:
    timed = InferenceSession(transformer, engine="openvino", exec_policy=strict(execution_timeout_ms=60_000))
    np.testing.assert_array_equal(timed.run({"x": tx()})["y"], sess.run({"x": tx()})["y"])
    np.testing.assert_array_equal(timed.run_many([{"x": tx()}])[0]["y"], sess.run({"x": tx()})["y"])


def test_eight_threads_of_fifty_runs_equal_serial(sess: InferenceSession) -> None:
    inputs = [tx(i) for i in range(8)]
    expected = [sess.run({"x": x})["y"] for x in inputs]
    errors: list[str] = []

    def worker(i: int) -> None:
        for _ in range(50):
            if not np.array_equal(sess.run({"x": inputs[i]})["y"], expected[i]):
                errors.append(f"thread {i} differs")
                return

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


# -- errors -----------------------------------------------------------------------------------
def test_bad_model_bytes_are_a_model_load_error() -> None:
    with pytest.raises(ModelLoadError, match="not a valid ONNX model"):
        InferenceSession(b"\x08\x01garbage, not a model", engine="openvino")


def test_a_model_openvino_cannot_read_is_a_model_load_error() -> None:
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Foo", ["x"], ["y"], domain="com.example")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    model.ir_version = 10
    with pytest.raises(ModelLoadError, match="OpenVINO could not read the model") as info:
        InferenceSession(model, engine="openvino")
    assert "com.example.Foo" in str(info.value) and "Exception from" not in str(info.value)


def test_bad_feeds_are_input_errors(sess: InferenceSession) -> None:
    with pytest.raises(InputError, match="dtype float64"):
        sess.run({"x": tx().astype(np.float64)})
    with pytest.raises(InputError, match="unknown input name 'z'"):
        sess.run({"z": tx()})
    with pytest.raises(InputError, match="size 63 on axis 2"):
        sess.run({"x": np.zeros((2, 5, 63), np.float32)})


def test_missing_openvino_names_the_extra(models: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    with pytest.raises(EngineUnavailableError, match="engine 'openvino' is not available") as info:
        InferenceSession(models["matmul_relu"], engine="openvino")
    assert "xpuruntime[openvino]" in str(info.value.hint)
    entry = next(e for e in list_engines() if e.name == "openvino")
    assert not entry.installed and entry.extra == "openvino"


def test_engine_is_listed_with_its_devices() -> None:
    entry = next(e for e in list_engines() if e.name == "openvino")
    assert entry.installed and entry.version and set(entry.devices) == {"cpu", "gpu", "npu"}
    assert "ov" in entry.aliases


def test_closed_session_refuses_runs(transformer: Any) -> None:
    s = InferenceSession(transformer, engine="ov")
    s.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(XpuRuntimeError, match="the session is closed"):
            s.run({"x": tx()})
