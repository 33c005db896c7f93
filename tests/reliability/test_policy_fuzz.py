"""Policy loader, fuzzed: any document, file or mapping gives a valid policy or a PolicyError, nothing else.

A valid policy must also survive what users do with one: hash it, write it as YAML and JSON, read it back
unchanged. Documents mix the real vocabulary (so validation goes deep) with random keys, types, unicode,
huge integers, NaN/inf and nesting.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from xpuruntime import ExecutionPolicy, KernelPolicy, Policy
from xpuruntime.errors import PolicyError
from xpuruntime.policies import vocabulary as vocab

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

EXAMPLES = int(os.environ.get("XPURUNTIME_FUZZ_EXAMPLES", "300"))  # per property; README "Reliability" quotes it
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

OPS = [*vocab.list_ops(), "gemm", "linear", "sdpa", "Matmul"]
KERNELS = sorted({k for op in vocab.list_ops() for k in vocab.kernels_for(op)} | {"cublasLt", "flash_v2", "nope"})
FIELDS = [*ExecutionPolicy.model_fields, "precison", "timeout"]
WORDS = [*OPS, *KERNELS, *FIELDS, "prefer", "rules", "when", "use", "params", "algorithm", "dtype", "m", "n", "k",
         "batch", "fp16", "bf16", "float16", "error", "warn", "allow", "x", ">=4096", "1..64", "<64", "!=1", "64..1",
         "schema_version", "kernels", "execution"]

huge_ints = st.sampled_from([2**63 - 1, 2**63, -(2**63), 2**64 + 1, 10**30, 10**4000, -(10**4000)])  # repr-able
scalars = (st.none() | st.booleans() | st.integers(-5, 5000) | huge_ints | st.floats(allow_nan=True)
           | st.text(max_size=12) | st.sampled_from(WORDS))
keys = st.sampled_from(WORDS) | st.text(max_size=8) | st.integers(-3, 3) | st.booleans() | st.none()
plain = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
                     max_leaves=24)

dim_cond = st.integers(-2, 9000) | huge_ints | st.sampled_from([">=4096", "<64", "!=1", "1..64", "64..1", "==8",
                                                              "9" * 30, "0" * 40 + "7", "x", ""]) | plain
rule = (st.fixed_dictionaries({"when": st.dictionaries(st.sampled_from(["dtype", "m", "n", "k", "batch", "q", "K"]),
                                                      dim_cond | st.sampled_from(["fp16", ["bf16", "fp16"], "f64"]),
                                                      max_size=3),
                              "use": st.sampled_from(KERNELS) | st.lists(st.sampled_from(KERNELS), max_size=3)},
                             optional={"params": st.dictionaries(st.sampled_from(KERNELS), plain, max_size=2) | plain})
        | plain)
preference = (st.sampled_from(KERNELS) | st.lists(st.sampled_from(KERNELS), max_size=3)
              | st.fixed_dictionaries({}, optional={"prefer": st.sampled_from(KERNELS) | plain,
                                                    "rules": st.lists(rule, max_size=3) | plain,
                                                    "params": st.dictionaries(st.sampled_from(KERNELS), plain,
                                                                              max_size=2) | plain}) | plain)
kernels = st.dictionaries(st.sampled_from(OPS) | keys, preference, max_size=4) | plain
shape = st.lists(st.integers(-1, 64) | huge_ints | st.floats(allow_nan=True) | st.text(max_size=2), max_size=4)
field_value = {
    "precision": st.sampled_from(["fp32", "tf32", "fp16", "bfloat16", "int8", "fp61", " FP16 "]),
    "fallback": st.sampled_from(["error", "warn", "allow", "Error ", "err"]),
    "fixed_shapes": st.dictionaries(st.text(max_size=6) | keys, shape | plain, max_size=2),
    "optimize_level": st.integers(-1, 4) | st.floats(allow_nan=True) | huge_ints,
    "num_threads": st.integers(-1, 5000) | st.floats() | huge_ints,
    "cache_dir": st.text(max_size=16) | st.sampled_from(["~/.cache/x", "a\x00b", "/tmp/\udc80", ""]),
    "compile_timeout_ms": st.integers(-1, 10**9) | st.floats(allow_nan=True, allow_infinity=True) | huge_ints,
    "execution_timeout_ms": st.integers(-1, 10**9) | st.floats(allow_nan=True, allow_infinity=True) | huge_ints,
}
execution = st.fixed_dictionaries({}, optional={name: strategy | plain for name, strategy in field_value.items()}) \
    | st.dictionaries(st.sampled_from(FIELDS) | keys, plain, max_size=3) | plain
documents = st.fixed_dictionaries({}, optional={"schema_version": st.sampled_from([1, 2, 0, "1", 1.0]) | plain,
                                                "kernels": kernels, "execution": execution}) | plain


def assert_usable(policy: Policy) -> None:
    """What a user does with a valid policy works: hash it, print it, write it both ways, read it back equal."""
    assert len(policy.hash) == 64 and repr(policy)
    for fmt in ("yaml", "json"):
        again = Policy.loads(policy.dumps(fmt), fmt)
        assert again == policy and again.hash == policy.hash


def outcome(call: Any) -> Policy | None:
    try:
        policy = call()
    except PolicyError as exc:
        assert str(exc)  # the message itself must build
        return None
    assert isinstance(policy, Policy)
    assert_usable(policy)
    return policy


@FUZZ
@given(documents)
def test_any_mapping_gives_a_policy_or_a_policy_error(data: Any) -> None:
    outcome(lambda: Policy.from_dict(data))


@FUZZ
@given(documents, st.sampled_from(["yaml", "json"]))
def test_any_document_text_gives_a_policy_or_a_policy_error(data: Any, fmt: str) -> None:
    try:
        text = json.dumps(data, allow_nan=True) if fmt == "json" else yaml.safe_dump(data, allow_unicode=True)
    except (TypeError, ValueError, yaml.YAMLError):  # a key JSON cannot write, say: not a document
        return
    outcome(lambda: Policy.loads(text, fmt))


@FUZZ
@given(st.text(max_size=200) | st.sampled_from(["{", "- [", "a: &x 1\nb: *x", "!!python/object:os.system x",
                                                 "a: 1\na: 2", "kernels: !!set {a, b}", "? [a]\n: 1", "%YAML 9\n---",
                                                 "NaN", '{"execution": {"num_threads": NaN}}', "1e999", "\ufeff{}"]),
       st.sampled_from(["yaml", "json"]))
def test_any_text_gives_a_policy_or_a_policy_error(text: str, fmt: str) -> None:
    outcome(lambda: Policy.loads(text, fmt))


def _as_yaml_bytes(data: Any) -> bytes:
    try:
        return yaml.safe_dump(data, allow_unicode=True).encode("utf-8", "replace")
    except (yaml.YAMLError, TypeError, ValueError):
        return b"{"


@FUZZ
@given(st.binary(max_size=300) | documents.map(_as_yaml_bytes),
       st.sampled_from([".yaml", ".yml", ".json", ".txt", ""]))
def test_any_file_gives_a_policy_or_a_policy_error(tmp_path_factory: Any, content: bytes, suffix: str) -> None:
    path = tmp_path_factory.mktemp("p") / f"policy{suffix}"
    path.write_bytes(content)
    outcome(lambda: Policy.load(path))


@FUZZ
@given(kernels, execution)
def test_the_halves_give_policies_or_policy_errors(kernel_data: Any, execution_data: Any) -> None:
    for call in (lambda: Policy(kernels=KernelPolicy(kernel_data)),
                 lambda: Policy(execution=ExecutionPolicy.from_dict(execution_data)),
                 lambda: Policy(execution=ExecutionPolicy(**execution_data)) if isinstance(execution_data, dict)
                 and all(isinstance(k, str) for k in execution_data) else Policy()):
        outcome(call)




# -- what fuzzing found, pinned --------------------------------------------------------------
def _nested(depth: int, leaf: Any, wrap: Any) -> Any:
    for _ in range(depth):
        leaf = wrap(leaf)
    return leaf


@pytest.mark.parametrize("make", [
    lambda: Policy.loads("[" * 100_000 + "]" * 100_000, "json"),
    lambda: Policy.loads('{"a":' * 100_000 + "1" + "}" * 100_000, "json"),
    lambda: Policy.loads("[" * 100_000 + "]" * 100_000, "yaml"),
    lambda: Policy.from_dict({"kernels": {"matmul": _nested(100_000, [], lambda x: [x])}}),
    lambda: Policy.from_dict({"execution": {"fixed_shapes": _nested(100_000, {}, lambda x: {"x": x})}}),
    lambda: ExecutionPolicy(num_threads=_nested(100_000, 1, lambda x: [x])),
    lambda: KernelPolicy(matmul=_nested(100_000, "cublas", lambda x: {"prefer": x})),
], ids=["json-lists", "json-objects", "yaml", "from_dict-lists", "from_dict-maps", "execution", "kernels"])
def test_deep_nesting_is_a_policy_error_not_a_recursion_error(make: Any) -> None:
    with pytest.raises(PolicyError, match="deep|nest"):
        make()


@pytest.mark.parametrize("data", [
    {"schema_version": 10**5000},
    {"execution": {"num_threads": 10**5000}},
    {"execution": {"fixed_shapes": {"x": [10**5000]}}},
    {"execution": {"fixed_shapes": {"x": [2**63]}}},
    {"kernels": {"matmul": {"rules": [{"when": {"k": 10**5000}, "use": "cublas"}]}}},
    {"kernels": {"matmul": {"rules": [{"when": {"k": "<" + "9" * 5000}, "use": "cublas"}]}}},
    {"kernels": {"matmul": {"rules": [{"when": {"k": [1, 2**64]}, "use": "cublas"}]}}},
    {10**5000: 1},
])
def test_huge_integers_are_policy_errors_with_short_messages(data: Any) -> None:
    with pytest.raises(PolicyError) as info:
        Policy.from_dict(data)
    assert len(str(info.value)) < 1000


def test_largest_int64_dims_are_valid_and_round_trip() -> None:
    policy = Policy.from_dict({"kernels": {"matmul": {"rules": [{"when": {"k": f"<={2**63 - 1}"}, "use": "cublas"}]}},
                               "execution": {"fixed_shapes": {"x": [2**63 - 1]}}})
    assert_usable(policy)


def test_a_nul_in_cache_dir_is_a_policy_error() -> None:
    with pytest.raises(PolicyError, match="NUL"):
        Policy.from_dict({"execution": {"cache_dir": "/tmp/a\x00b"}})


def test_mixed_type_keys_in_a_rule_are_a_policy_error() -> None:
    with pytest.raises(PolicyError, match="invalid rule"):
        Policy.from_dict({"kernels": {"matmul": {"rules": [{"when": {"k": 1}, "use": "cublas", 1: 2, "x": 3}]}}})


def test_a_fifo_or_folder_in_place_of_a_policy_file_is_a_policy_error(tmp_path: Path) -> None:
    fifo = tmp_path / "policy.yaml"
    os.mkfifo(fifo)
    with pytest.raises(PolicyError, match="regular file"):
        Policy.load(fifo)
    (tmp_path / "dir.yaml").mkdir()
    with pytest.raises(PolicyError, match="directory"):
        Policy.load(tmp_path / "dir.yaml")
