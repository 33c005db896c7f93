"""Item 7: node, input and output names with ESC/OSC sequences were printed raw (receipt tables, output summaries,
error lines). ``safe_text()`` escapes control characters wherever the CLI and the renderers print model text."""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper
from typer.testing import CliRunner

from xpuruntime.cli import app
from xpuruntime.errors import safe_text

EVIL = "n\x1b]0;pwned\x07\x1b[2J\u202e\r[bold]x"


def _model(tmp_path: Path) -> Path:
    node = helper.make_node("Relu", [EVIL + "in"], [EVIL + "out"], name=EVIL + "node")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(EVIL + "in", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info(EVIL + "out", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "m.onnx")
    return tmp_path / "m.onnx"


def test_safe_text_escapes_controls_and_keeps_text():
    assert safe_text("relu\x1b]0;x\x07") == "relu\\x1b]0;x\\x07"
    assert safe_text("a\nb\tc", newlines=True) == "a\nb\tc" and safe_text("a\nb") == "a\\x0ab"
    assert safe_text("übung [bold]") == "übung [bold]" and safe_text("\u202e") == "\\u202e"


def test_receipts_outputs_and_errors_print_no_escape(tmp_path: Path):
    model = _model(tmp_path)
    for args in (["run", str(model), "--random-inputs"], ["explain", str(model)],
                 ["run", str(model)], ["run", str(model), "--input", "x=nowhere.npy"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code in (0, 1), result.output
        assert "\x1b" not in result.output and "\x07" not in result.output and "\u202e" not in result.output
        assert "\r" not in result.output and "Traceback" not in result.output
    ok = CliRunner().invoke(app, ["run", str(model), "--random-inputs"])
    assert "\\x1b]0;pwned\\x07" in ok.output and "[bold]x" in ok.output  # shown escaped, not as markup
