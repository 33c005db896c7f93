"""Item 5: engine options that name a path bypassed the cache rules: ``engine_options={"config": {"CACHE_DIR": d}}``
on OpenVINO loaded a blob with zeroed weights and returned wrong outputs. Every such option is refused and points
to the policy's ``cache_dir`` (which gets private folders and checksums)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from _rel_models import ONNX_ENGINES

import xpuruntime as xrt
from xpuruntime.errors import PolicyError

CASES = [("openvino", {"config": {"CACHE_DIR": "{d}"}}), ("openvino", {"config": {"CACHE_MODE": "OPTIMIZE_SIZE"}}),
         ("onnxruntime", {"session_config": {"ep.context_file_path": "{d}/ctx.onnx"}}),
         ("onnxruntime", {"session_config": {"ep.context_enable": "1"}}),
         ("onnxruntime", {"provider_options": {"CPUExecutionProvider": {"trt_engine_cache_path": "{d}"}}})]


@pytest.mark.parametrize(("engine", "options"), CASES, ids=[str(o) for _, o in CASES])
def test_path_options_are_refused_with_a_pointer_to_cache_dir(mm: Any, tmp_path: Path, engine: str,
                                                               options: dict):
    if engine not in ONNX_ENGINES:
        pytest.skip(f"{engine} is not installed")
    text = repr(options).replace("{d}", str(tmp_path))
    with pytest.raises(PolicyError, match="cache_dir") as info:
        xrt.InferenceSession(mm, engine=engine, engine_options=eval(text))  # noqa: S307 - our own literal
    assert "bypass" in str(info.value)
    assert list(tmp_path.iterdir()) == []  # nothing written there


def test_ordinary_options_still_apply(mm: Any):
    s = xrt.InferenceSession(mm, engine_options={"session_config": {"session.intra_op.allow_spinning": "0"}})
    assert s.report.requested["session_config"]["session.intra_op.allow_spinning"] == "0"
