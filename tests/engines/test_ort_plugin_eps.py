"""ONNX Runtime's plugin providers, for real: the OpenVINO plugin package (``onnxruntime-ep-openvino``) on the CPU.

Its tests are skipped, with the reason, only when the package is not installed; once installed every failure is a
failure. The TensorRT RTX plugin lists only RTX GPUs: here it is checked as a provider that is not there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import xpuruntime as xrt
from xpuruntime.errors import PolicyViolationError
from xpuruntime.inference.samples import matmul_relu, tiny_transformer

ort = pytest.importorskip("onnxruntime")

try:
    PLUGIN_VERSION = version("onnxruntime-ep-openvino")
except PackageNotFoundError:
    PLUGIN_VERSION = None
needs_plugin = pytest.mark.skipif(PLUGIN_VERSION is None, reason="onnxruntime-ep-openvino is not installed "
                                                                  "(pip install 'xpuruntime[openvino-ep]')")

OV = "OpenVINOExecutionProvider"
CPU = "CPUExecutionProvider"
ON_OV = {"providers": [OV]}


@pytest.fixture(scope="module")
def mm() -> Any:
    return matmul_relu(k=64, n=32)


def x_of(rows: int = 4, k: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, k)).astype(np.float32)


@pytest.fixture(scope="module")
def reference(mm: Any) -> np.ndarray:
    with xrt.InferenceSession(mm) as cpu:
        return cpu.run({"x": x_of()})["y"]


@needs_plugin
def test_providers_option_runs_every_node_on_the_openvino_plugin(mm: Any, reference: np.ndarray) -> None:
    with xrt.InferenceSession(mm, engine_options=ON_OV, exec_policy={"fallback": "error"}) as s:
        y = s.run({"x": x_of()})["y"]
        report = s.report
    assert report.honored and report.violations == []
    assert s.providers_used == [OV]
    assert {n.op_type for n in report.nodes} == {"MatMul", "Relu"}
    assert all(n.provider == OV and n.requested == OV for n in report.nodes)
    assert report.requested["plugin_devices"] == {OV: "CPU"}
    assert any(f"onnxruntime-ep-openvino {PLUGIN_VERSION}" in note for note in report.notes)
    np.testing.assert_allclose(y, reference, rtol=1e-5, atol=1e-5)  # fp32: IEEE (ACCURACY), as the CPU provider


@needs_plugin
def test_fp32_is_translated_into_the_plugins_load_config(mm: Any) -> None:
    with xrt.InferenceSession(mm, engine_options=ON_OV, exec_policy={"num_threads": 2}) as s:
        options = s.report.requested["provider_options"][OV]
    assert "device_type" not in options and "precision" not in options  # the plugin ignores both
    assert json.loads(options["load_config"]) == {"CPU": {"INFERENCE_PRECISION_HINT": "f32", "EXECUTION_MODE_HINT":
                                                          "ACCURACY", "INFERENCE_NUM_THREADS": "2"}}


@needs_plugin
@pytest.mark.parametrize(("precision", "hint"), [("fp16", "f16"), ("bf16", "bf16")])
def test_low_precision_is_a_hint_to_openvino_and_the_model_stays_float32(mm: Any, reference: np.ndarray,
                                                                         precision: str, hint: str) -> None:
    with xrt.InferenceSession(mm, engine_options=ON_OV, exec_policy={"precision": precision, "fallback": "error"}) as s:
        y = s.run({"x": x_of()})["y"]
        report = s.report
    assert json.loads(report.requested["provider_options"][OV]["load_config"])["CPU"]["INFERENCE_PRECISION_HINT"] == hint
    assert report.requested["model_variant"] == "original"
    assert any("INFERENCE_PRECISION_HINT" in note for note in report.notes)
    np.testing.assert_allclose(y, reference, rtol=0.05, atol=0.05)


@needs_plugin
def test_int8_runs_the_quantised_copy_on_the_plugin(mm: Any, reference: np.ndarray) -> None:
    with xrt.InferenceSession(mm, engine_options=ON_OV, exec_policy={"precision": "int8", "fallback": "error"}) as s:
        y = s.run({"x": x_of()})["y"]
        report = s.report
    assert report.requested["model_variant"] == "int8"
    assert "MatMulInteger" in {n.op_type for n in report.nodes} and s.providers_used == [OV]
    np.testing.assert_allclose(y, reference, rtol=0.2, atol=0.2)


@needs_plugin
def test_explain_reads_the_fused_openvino_subgraph_from_the_profile(mm: Any) -> None:
    with xrt.InferenceSession(mm, engine_options=ON_OV) as s:
        report = s.explain({"x": x_of()})
    assert report.honored and report.profiled
    [node] = report.nodes
    assert node.provider == OV and node.time_us > 0 and node.calls == 1
    assert node.precision is None  # the subgraph's float32 inputs prove nothing about OpenVINO's precision inside


@needs_plugin
def test_a_real_architecture_runs_on_the_plugin() -> None:
    model = tiny_transformer()
    feeds = {"x": np.random.default_rng(1).standard_normal((1, 8, 64)).astype(np.float32)}
    with xrt.InferenceSession(model) as cpu:
        reference = cpu.run(feeds)
    with xrt.InferenceSession(model, engine_options=ON_OV, exec_policy={"fallback": "error"}) as s:
        out = s.run(feeds)
        assert s.providers_used == [OV]
    for name, value in reference.items():
        np.testing.assert_allclose(out[name], value, rtol=1e-4, atol=1e-4)


def _relu_det() -> Any:
    """Relu then Det: OpenVINO takes the Relu; the plugin has no Det, so ONNX Runtime gives it to the CPU."""
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"), helper.make_node("Det", ["r"], ["y"], name="det")]
    graph = helper.make_graph(nodes, "relu_det", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model


@needs_plugin
def test_a_node_the_plugin_leaves_to_the_cpu_is_a_fallback_with_its_reason() -> None:
    x = np.abs(np.random.default_rng(2).standard_normal((4, 4))).astype(np.float32)
    with pytest.raises(PolicyViolationError) as info:
        xrt.InferenceSession(_relu_det(), engine_options=ON_OV, exec_policy={"fallback": "error"})
    [fallback] = info.value.violations
    assert (fallback.kind, fallback.subject, fallback.requested, fallback.actual) == ("provider_fallback", "det", OV,
                                                                                      CPU)
    assert "has no kernel for Det" in fallback.reason
    with xrt.InferenceSession(_relu_det(), engine_options=ON_OV, exec_policy={"fallback": "allow"}) as s:
        placed = {n.name: n.provider for n in s.report.nodes}
        y = s.run({"x": x})["y"]
    assert placed == {"relu": OV, "det": CPU} and not s.report.honored
    np.testing.assert_allclose(y, np.linalg.det(x), rtol=1e-4)


@needs_plugin
def test_the_plugin_never_takes_the_cpu_device_or_auto_without_an_accelerator(mm: Any) -> None:
    with xrt.InferenceSession(mm) as s:
        assert s.providers == [CPU] and s.providers_used == [CPU]
    with xrt.InferenceSession(mm, device="auto") as s:
        assert OV not in s.providers


@needs_plugin
def test_a_device_the_plugin_does_not_list_is_refused_naming_what_it_lists(mm: Any) -> None:
    plugin = _plugin()
    if any(kind == "gpu" for kind, _ in plugin.devices):
        pytest.skip("this machine has an Intel GPU that OpenVINO lists")
    with pytest.raises(PolicyViolationError) as info:
        xrt.InferenceSession(mm, device="gpu", exec_policy={"fallback": "error"})
    [missing] = [v for v in info.value.violations if v.kind == "provider_unavailable"]
    assert missing.subject == OV and "lists no device of the kind asked for" in missing.reason
    assert "CPU" in missing.reason


@needs_plugin
def test_cache_dir_goes_to_openvino_as_a_private_folder(mm: Any, tmp_path: Path) -> None:
    with xrt.InferenceSession(mm, engine_options=ON_OV, exec_policy={"cache_dir": str(tmp_path)}) as s:
        s.run({"x": x_of()})
        config = json.loads(s.report.requested["provider_options"][OV]["load_config"])
    folder = tmp_path / "openvino-ep"
    assert config["CPU"]["CACHE_DIR"] == str(folder)
    assert folder.is_dir() and (os.stat(folder).st_mode & 0o077) == 0
    assert any(p.suffix == ".blob" for p in folder.iterdir())


@needs_plugin
def test_registration_happens_once_across_threads(mm: Any) -> None:
    errors: list[BaseException] = []

    def build() -> None:
        try:
            with xrt.InferenceSession(mm, engine_options=ON_OV, exec_policy={"fallback": "error"}) as s:
                s.run({"x": x_of()})
        except BaseException as exc:  # collected and re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    cpu_devices = [d for d in ort.get_ep_devices() if d.ep_name == OV and dict(d.ep_metadata).get("ov_device") == "CPU"]
    assert len(cpu_devices) == 1  # registered once: a second registration would list the device twice


_APP_REGISTERED_FIRST = """
import onnxruntime as ort, onnxruntime_ep_openvino as ov, xpuruntime as xrt
from xpuruntime.inference.samples import matmul_relu
ort.register_execution_provider_library("the-apps-own-name", ov.get_library_path())
s = xrt.InferenceSession(matmul_relu(k=8, n=4), engine_options={"providers": ["OpenVINOExecutionProvider"]},
                         exec_policy={"fallback": "error"})
