"""Policy files: round trips, hashing, diff/merge, schema, and every kind of bad file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xpuruntime import ExecutionPolicy, KernelPolicy, Policy, PolicyError
from xpuruntime.policies import MAX_POLICY_BYTES, vocabulary

EXAMPLE = """\
schema_version: 1
kernels:
  attention: [flash_v2, efficient]
  matmul:
    prefer: cublas
    rules:
      - when: {dtype: bf16, k: ">=4096"}
        use: cublasLt
execution:
  precision: bfloat16
  fallback: error
  deterministic: true
"""


@pytest.fixture
def example(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(EXAMPLE)
    return path


def test_load_normalises_aliases(example: Path):
    p = Policy.load(example)
    assert p.kernels.get("attention") == ("flash", "efficient")
    assert p.kernels.resolve("matmul", "bf16", k=4096) == ("cublaslt",)
    assert p.execution.precision == "bf16" and p.execution.fallback == "error"


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json"])
def test_save_load_round_trip_in_each_format(example: Path, tmp_path: Path, suffix: str):
    p = Policy.load(example)
    out = p.save(tmp_path / f"copy{suffix}")
    assert Policy.load(out) == p and Policy.load(out).hash == p.hash
    if suffix == ".json":
        assert json.loads(out.read_text())["schema_version"] == 1


def test_kernel_and_execution_policies_save_and_load_their_section(tmp_path: Path):
    kp = KernelPolicy(matmul="cublasLt")
    assert KernelPolicy.load(kp.save(tmp_path / "k.yaml")) == kp
    ep = ExecutionPolicy(precision="tf32")
    assert ExecutionPolicy.load(ep.save(tmp_path / "e.json")) == ep


def test_hash_same_for_key_order_and_alias_spelling():
    a = Policy.loads("kernels: {matmul: cublasLt, attention: flash_v2}\nexecution: {precision: bfloat16}")
    b = Policy.loads('{"execution": {"precision": "bf16"}, "kernels": {"attention": "flash", "matmul": "cublaslt"}}',
                     "json")
    assert a.hash == b.hash and a == b
    assert len(a.hash) == 64 and a.short_hash == a.hash[:12]


def test_hash_changes_with_content():
    assert Policy().hash != Policy(execution={"precision": "fp16"}).hash
    assert Policy().hash != Policy(kernels={"matmul": "cublas"}).hash


def test_diff_lists_changed_fields(example: Path):
    a = Policy.load(example)
    b = a.merge(Policy(kernels={"attention": "math"}, execution={"precision": "fp16"}))
    assert {c.path: (c.old, c.new) for c in a.diff(b)} == {
        "execution.precision": ("bf16", "fp16"),
        "kernels.attention": (["flash", "efficient"], "math"),
    }
    assert a.diff(a) == []


def test_merge_keeps_untouched_fields(example: Path):
    merged = Policy.load(example).merge(Policy(execution={"num_threads": 2}))
    assert merged.execution.deterministic and merged.execution.num_threads == 2
    assert merged.kernels.get("attention") == ("flash", "efficient")


def test_json_schema_validates_real_files(example: Path):
    jsonschema = pytest.importorskip("jsonschema")
    schema = Policy.json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    import yaml

    assert not list(validator.iter_errors(yaml.safe_load(EXAMPLE)))
    assert not list(validator.iter_errors(Policy.load(example).to_dict()))
    bad = {"kernels": {"matmul": "nope"}, "execution": {"precision": "fp61"}}
    assert len(list(validator.iter_errors(bad))) >= 2


def test_save_is_atomic_and_refuses_directories(tmp_path: Path):
    target = tmp_path / "p.yaml"
    Policy().save(target)
    before = target.read_text()
    with pytest.raises(PolicyError, match="directory"):
        Policy().save(tmp_path)
    assert target.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["p.yaml"]  # no temporary files left behind


def _write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


@pytest.mark.parametrize("name,content,field,words", [
    ("bad.yaml", "kernels: [unclosed", None, "malformed YAML at line 1"),
    ("bad.json", '{"kernels": ', None, "malformed JSON"),
    ("empty.yaml", "", None, "empty"),
    ("blank.json", "  \n", None, "empty"),
    ("list.yaml", "- 1\n- 2\n", None, "must be a mapping"),
    ("types.yaml", "execution: {num_threads: many}", "execution.num_threads", "integer"),
    ("unknown.yaml", "kernals: {matmul: cublas}", "kernals", "did you mean 'kernels'"),
    ("field.yaml", "execution: {precison: fp16}", "execution.precison", "did you mean 'precision'"),
    ("op.yaml", "kernels: {matmull: cublas}", "kernels.matmull", "did you mean 'matmul'"),
    ("kernel.yaml", "kernels: {attention: flsh}", "kernels.attention", "did you mean 'flash'"),
    ("precision.yaml", "execution: {precision: fp61}", "execution.precision", "did you mean 'fp16'"),
    ("timeout.yaml", "execution: {execution_timeout_ms: -5}", "execution.execution_timeout_ms", "greater than 0"),
    ("zero.yaml", "execution: {compile_timeout_ms: 0}", "execution.compile_timeout_ms", "greater than 0"),
    ("contra.yaml", "execution: {cuda_graphs: true}", "execution", "static_shape=True"),
    ("version.yaml", "schema_version: 99", "schema_version", "newer xpuruntime"),
    ("version0.yaml", "schema_version: zero", "schema_version", "positive integer"),
    ("alias.yaml", "a: &x {precision: fp16}\nexecution: *x", None, "aliases are not allowed"),
    ("dup.yaml", "execution: {precision: fp16}\nexecution: {precision: bf16}", None, "duplicate key"),
    ("tag.yaml", "execution: !!python/object/apply:os.system ['true']", None, "malformed YAML"),
    ("nan.json", '{"execution": {"num_threads": NaN}}', None, "NaN is not allowed"),
    ("binary.yaml", b"\xff\xfe\x00kernels", None, "not UTF-8"),
    ("policy.toml", "x = 1", None, ".yaml, .yml or .json"),
])
def test_bad_files_raise_policy_error_naming_file_and_field(tmp_path, name, content, field, words):
    path = _write(tmp_path, name, content)
    with pytest.raises(PolicyError) as info:
        Policy.load(path)
    err = info.value
    assert err.file == str(path) and str(path) in str(err)
    assert err.field == field
    assert words in str(err)


def test_missing_path_directory_and_oversized_file(tmp_path: Path):
    with pytest.raises(PolicyError, match="not found"):
        Policy.load(tmp_path / "missing.yaml")
    (tmp_path / "dir.yaml").mkdir()
    with pytest.raises(PolicyError, match="directory"):
        Policy.load(tmp_path / "dir.yaml")
    big = _write(tmp_path, "big.yaml", "# " + "x" * MAX_POLICY_BYTES)
    with pytest.raises(PolicyError, match="at most"):
        Policy.load(big)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_is_refused_without_blocking(tmp_path: Path):
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    with pytest.raises(PolicyError, match="regular file"):
        Policy.load(fifo)


def test_yaml_bomb_is_refused_quickly(tmp_path: Path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}]" for i in range(1, 12)]
    with pytest.raises(PolicyError, match="aliases"):
        Policy.load(_write(tmp_path, "bomb.yaml", "\n".join(lines)))


# -- property tests ----------------------------------------------------------------------
def _kernel_choices(op: str) -> list[str]:
    return [k for k in vocabulary.kernels_for(op, with_special=False) if not k.startswith("test_")]


@st.composite
def kernel_policies(draw: st.DrawFn) -> KernelPolicy:
    data = {}
    for op in draw(st.lists(st.sampled_from(["matmul", "attention", "conv", "layernorm"]), unique=True)):
        kernels = draw(st.lists(st.sampled_from(_kernel_choices(op)), min_size=1, max_size=3, unique=True))
        if draw(st.booleans()):
            dims = vocabulary.get_op(op).dims
            when = {draw(st.sampled_from(dims)): draw(st.one_of(
                st.integers(0, 10_000), st.sampled_from([">=4096", "<64", "!=1", "8..512"]),
                st.lists(st.integers(0, 64), min_size=1, max_size=3)))}
            if draw(st.booleans()):
                when["dtype"] = draw(st.sampled_from(["fp16", "bf16", "fp32", ["fp16", "bf16"]]))
            data[op] = {"prefer": kernels, "rules": [{"when": when, "use": kernels[0]}]}
        else:
            data[op] = kernels if len(kernels) > 1 else kernels[0]
    return KernelPolicy(data)


execution_policies = st.builds(
    lambda prec, fb, det, lvl, thr, fixed, tmo: ExecutionPolicy(
        precision=prec, fallback=fb, deterministic=det, optimize_level=lvl, num_threads=thr,
        fixed_shapes=fixed, execution_timeout_ms=tmo),
    st.sampled_from(["fp32", "tf32", "fp16", "bf16", "int8", "bfloat16", "half"]),
    st.sampled_from(["error", "warn", "allow"]),
    st.booleans(), st.integers(0, 3), st.none() | st.integers(1, 64),
    st.none() | st.dictionaries(st.text("abcxyz_", min_size=1, max_size=6),
                                st.lists(st.integers(1, 512), min_size=1, max_size=4).map(tuple), max_size=3),
    st.none() | st.integers(1, 100_000),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kernels=kernel_policies(), execution=execution_policies, suffix=st.sampled_from([".yaml", ".json"]))
def test_save_then_load_gives_equal_policy_with_same_hash(tmp_path, kernels, execution, suffix):
    policy = Policy(kernels, execution)
    loaded = Policy.load(policy.save(tmp_path / f"p{suffix}"))
    assert loaded == policy
    assert loaded.hash == policy.hash
    assert Policy.from_dict(policy.to_dict()).hash == policy.hash
