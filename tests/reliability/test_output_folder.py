"""Item 2: ``run --output DIR`` writes only inside DIR. Output names come from the model; ``../../x``, ``/abs/x``,
``a/b``, a terminal escape or 300 characters used to become paths (``--overwrite`` replaced a file outside DIR) or
tracebacks; ``--output`` onto a file and string outputs gave tracebacks too."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from typer.testing import CliRunner

from xpuruntime.cli import app
from xpuruntime.cli._outputs import output_file_names

NAMES = ["../../evil", "/tmp/xpuruntime-abs-evil", "a/b", "e" * 300, "esc\x1b]0;title\x07", "y", "Y", "report.json",
         "outputs.json", "..", "."]


def _model(tmp_path: Path, names: list[str], strings: bool = False) -> Path:
    dtype = TensorProto.STRING if strings else TensorProto.FLOAT
    nodes = [helper.make_node("Identity", ["x"], [n], name=f"id{i}") for i, n in enumerate(names)]
    graph = helper.make_graph(nodes, "names", [helper.make_tensor_value_info("x", dtype, [2])],
                              [helper.make_tensor_value_info(n, dtype, [2]) for n in names])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    return path


def _tree(root: Path) -> set[str]:
    return {os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files}


def test_output_names_never_become_paths(tmp_path: Path):
    work = tmp_path / "deep" / "er"
    work.mkdir(parents=True)
    model = _model(tmp_path, NAMES)
    before = _tree(tmp_path)
    for overwrite in ([], ["--overwrite"]):
        result = CliRunner().invoke(app, ["run", str(model), "--random-inputs", "-o", str(work / "out"), *overwrite])
        assert result.exit_code == 0, result.output
    index = json.loads((work / "out" / "outputs.json").read_text())
    assert list(index) == NAMES and len(set(map(str.lower, index.values()))) == len(NAMES)
    assert all("/" not in f and not f.startswith(".") and len(f) <= 110 for f in index.values())
    assert _tree(tmp_path) - before == {f"deep/er/out/{f}" for f in [*index.values(), "outputs.json", "report.json"]}
    assert not Path("/tmp/xpuruntime-abs-evil.npy").exists()
    x = np.load(work / "out" / index["a/b"])
    assert x.shape == (2,)


def test_file_names_are_unique_and_plain():
    files = output_file_names(["y", "Y", "a/b", "a_b", "", "\0", "report.json"])
    assert files == {"y": "y.npy", "Y": "Y-1.npy", "a/b": "a_b.npy", "a_b": "a_b-3.npy", "": "output.npy",
                     "\0": "_.npy", "report.json": "report.json.npy"}


@pytest.mark.parametrize("target", ["regular", "fifo", "symlink_to_dir", "dev_null"])
def test_output_onto_something_not_a_folder_is_refused_before_the_run(tmp_path: Path, hostile_paths: dict,
                                                                       target: str):
    model = _model(tmp_path, ["y"])
    path = hostile_paths[target]
    result = CliRunner().invoke(app, ["run", str(model), "--random-inputs", "-o", str(path)])
    assert result.exit_code == 1 and "not a folder" in result.output and "Traceback" not in result.output


def test_string_outputs_are_saved(tmp_path: Path):
    model = _model(tmp_path, ["s"], strings=True)
    result = CliRunner().invoke(app, ["run", str(model), "--random-inputs", "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    saved = np.load(tmp_path / "out" / "s.npy")
    assert saved.dtype.kind == "U" and saved.shape == (2,)


def test_an_existing_output_is_kept_without_overwrite(tmp_path: Path):
    model = _model(tmp_path, ["y"])
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "y.npy").write_text("mine")
    result = CliRunner().invoke(app, ["run", str(model), "--random-inputs", "-o", str(tmp_path / "out")])
    assert result.exit_code == 1 and "already holds y.npy" in result.output
    assert (tmp_path / "out" / "y.npy").read_text() == "mine"
