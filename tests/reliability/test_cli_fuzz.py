"""The CLI under fuzzed argv (hypothesis): ``run``, ``compare``, ``policy``, ``tune`` with options drawn from valid
values, junk and the paths of the ``hostile_paths`` folder (FIFOs, symlinks, device nodes, a 4 TiB .npy header,
odd names). Each command runs in process (typer's CliRunner). Every outcome: exit status 0, 1 or 2, no Python
traceback, nothing written outside the test's folder (and nothing in it replaced unless it is a new file)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from xpuruntime.cli import app

EXAMPLES = int(os.environ.get("XPURUNTIME_FUZZ_EXAMPLES", "60"))
JUNK = ["", "-", "--", "x=", "=", "x", "a=b=c", "\x1b]0;t\x07", "é", "1e309", "-1", "0", "99999999999999999999",
        "--help"]
SLOTS = ["nonexistent", "out.yaml", "out.json", "outdir", "in.npy"]  # names inside the work folder


def _state(root: Path) -> dict[str, tuple[int, int, float]]:
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            st = os.lstat(os.path.join(folder, name))
            out[os.path.relpath(os.path.join(folder, name), root)] = (st.st_mode, st.st_ino, st.st_mtime_ns)
    return out


@pytest.fixture
def world(tmp_path: Path, hostile_paths: dict[str, Path], mm: Any) -> dict[str, Any]:
    import numpy as np

    onnx.save(mm, tmp_path / "m.onnx")
    np.save(tmp_path / "in.npy", np.ones((2, 8), np.float32))
    (tmp_path / "p.yaml").write_text("execution: {precision: fp32}\n")
    return {"root": tmp_path, "paths": {k: str(v) for k, v in hostile_paths.items()
                                        if k not in ("char_device", "socket")},
            "mine": {"model": str(tmp_path / "m.onnx"), "policy": str(tmp_path / "p.yaml"),
                     **{s: str(tmp_path / s) for s in SLOTS}}}


def _value(draw: Any, world: dict[str, Any]) -> str:
    return draw(st.one_of(st.sampled_from(JUNK), st.sampled_from(sorted(world["paths"].values())),
                          st.sampled_from(sorted(world["mine"].values())), st.text(max_size=12)))


COMMANDS = {
    "run": (["run"], ["--input", "-i", "--output", "-o", "--policy", "--engine", "--device", "--trace", "--html"],
            ["--random-inputs", "--json", "--overwrite", "--explain"]),
    "compare": (["compare"], ["--engines", "--input", "--policy", "--seed", "--rtol", "--trace", "--html"],
                ["--json"]),
    "policy": (["policy"], ["-o"], []),
    "tune": (["tune"], ["--shapes", "-o", "--lock", "--policy", "--entry", "--dim", "--repeats"],
             ["--json", "--no-ort"]),
}


@st.composite
def argv(draw: Any, command: str, world: dict[str, Any]) -> list[str]:
    head, options, flags = COMMANDS[command]
    args = list(head)
    if command == "policy":
        args.append(draw(st.sampled_from(["validate", "schema", "hash", "diff", "show"])))
    if command in ("run", "compare", "policy") or draw(st.booleans()):
        args.append(draw(st.one_of(st.just(world["mine"]["model"] if command != "policy" else world["mine"]["policy"]),
                                   st.builds(lambda v: v, st.sampled_from(sorted(world["paths"].values()))))))
    if command == "compare":
        args += ["--engines", draw(st.sampled_from(["onnxruntime,onnxruntime", "onnxruntime", "nope,x", ",", ""]))]
    if command == "tune":
        args += ["--repeats", "1", "--warmup", "0", "--no-ort"]
        args += draw(st.sampled_from([["--shapes", "matmul:fp32:4x4x4"], []]))
    for _ in range(draw(st.integers(0, 4))):
        option = draw(st.sampled_from(options))
        value = _value(draw, world)
        if option in ("--input", "-i") and draw(st.booleans()):
            value = f"x={value}"
        args += [option, value]
    args += draw(st.lists(st.sampled_from(flags), max_size=2, unique=True)) if flags else []
    return args


@pytest.mark.parametrize("command", list(COMMANDS))
def test_cli_argv_fuzz(command: str, world: dict[str, Any], monkeypatch: pytest.MonkeyPatch):
    root: Path = world["root"]
    monkeypatch.chdir(root)  # relative names land in the work folder
    outside = root.parent
    outside_before = set(os.listdir(outside))
    protected = {k: v for k, v in _state(root).items() if not k.startswith(("out", ".")) and "/out" not in k}

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(args=argv(command, world))
    def check(args: list[str]) -> None:
        result = CliRunner().invoke(app, args)
        if os.environ.get("XPURUNTIME_FUZZ_TALLY"):
            with open(os.environ["XPURUNTIME_FUZZ_TALLY"], "a") as fh:
                fh.write(f"{command} {result.exit_code}\n")
        assert result.exit_code in (0, 1, 2), (args, result.output[-2000:], result.exception)
        assert "Traceback" not in result.output, (args, result.output[-3000:])
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise AssertionError((args, repr(result.exception)))
        now = _state(root)
        changed = [k for k, v in protected.items() if now.get(k) != v and not k.endswith((".yaml", ".json"))]
        assert not changed, (args, changed)
        assert set(os.listdir(outside)) == outside_before, (args, set(os.listdir(outside)) ^ outside_before)

    check()
