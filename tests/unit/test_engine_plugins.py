"""Engines from other distributions, through the real ``importlib.metadata`` entry point mechanism.

Each test "installs" the plugins of ``tests/plugins`` the way pip does (a ``*.dist-info`` folder with
``METADATA`` and ``entry_points.txt`` next to the module) into a temporary folder, and runs xpuruntime in
a subprocess with that folder on ``sys.path``: the registry is loaded once per process, so this process's
registry is never touched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"
SRC = Path(__file__).resolve().parents[2] / "src"
GROUP = "xpuruntime.engines"

HIJACK = '''
from xpuruntime_echo_engine import EchoEngine


class HijackEngine(EchoEngine):
    name = "onnxruntime"  # a built-in name: must be refused


class AliasEngine(EchoEngine):
    name = "echo2"
    aliases = ("ort", "echo-two")  # 'ort' is a built-in alias: only that alias must be dropped
'''


def _dist(site: Path, dist: str, module: str, entry_points: dict[str, str]) -> None:
    info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    lines = "".join(f"{name} = {value}\n" for name, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[{GROUP}]\n{lines}")
    (info / "top_level.txt").write_text(module + "\n")


def _site(tmp_path: Path, *plugins: str) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(PLUGINS / "xpuruntime_echo_engine" / "xpuruntime_echo_engine.py", site)
    if "echo" in plugins:
        _dist(site, "xpuruntime-echo-engine", "xpuruntime_echo_engine", {"echo": "xpuruntime_echo_engine:EchoEngine"})
    if "broken" in plugins:
        shutil.copy(PLUGINS / "xpuruntime_broken_engine" / "xpuruntime_broken_engine.py", site)
        _dist(site, "xpuruntime-broken-engine", "xpuruntime_broken_engine",
              {"broken": "xpuruntime_broken_engine:BrokenEngine"})
    if "hijack" in plugins:
        (site / "xpuruntime_hijack.py").write_text(HIJACK)
        _dist(site, "xpuruntime-hijack", "xpuruntime_hijack",
              {"hijack": "xpuruntime_hijack:HijackEngine", "echo2": "xpuruntime_hijack:AliasEngine",
               "not-an-engine": "os.path:join"})
    return site


def _python(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(SRC)]), "PYTHONWARNINGS": "default"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, env=env)


def _engines(site: Path) -> tuple[dict[str, dict], str]:
    result = _python(site, "-m", "xpuruntime", "engines", "--json")
    assert result.returncode == 0, result.stderr
    return {e["name"]: e for e in json.loads(result.stdout)}, result.stderr


def test_plugin_declares_the_entry_point_the_tests_install() -> None:
    text = (PLUGINS / "xpuruntime_echo_engine" / "pyproject.toml").read_text()
    assert f'[project.entry-points."{GROUP}"]' in text
    assert 'echo = "xpuruntime_echo_engine:EchoEngine"' in text


def test_an_installed_plugin_is_listed_by_the_cli(tmp_path: Path) -> None:
    engines, stderr = _engines(_site(tmp_path, "echo"))
    echo = engines["echo"]
    assert echo["installed"] is True and echo["version"] == "0.1" and echo["devices"] == ["cpu"]
    assert echo["aliases"] == ["onnx-reference"]
    assert echo["source"].startswith("plugin xpuruntime-echo-engine 0.1")
    assert engines["onnxruntime"]["installed"] is True
    assert "plugin" not in stderr


def test_a_plugin_engine_runs_a_session_with_a_receipt(tmp_path: Path) -> None:
    code = """
import numpy as np, onnx, xpuruntime as xrt
from xpuruntime.inference.samples import matmul_relu
model = matmul_relu(k=8, n=4)
w = onnx.numpy_helper.to_array(model.graph.initializer[0])
x = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
for name in ("echo", "ONNX-Reference"):
    sess = xrt.InferenceSession(model, engine=name, exec_policy={"fallback": "error"})
    y = sess.run({"x": x})["y"]
    assert np.allclose(y, np.maximum(x @ w, 0), atol=1e-5), y
    assert sess.engine_name == "echo" and sess.report.honored and sess.providers_used == ["echo"]
print("ok", [e.name for e in xrt.list_engines()])
"""
    result = _python(_site(tmp_path, "echo"), "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok") and "'echo'" in result.stdout


def test_a_plugin_that_breaks_on_import_leaves_the_built_ins_working(tmp_path: Path) -> None:
    engines, stderr = _engines(_site(tmp_path, "echo", "broken"))
    assert "broken" not in engines
    assert {"onnxruntime", "echo"} <= set(engines)
    assert "plugin 'broken' from xpuruntime-broken-engine 0.1 was skipped" in stderr
    assert "native library is missing" in stderr
    code = ("import numpy as np, xpuruntime as xrt; from xpuruntime.inference.samples import matmul_relu; "
            "s = xrt.InferenceSession(matmul_relu(k=8, n=4)); "
            "print(s.run({'x': np.ones((1, 8), np.float32)})['y'].shape)")
    only_broken = tmp_path / "only-broken"
    only_broken.mkdir()
    result = _python(_site(only_broken, "broken"), "-c", code)
    assert result.returncode == 0 and result.stdout.strip() == "(1, 4)", result.stderr
    assert "RuntimeWarning" in result.stderr


def test_a_plugin_cannot_replace_a_built_in_engine_or_alias(tmp_path: Path) -> None:
    site = _site(tmp_path, "echo", "hijack")
    engines, stderr = _engines(site)
    assert engines["onnxruntime"]["source"] == "xpuruntime.inference.engines.onnxruntime"
    assert "the engine name 'onnxruntime' is taken" in stderr
    assert engines["echo2"]["aliases"] == ["echo-two"] and "alias 'ort' is taken" in stderr
    assert "'not-an-engine'" in stderr and "not an xpuruntime.inference.Engine subclass" in stderr
    code = ("import xpuruntime.inference.engine as e; "
            "print(e.get_engine_class('ort').__module__, e.get_engine_class('echo-two').name)")
    result = _python(site, "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["xpuruntime.inference.engines.onnxruntime", "echo2"]


@pytest.mark.parametrize("engines", [["onnxruntime", "echo"], ["echo", "onnxruntime@cpu"]])
def test_compare_works_on_a_plugin_engine(tmp_path: Path, engines: list[str]) -> None:
    code = f"""
import xpuruntime as xrt
from xpuruntime.inference.samples import tiny_transformer
result = xrt.compare(tiny_transformer(), engines={engines!r}, rtol=1e-3, atol=1e-4)
assert result.passed, result.table()
print(result.to_json())
"""
    result = _python(_site(tmp_path, "echo"), "-c", code)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["passed"] is True and [r["report"]["engine"] for r in data["runs"]] == \
        [e.split("@")[0] for e in engines]
