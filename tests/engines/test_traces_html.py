"""Receipts as Chrome/Perfetto traces and HTML pages, from real ONNX Runtime, OpenVINO and torch runs.

Traces are checked against the Chrome Trace Event Format's documented structure (a JSON Schema below): the
``perfetto`` package's trace processor downloads its binary at run time, which tests may not do. HTML pages are
loaded in headless Chromium (the Debian ``chromium`` package) when it is installed.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from typer.testing import CliRunner

import xpuruntime as xrt
from xpuruntime.cli import app
from xpuruntime.runtime.profiler import profile

jsonschema = pytest.importorskip("jsonschema")

# The Chrome Trace Event Format (JSON Object Format), as far as xpuruntime writes it: complete ("X"),
# instant ("i") and metadata ("M") events.
TRACE_SCHEMA = {
    "type": "object",
    "required": ["traceEvents"],
    "properties": {
        "displayTimeUnit": {"enum": ["ms", "ns"]},
        "otherData": {"type": "object"},
        "traceEvents": {"type": "array", "items": {
            "type": "object",
            "required": ["name", "ph", "pid", "tid"],
            "properties": {"name": {"type": "string"}, "cat": {"type": "string"}, "ph": {"enum": ["X", "i", "M"]},
                           "pid": {"type": "integer"}, "tid": {"type": "integer"}, "ts": {"type": "number"},
                           "dur": {"type": "number", "minimum": 0}, "s": {"enum": ["g", "p", "t"]},
                           "args": {"type": "object"}},
            "allOf": [
                {"if": {"properties": {"ph": {"const": "X"}}}, "then": {"required": ["ts", "dur"]}},
                {"if": {"properties": {"ph": {"const": "i"}}}, "then": {"required": ["ts"]}},
                {"if": {"properties": {"ph": {"const": "M"}}}, "then": {
                    "properties": {"name": {"enum": ["process_name", "thread_name", "process_sort_index",
                                                     "thread_sort_index"]},
                                   "args": {"required": ["name"]}}}},
            ]}},
    },
}


def check_trace(trace: dict) -> list[dict]:
    jsonschema.validate(json.loads(json.dumps(trace)), TRACE_SCHEMA)
    return trace["traceEvents"]


@pytest.fixture(scope="module", name="model_path")
def _model_path(tmp_path_factory):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 16])
    w = helper.make_tensor("w", TensorProto.FLOAT, [16, 16], np.linspace(-1, 1, 256, dtype=np.float32))
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="proj"),
             helper.make_node("Relu", ["h"], ["r"], name="act"),
             helper.make_node("Add", ["r", "x"], ["y"], name="residual")]
    model = helper.make_model(helper.make_graph(nodes, "block", [x], [y], [w]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    path = tmp_path_factory.mktemp("model") / "block.onnx"
    onnx.save(model, str(path))
    return path


VIOLATING = {"cuda_graphs": True, "static_shape": True, "fallback": "allow"}  # CUDA graphs on the CPU: one option violation
FEEDS = {"x": np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32)}


def _engines() -> list[str]:
    return [e.name for e in xrt.list_engines() if e.installed and e.name in ("onnxruntime", "openvino")]


@pytest.mark.parametrize("engine", _engines())
def test_explain_trace_holds_engine_events_and_xpuruntime_spans(model_path, engine):
    report = xrt.InferenceSession(model_path, device="cpu", engine=engine).explain(FEEDS)
    events = check_trace(report.to_trace())
    spans = {e["name"] for e in events if e.get("cat") == "xpuruntime"}
    assert {"translate", "load", "verify", "profile"} <= spans
    nodes = [e for e in events if e["ph"] == "X" and "node" in e["args"]]
    assert {e["args"]["node"] for e in nodes} == {n.name for n in report.nodes}
    for e in nodes:
        assert e["args"]["provider"] and e["args"]["precision"] and e["args"]["evidence"]
    threads = {e["args"]["name"] for e in events if e["name"] == "thread_name"}
    assert "xpuruntime" in threads and set(report.providers_used) <= threads


def test_ort_trace_events_are_its_profiling_json(model_path):
    report = xrt.InferenceSession(model_path, device="cpu").explain(FEEDS)
    assert {e["name"] for e in report.events if e["cat"] == "Node"} == {"proj", "act", "residual"}
    assert any(e["name"] == "model_run" for e in report.events)
    assert all(e["args"].get("op_name") for e in report.events if e["cat"] == "Node")


def test_violations_are_instant_events(model_path):
    sess = xrt.InferenceSession(model_path, device="cpu", engine="onnxruntime",
                                exec_policy=VIOLATING)
    report = sess.explain(FEEDS)
    events = check_trace(report.to_trace())
    marks = [e for e in events if e["ph"] == "i"]
    assert len(marks) == len(report.violations) > 0
    assert all(e["args"]["reason"] for e in marks)


def test_placement_only_receipt_traces_its_spans(model_path):
    sess = xrt.InferenceSession(model_path, device="cpu")
    sess.run(FEEDS)
    events = check_trace(sess.report.to_trace())
    assert [e["name"] for e in events if e.get("cat") == "xpuruntime"] == ["translate", "load", "verify", "run"]


def test_receipt_round_trips_through_json(model_path):
    report = xrt.InferenceSession(model_path, device="cpu").explain(FEEDS)
    back = xrt.ExecutionReport.from_dict(json.loads(report.to_json()))
    assert back.to_dict() == report.to_dict()


@pytest.mark.parametrize("engine", _engines())
def test_profile_context_profiles_each_session_once_with_its_engine(model_path, engine):
    sess = xrt.InferenceSession(model_path, device="cpu", engine=engine)
    with profile() as prof:
        for _ in range(3):
            sess.run(FEEDS)
    assert [s["name"] for s in prof.spans] == ["run"] * 3
    assert len(prof.reports) == 1 and prof.reports[0].profiled
    assert {n.name for n in prof.reports[0].nodes} and prof.reports[0].engine == engine
    check_trace(prof.to_trace())


def test_profile_context_holds_torch_receipts_too():
    torch = pytest.importorskip("torch")
    import xpuruntime.pytorch as xrt_torch

    with profile() as prof, xrt_torch.profile() as receipt:
        torch.nn.functional.linear(torch.ones(4, 8), torch.ones(8, 8))
    prof.add(receipt)
    events = check_trace(prof.to_trace())
    assert any(e.get("cat") == "cpu_op" and e["args"].get("op_type") == "matmul" for e in events)


# -- HTML ---------------------------------------------------------------------------------------------------
def _self_contained(page: str) -> None:
    lower = page.lower()
    for needle in ("<script src", "<link", "src=", "href=", "@import", "url(", "http:", "https:"):
        assert needle not in lower, needle


def test_html_page_is_self_contained_and_holds_the_key_facts(model_path):
    sess = xrt.InferenceSession(model_path, device="cpu", exec_policy=VIOLATING)
    report = sess.explain(FEEDS)
    page = report.to_html()
    _self_contained(page)
    assert 'data-verdict="violated"' in page and "<table class=\"violations" in page
    assert all(v.reason.replace("'", "&#x27;") in page for v in report.violations)
    assert "<table class=\"nodes sortable\"" in page and "<svg class=\"timeline\"" in page
    assert "Per provider" in page and "Per precision" in page and report.policy_hash in page


def test_html_escapes_what_the_model_names():
    from xpuruntime.receipts import NodeRecord

    node = NodeRecord("<script>alert(1)</script>", "MatMul", "CPU", time_us=3.0)
    report = xrt.ExecutionReport("onnxruntime", "cpu", "p" * 64, "f" * 64, nodes=[node])
    page = report.to_html()
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)" in page


# -- CLI ----------------------------------------------------------------------------------------------------
runner = CliRunner()


@pytest.mark.parametrize("command", [["explain"], ["run", "--random-inputs"]])
def test_cli_writes_trace_and_html(model_path, tmp_path, command):
    trace, html = tmp_path / "t.json", tmp_path / "r.html"
    result = runner.invoke(app, [*command, str(model_path), "--trace", str(trace), "--html", str(html), "--json"])
    assert result.exit_code == 0, result.output
    check_trace(json.loads(trace.read_text()))
    _self_contained(html.read_text())


def test_cli_compare_writes_one_trace_and_page_for_every_engine(model_path, tmp_path):
    engines = _engines()
    if len(engines) < 2:
        pytest.skip("needs two installed engines")
    trace, html = tmp_path / "c.json", tmp_path / "c.html"
    result = runner.invoke(app, ["compare", str(model_path), "--engines", ",".join(engines), "--trace", str(trace),
                                 "--html", str(html)])
    assert result.exit_code == 0, result.output
    events = check_trace(json.loads(trace.read_text()))
    assert {e["args"]["name"] for e in events if e["name"] == "process_name"} == set(engines)
    assert html.read_text().count("<section class=\"receipt\"") == len(engines)


def test_report_command_turns_receipt_json_into_html_and_trace(model_path, tmp_path):
    out = tmp_path / "out.json"
    result = runner.invoke(app, ["explain", str(model_path), "--json"])
    assert result.exit_code == 0, result.output
    out.write_text(result.stdout)
    html, trace = tmp_path / "r.html", tmp_path / "r.json"
    result = runner.invoke(app, ["report", str(out), "-o", str(html), "--trace", str(trace)])
    assert result.exit_code == 0, result.output
    assert "proj" in html.read_text()
    check_trace(json.loads(trace.read_text()))


def test_report_command_refuses_what_it_cannot_read_or_write(model_path, tmp_path):
    result = runner.invoke(app, ["report", str(model_path), "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 1 and "cannot read receipt" in result.output
    (tmp_path / "x.json").write_text('{"hello": 1}')
    result = runner.invoke(app, ["report", str(tmp_path / "x.json"), "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 1 and "holds no receipt" in result.output
    result = runner.invoke(app, ["report", str(tmp_path / "x.json")])
    assert result.exit_code == 2


def test_outputs_never_replace_a_link_and_keep_file_modes(model_path, tmp_path):
    target, link = tmp_path / "precious.txt", tmp_path / "r.html"
    target.write_text("keep")
    link.symlink_to(target)
    result = runner.invoke(app, ["explain", str(model_path), "--html", str(link)])
    assert result.exit_code == 1 and "not a regular file" in result.output
    assert target.read_text() == "keep" and link.is_symlink()
    page = tmp_path / "mine.html"
    page.write_text("old")
    page.chmod(0o600)
    assert runner.invoke(app, ["explain", str(model_path), "--html", str(page)]).exit_code == 0
    assert page.stat().st_mode & 0o777 == 0o600 and "<!DOCTYPE html>" in page.read_text()


# -- headless Chromium ----------------------------------------------------------------------------------------
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (apt-get install chromium)")
def test_chromium_renders_the_receipt(model_path, tmp_path):
    sess = xrt.InferenceSession(model_path, device="cpu", exec_policy=VIOLATING)
    page = tmp_path / "receipt.html"
    page.write_text(sess.explain(FEEDS).to_html())
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'data-verdict="violated"' in dom.stdout and "<svg" in dom.stdout
    assert all(name in dom.stdout for name in ("proj", "act", "residual"))
    shot = tmp_path / "receipt.png"
    run = subprocess.run([*flags, "--window-size=1100,1400", f"--screenshot={shot}", page.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
