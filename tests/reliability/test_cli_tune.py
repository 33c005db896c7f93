"""Item 13 and the rest of 14 for ``tune`` and ``lock``: ``-o``/``--lock`` are checked before any tuning;
``--entry ./torch.py:f`` no longer shadows torch; ``-o X --lock X`` is refused; ``--entry mod:__class__`` and an
entry that raises are errors, not tracebacks; ``lock verify`` judges by ``drift_rule()``, never the lock's own."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from xpuruntime.cli import app

SHAPES = ["--shapes", "matmul:fp32:8x8x8", "--repeats", "1", "--warmup", "0", "--no-ort"]


@pytest.mark.parametrize("target", ["dir", "fifo", "symlink_to_file", "dev_null"])
@pytest.mark.parametrize("option", ["-o", "--lock"])
def test_bad_targets_are_refused_before_tuning(tmp_path: Path, hostile_paths: dict, option: str, target: str,
                                               monkeypatch: pytest.MonkeyPatch):
    from xpuruntime.kernels import tuner

    monkeypatch.setattr(tuner.Tuner, "tune", lambda *a, **k: pytest.fail("tuned before checking the outputs"))
    path = hostile_paths[target]
    other = ["--lock", str(tmp_path / "t.lock.json")] if option == "-o" else ["-o", str(tmp_path / "t.yaml")]
    result = CliRunner().invoke(app, ["tune", *SHAPES, option, str(path).replace(".txt", ".json"), *other])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output


def test_the_same_file_for_policy_and_lock_is_refused(tmp_path: Path):
    result = CliRunner().invoke(app, ["tune", *SHAPES, "-o", str(tmp_path / "t.json"), "--lock",
                                      str(tmp_path / "t.json")])
    assert result.exit_code == 1 and "same file" in result.output
    assert not (tmp_path / "t.json").exists()


def test_an_entry_file_named_like_a_package_does_not_shadow_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "json.py").write_text("def f():\n    pass\n")
    monkeypatch.chdir(tmp_path)
    import json

    from xpuruntime.cli.kernels import load_entry

    fn = load_entry("./json.py:f")
    assert sys.modules["json"] is json and fn.__module__.startswith("_xpuruntime_entry_")


@pytest.mark.parametrize("entry", ["json:__class__", "json:JSONDecoder", "json:nothing", "nowhere_mod:f", "x.py:f",
                                   "json", "json:1x", "boom.py:f"])
def test_bad_entries_are_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, entry: str):
    (tmp_path / "boom.py").write_text("def f():\n    raise ZeroDivisionError('inside the entry')\n")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["tune", "--entry", entry, "-o", str(tmp_path / "t.yaml")])
    assert result.exit_code == 1 and "error: " in result.output and "Traceback" not in result.output, result.output


def test_policy_schema_to_stdout(tmp_path: Path):
    result = CliRunner().invoke(app, ["policy", "schema", "-o", "-"])
    assert result.exit_code == 0 and result.output.lstrip().startswith("{")
    assert not (tmp_path / "-").exists() and not Path("-").exists()
