"""The rest of item 14 for ``run``: a duplicate ``--input x=`` silently kept the last one; a non-UTF-8 model path
got a misleading error from ONNX Runtime."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from typer.testing import CliRunner

import xpuruntime as xrt
from xpuruntime.cli import app


def test_a_duplicate_input_is_refused(tmp_path: Path, mm: Any):
    onnx.save(mm, tmp_path / "m.onnx")
    np.save(tmp_path / "a.npy", np.ones((2, 8), np.float32))
    np.save(tmp_path / "b.npy", np.zeros((2, 8), np.float32))
    result = CliRunner().invoke(app, ["run", str(tmp_path / "m.onnx"), "-i", f"x={tmp_path / 'a.npy'}",
                                      "-i", f"x={tmp_path / 'b.npy'}"])
    assert result.exit_code == 1 and "given twice" in result.output


def test_a_non_utf8_model_path(tmp_path: Path, mm: Any, engine: str):
    path = os.fsencode(tmp_path) + b"/m\xff.onnx"
    with open(path, "wb") as fh:
        fh.write(mm.SerializeToString())
    with xrt.InferenceSession(os.fsdecode(path), engine=engine) as sess:  # ORT said "incompatible constructor"
        assert sess.run({"x": np.ones((2, 8), np.float32)})["y"].shape == (2, 4)