devices = [d for d in ort.get_ep_devices() if d.ep_name == "OpenVINOExecutionProvider"]
print(len(devices), s.providers_used)
"""


@needs_plugin
def test_a_library_the_application_registered_is_used_not_registered_again() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), "src") if p)}
    done = subprocess.run([sys.executable, "-c", _APP_REGISTERED_FIRST], capture_output=True, text=True, env=env,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[0] == str(len(_plugin().devices))
    assert "['OpenVINOExecutionProvider']" in done.stdout


def _plugin() -> Any:
    from xpuruntime.inference.engines.onnxruntime import plugin_providers

    return plugin_providers(ort)[OV]


def test_the_tensorrt_rtx_provider_without_its_package_is_refused_with_the_install_line(mm: Any) -> None:
    if "onnxruntime-ep-nv-tensorrt-rtx" in _installed():
        pytest.skip("the TensorRT RTX plugin package is installed here")
    with pytest.raises(PolicyViolationError) as info:
        xrt.InferenceSession(mm, device="cuda", engine_options={"providers": ["NvTensorRTRTXExecutionProvider"]},
                             exec_policy={"fallback": "error"})
    [missing] = [v for v in info.value.violations if v.kind == "provider_unavailable"]
    assert "pip install onnxruntime-ep-nv-tensorrt-rtx" in missing.reason and "8.6, 8.9 or 12.0" in missing.reason


def _installed() -> set[str]:
    from importlib.metadata import distributions

    return {(d.metadata["Name"] or "").lower() for d in distributions()}


# -- provider selection policies (engine_options["provider_selection"]) ----------------------------------
@needs_plugin
def test_a_provider_selection_policy_lets_onnxruntime_choose_the_plugin(mm: Any, reference: np.ndarray) -> None:
    """The plugin lists only the CPU here: device 'auto' alone keeps the CPU provider; under a selection policy
    ONNX Runtime itself chooses among every registered device and takes the plugin's."""
    with xrt.InferenceSession(mm, device="auto", exec_policy={"fallback": "error"}) as plain:
        assert plain.providers_used == [CPU]
    with xrt.InferenceSession(mm, device="auto", engine_options={"provider_selection": "prefer_cpu"},
                              exec_policy={"fallback": "error"}) as s:
        y = s.run({"x": x_of()})["y"]
        report = s.report
        explained = s.explain({"x": x_of()})
    assert report.requested["provider_selection"] == "prefer_cpu" and report.requested["providers"] == []
    assert s.providers_used == [OV] and report.honored
    assert all(n.requested == OV for n in report.nodes)  # judged against the provider ONNX Runtime chose first
    assert any(f"provider_selection prefer_cpu: ONNX Runtime chose {OV}" in n for n in report.notes), report.notes
    assert explained.profiled and explained.honored and explained.providers_used == [OV]
    np.testing.assert_allclose(y, reference, rtol=1e-5, atol=1e-5)


