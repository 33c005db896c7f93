"""Item 8: the CLI dropped ``RuntimeWarning``s (a corrupt cache entry rebuilt, an unusable ``cache_dir``, a skipped
plugin: see test_bad_plugins). Every warning raised while a command runs is printed once as ``warning: ...``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx
from typer.testing import CliRunner

from xpuruntime.cli import app


def test_an_unusable_cache_dir_is_printed(tmp_path: Path, mm: Any):
    onnx.save(mm, tmp_path / "m.onnx")
    (tmp_path / "blocker").write_text("a file where the cache folder should be")
    (tmp_path / "p.yaml").write_text(f"execution: {{cache_dir: {tmp_path / 'blocker' / 'cache'}, precision: fp16}}\n")
    result = CliRunner().invoke(app, ["run", str(tmp_path / "m.onnx"), "--random-inputs", "--dim", "m=2", "-p",
                                      str(tmp_path / "p.yaml")])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning: ")]
    assert warnings and any("cache" in w for w in warnings), result.output
    assert len(warnings) == len(set(warnings))


def test_a_corrupt_cache_entry_rebuilt_is_printed(tmp_path: Path, mm: Any):
    onnx.save(mm, tmp_path / "m.onnx")
    (tmp_path / "p.yaml").write_text(f"execution: {{cache_dir: {tmp_path / 'c'}, precision: fp16}}\n")
    args = ["run", str(tmp_path / "m.onnx"), "--random-inputs", "--dim", "m=2", "-p", str(tmp_path / "p.yaml")]
    assert CliRunner().invoke(app, args).exit_code == 0
    entries = [p for p in (tmp_path / "c").rglob("*.onnx")]
    assert entries
    entries[0].write_bytes(b"garbage")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0 and any(line.startswith("warning: ") for line in result.output.splitlines()), \
        result.output
