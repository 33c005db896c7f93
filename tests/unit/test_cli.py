"""The ``xpuruntime`` command: output a user reads, JSON a script parses, and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from typer.testing import CliRunner

import xpuruntime
from xpuruntime import Policy
from xpuruntime.cli import app

ALIASED = "kernels:\n  matmul: cublasLt\n  attention: [flash_v2, mem_efficient]\n"
CANONICAL = "kernels:\n  matmul: cublaslt\n  attention: [flash, efficient]\n"
OTHER = "kernels:\n  matmul: cublas\nexecution:\n  precision: bf16\n"
BAD = "kernels:\n  matmul:\n    prefer: cublass\n"
SRC = str(Path(xpuruntime.__file__).resolve().parents[1])


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    out = {}
    for name, text in {"aliased": ALIASED, "canonical": CANONICAL, "other": OTHER, "bad": BAD}.items():
        out[name] = tmp_path / f"{name}.yaml"
        out[name].write_text(text)
    return out


def _run_module(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p)}
    return subprocess.run([sys.executable, "-m", "xpuruntime", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=120)


# ----------------------------------------------------------------------------- root


def test_version(runner: CliRunner):
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"xpuruntime {xpuruntime.__version__}" == "xpuruntime 0.1.0"


def test_help_lists_the_commands(runner: CliRunner):
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("devices", "fingerprint", "policy"):
        assert command in result.stdout


@pytest.mark.parametrize(
    "args",
    [["no-such-command"], ["policy", "no-such-command"], ["policy", "hash"], ["devices", "--no-such-option"],
     ["policy", "show", "--format", "toml", "--default"]],
)
def test_usage_errors_exit_2(runner: CliRunner, args: list[str]):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_help_lists_every_command_group_in_order(runner: CliRunner):
    result = runner.invoke(app, ["--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    commands = result.stdout.partition("Commands")[2].splitlines()[1:]
    listed = [line.split()[1] for line in commands if line.startswith("│ ") and line.split()[1][:1].isalpha()]
    assert listed == ["devices", "fingerprint", "run", "explain", "demo", "engines", "compare", "bench", "kernels", "tune", "report",
                      "policy", "lock"]
    assert "--install-completion" in result.stdout and "--show-completion" in result.stdout


def test_command_modules_are_found_by_listing_the_package():
    from xpuruntime import cli

    files = sorted(p.stem for p in Path(cli.__file__).parent.glob("*.py") if not p.stem.startswith("_"))
    found = cli.command_modules()
    assert sorted(m.__name__.rpartition(".")[2] for m in found) == files
    assert all(callable(m.register) for m in found)


def test_shell_completion_completes_commands_and_subcommands():
    for words, cword, expected in (("xpuruntime pol", "1", "policy"), ("xpuruntime lock ver", "2", "verify")):
        env = {**os.environ, "_XPURUNTIME_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": cword,
               "PYTHONPATH": os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p)}
        out = subprocess.run([sys.executable, "-m", "xpuruntime"], capture_output=True, text=True, env=env,
                             timeout=120)
        assert out.returncode == 0 and out.stdout.split() == [expected], out.stderr


def test_importing_the_cli_loads_no_engine():
    code = "import sys, xpuruntime.cli; print(sorted({'torch', 'openvino', 'tensorrt'} & set(sys.modules)))"
    env = {**os.environ, "PYTHONPATH": SRC}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- devices, fingerprint


def test_devices_json_lists_the_cpu(runner: CliRunner):
    result = runner.invoke(app, ["devices", "--json"], env={"FORCE_COLOR": "1"})
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    cpu = next(d for d in found if d["spec"] == "cpu")
    assert cpu["kind"] == "cpu" and {"name", "total_memory", "supports_bf16"} <= cpu.keys()


def test_devices_table_survives_a_narrow_terminal(runner: CliRunner):
    result = runner.invoke(app, ["devices"], env={"COLUMNS": "40"})
    assert result.exit_code == 0, result.output
    assert "cpu" in result.stdout and "\x1b[" not in result.stdout


def test_fingerprint_json_has_hash_and_libraries(runner: CliRunner):
    result = runner.invoke(app, ["fingerprint", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert len(data["hash"]) == 64
    assert data["libraries"]["onnxruntime"]
    assert any(d["spec"] == "cpu" for d in data["devices"])


def test_fingerprint_table_shows_hash_and_versions(runner: CliRunner):
    data = json.loads(runner.invoke(app, ["fingerprint", "--json"]).stdout)
    result = runner.invoke(app, ["fingerprint"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    for text in (data["hash"], data["python"], "onnxruntime", data["libraries"]["onnxruntime"], "device cpu"):
        assert text in result.stdout


# ----------------------------------------------------------------------------- policy validate


def test_validate_ok_prints_the_short_hash(runner: CliRunner, files: dict[str, Path]):
    result = runner.invoke(app, ["policy", "validate", str(files["aliased"]), str(files["other"])])
    assert result.exit_code == 0, result.output
    for name in ("aliased", "other"):
        assert f"{files[name]}: ok (hash {Policy.load(files[name]).short_hash})" in result.stdout
    assert result.stderr == ""


def test_validate_bad_file_names_file_and_field(runner: CliRunner, files: dict[str, Path]):
    result = runner.invoke(app, ["policy", "validate", str(files["aliased"]), str(files["bad"])])
    assert result.exit_code == 1
    assert f"{files['aliased']}: ok" in result.stdout
    assert result.stderr.startswith("error: ")
    for text in (str(files["bad"]), "kernels.matmul.prefer", "cublass", "did you mean 'cublas'?"):
        assert text in result.stderr
    assert "Traceback" not in result.output


def test_validate_missing_file(runner: CliRunner, tmp_path: Path):
    missing = tmp_path / "missing.yaml"
    result = runner.invoke(app, ["policy", "validate", str(missing)])
    assert result.exit_code == 1
    assert str(missing) in result.stderr and "not found" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize("name", ["policies.yaml", "policies"])
def test_validate_directory(runner: CliRunner, tmp_path: Path, name: str):
    folder = tmp_path / name
    folder.mkdir()
    result = runner.invoke(app, ["policy", "validate", str(folder)])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and str(folder) in result.stderr
    assert "Traceback" not in result.output


def test_validate_json(runner: CliRunner, files: dict[str, Path]):
    result = runner.invoke(app, ["policy", "validate", "--json", str(files["canonical"]), str(files["bad"])])
    assert result.exit_code == 1
    ok, bad = json.loads(result.stdout)
    assert ok == {"file": str(files["canonical"]), "ok": True, "hash": Policy.load(files["canonical"]).hash}
    assert bad["ok"] is False and bad["file"] == str(files["bad"])
    assert bad["error"]["field"] == "kernels.matmul.prefer" and bad["error"]["hint"] == "did you mean 'cublas'?"


# ----------------------------------------------------------------------------- policy show


def test_show_normalises_aliases(runner: CliRunner, files: dict[str, Path]):
    result = runner.invoke(app, ["policy", "show", str(files["aliased"])])
    assert result.exit_code == 0, result.output
    assert "matmul: cublaslt" in result.stdout and "cublasLt" not in result.stdout
    assert "attention: [flash, efficient]" in result.stdout
    assert result.stdout == Policy.load(files["aliased"]).dumps()


def test_show_json(runner: CliRunner, files: dict[str, Path]):
    result = runner.invoke(app, ["policy", "show", "--format", "json", str(files["aliased"])])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == Policy.load(files["canonical"]).to_dict()


def test_show_default(runner: CliRunner):
    result = runner.invoke(app, ["policy", "show", "--default"])
    assert result.exit_code == 0, result.output
    assert result.stdout == Policy().dumps()
    assert Policy.loads(result.stdout) == Policy()


@pytest.mark.parametrize("extra", [[], ["--default"]])
def test_show_needs_exactly_one_of_file_and_default(runner: CliRunner, files: dict[str, Path], extra: list[str]):
    args = ["policy", "show", *extra] + ([str(files["aliased"])] if extra else [])
    assert runner.invoke(app, args).exit_code == 2


# ----------------------------------------------------------------------------- policy diff


def test_diff_identical_after_normalisation(runner: CliRunner, files: dict[str, Path]):
    result = runner.invoke(app, ["policy", "diff", str(files["aliased"]), str(files["canonical"])])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"identical (hash {Policy.load(files['canonical']).short_hash})"


def test_diff_different_lists_the_paths(runner: CliRunner, files: dict[str, Path]):
    result = runner.invoke(app, ["policy", "diff", str(files["aliased"]), str(files["other"])])
    assert result.exit_code == 1
    for text in ("execution.precision", "fp32", "bf16", "kernels.matmul", "cublaslt", "cublas"):
        assert text in result.stdout
    assert result.stderr == ""


def test_diff_survives_a_narrow_terminal(runner: CliRunner, files: dict[str, Path]):
    result = runner.invoke(app, ["policy", "diff", str(files["aliased"]), str(files["other"])], env={"COLUMNS": "30"})
    assert result.exit_code == 1 and "bf16" in result.stdout


def test_diff_json(runner: CliRunner, files: dict[str, Path]):
    result = runner.invoke(app, ["policy", "diff", "--json", str(files["aliased"]), str(files["other"])])
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["identical"] is False
    assert data["a"] == {"file": str(files["aliased"]), "hash": Policy.load(files["aliased"]).hash}
    changes = {c["path"]: (c["a"], c["b"]) for c in data["changes"]}
    assert changes["execution.precision"] == ("fp32", "bf16")
    assert changes["kernels.attention"] == (["flash", "efficient"], None)


def test_diff_json_identical(runner: CliRunner, files: dict[str, Path]):
    result = runner.invoke(app, ["policy", "diff", "--json", str(files["aliased"]), str(files["canonical"])])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["identical"] is True and json.loads(result.stdout)["changes"] == []


def test_diff_with_a_bad_file_is_an_error(runner: CliRunner, files: dict[str, Path]):
    result = runner.invoke(app, ["policy", "diff", str(files["aliased"]), str(files["bad"])])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error: ") and "kernels.matmul.prefer" in result.stderr


# ----------------------------------------------------------------------------- policy schema, hash


def test_schema_is_a_valid_json_schema(runner: CliRunner, files: dict[str, Path]):
    result = runner.invoke(app, ["policy", "schema"])
    assert result.exit_code == 0, result.output
    schema = json.loads(result.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(Policy.load(files["aliased"]).to_dict())


def test_schema_output_writes_a_file(runner: CliRunner, tmp_path: Path):
    out = tmp_path / "policy.schema.json"
    result = runner.invoke(app, ["policy", "schema", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text()) == Policy.json_schema()
    assert str(out) in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy.schema.json"]  # no temporary left behind


@pytest.mark.parametrize("target", ["missing-folder/schema.json", "."])
def test_schema_output_to_a_bad_place_is_an_error(runner: CliRunner, tmp_path: Path, target: str):
    result = runner.invoke(app, ["policy", "schema", "--output", str(tmp_path / target)])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and "Traceback" not in result.output


def test_hash_is_the_policy_hash(runner: CliRunner, files: dict[str, Path]):
    result = runner.invoke(app, ["policy", "hash", str(files["aliased"])])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == Policy.load(files["aliased"]).hash == Policy.load(files["canonical"]).hash


def test_unexpected_exceptions_are_not_swallowed(runner: CliRunner, files: dict[str, Path], monkeypatch):
    def broken(path: object) -> Policy:
        raise RuntimeError("a bug")

    monkeypatch.setattr(Policy, "load", staticmethod(broken))
    result = runner.invoke(app, ["policy", "hash", str(files["aliased"])])
    assert isinstance(result.exception, RuntimeError)


# ----------------------------------------------------------------------------- a real process


def test_python_m_exit_codes_and_no_traceback(files: dict[str, Path]):
    ok = _run_module("policy", "validate", str(files["aliased"]))
    assert ok.returncode == 0 and ": ok (hash " in ok.stdout
    bad = _run_module("policy", "validate", str(files["bad"]))
    assert bad.returncode == 1
    assert bad.stderr.startswith("error: ") and str(files["bad"]) in bad.stderr
    assert "kernels.matmul.prefer" in bad.stderr and "Traceback" not in bad.stderr
    assert _run_module("policy", "diff", str(files["aliased"]), str(files["other"])).returncode == 1
    usage = _run_module("no-such-command")
    assert usage.returncode == 2 and "Traceback" not in usage.stderr
    assert _run_module("--version").stdout.strip() == "xpuruntime 0.1.0"