def test_every_provider_selection_name_is_an_onnxruntime_device_policy() -> None:
    from xpuruntime.inference.engines import _onnxruntime as tr

    if not hasattr(ort, "OrtExecutionProviderDevicePolicy"):
        pytest.skip(f"onnxruntime {ort.__version__} has no provider selection policies")
    members = {m for m in dir(ort.OrtExecutionProviderDevicePolicy) if m.isupper()}
    assert {n.upper() for n in tr.PROVIDER_SELECTION} == members


@pytest.mark.parametrize(("device", "options", "match"), [
    ("auto", {"provider_selection": "prefer_gpus"}, "did you mean 'prefer_gpu'"),
    ("auto", {"provider_selection": 3}, "device policies"),
    ("cpu", {"provider_selection": "prefer_gpu"}, "device='cpu'"),
    ("auto", {"provider_selection": "max_performance", "providers": [CPU]}, "engine_options.providers"),
])
def test_a_provider_selection_that_cannot_apply_is_refused_by_name(mm: Any, device: str, options: dict,
                                                                   match: str) -> None:
    with pytest.raises(xrt.PolicyError, match="provider_selection") as info:
        xrt.InferenceSession(mm, device=device, engine_options=options)
    assert match in str(info.value)


@needs_plugin
def test_a_provider_onnxruntime_selects_gets_the_policys_options_for_it(mm: Any) -> None:
    with xrt.InferenceSession(mm, device="auto", engine_options={"provider_selection": "max_performance"},
                              exec_policy={"precision": "fp16"}) as s:
        config = s.report.requested["session_config"]
    assert json.loads(config["ep.openvinoexecutionprovider.load_config"])["CPU"]["INFERENCE_PRECISION_HINT"] == "f16"
