"""Policy normalisation: one meaning, one representation, one hash.

Op aliases that name one op twice are refused like duplicate keys; ``fixed_shapes: {}`` and ``null`` are one
policy; ``diff`` is never empty for two different hashes; YAML is read by the 1.2 core schema (``1:30`` is not
90) with core tags only (no ``!!binary`` smuggling a NUL into ``cache_dir``). Every hash that existed before
these rules is pinned unchanged, except the ``fixed_shapes: {}`` case.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from xpuruntime import ExecutionPolicy, KernelPolicy, Policy
from xpuruntime.errors import PolicyError

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from test_policy_fuzz import documents  # noqa: E402  (the policy fuzzer's document strategy)

EXAMPLES = int(os.environ.get("XPURUNTIME_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- op aliases ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kernels", [
    {"matmul": "cublas", "MatMul": "triton"},
    {"matmul": "cublas", "gemm": "triton"},
    {"gemm": "cublas", "linear": "cublas"},
    {"attention": "flash", "sdpa": "math"},
    {" matmul": "cublas", "matmul": "cublas"},
])
def test_two_spellings_of_one_op_are_refused(kernels: dict[str, Any]) -> None:
    first, second = list(kernels)
    with pytest.raises(PolicyError, match="is given twice") as err:
        Policy.from_dict({"kernels": kernels})
    assert err.value.field == f"kernels.{second}" and repr(first) in str(err.value)
    text = "kernels:\n" + "".join(f"  '{op}': {kernel}\n" for op, kernel in kernels.items())
    with pytest.raises(PolicyError, match="is given twice"):
        Policy.loads(text)


def test_a_keyword_cannot_override_a_mapping_entry_silently() -> None:
    with pytest.raises(PolicyError, match="is given twice"):
        KernelPolicy({"gemm": "cublas"}, matmul="triton")
    assert KernelPolicy({"gemm": "cublas"}, attention="flash").get("matmul") == "cublas"


# -- two representations, one hash ---------------------------------------------------------------------------
def test_empty_fixed_shapes_and_null_are_one_policy() -> None:
    a, b = Policy.loads("execution: {fixed_shapes: {}}"), Policy.loads("execution: {fixed_shapes: null}")
    assert a.hash == b.hash == Policy().hash and a == b and a.diff(b) == []
    assert ExecutionPolicy(fixed_shapes={}).fixed_shapes is None


@FUZZ
@given(documents, documents)
def test_diff_is_empty_exactly_when_the_hashes_agree(a: Any, b: Any) -> None:
    try:
        pa, pb = Policy.from_dict(a), Policy.from_dict(b)
    except PolicyError:
        return
    assert (pa.hash == pb.hash) == (pa.diff(pb) == []) == (pa == pb)


@FUZZ
@given(documents)
def test_a_policy_and_its_normalised_form_hash_alike(data: Any) -> None:
    try:
        policy = Policy.from_dict(data)
    except PolicyError:
        return
    again = Policy.from_dict(policy.to_dict())
    assert again.hash == policy.hash and again.diff(policy) == []


#: hashes written by xpuruntime before these rules (commit 14da777); none may change
PINNED = [
    ({}, "b09214914a5d0163ecab797e9287bcbf6af499a148f86bfb14de1a4ae16eeea6"),
    ({"kernels": {"matmul": "cublasLt", "attention": ["flash_v2", "efficient"]}},
     "582dd9fe0b7131f8ef8e0a300bc8226c5603114652737b327c0c7ba72ccc3a38"),
    ({"kernels": {"gemm": "cublas", "sdpa": "math", "conv": "cudnn_exhaustive", "layernorm": "triton"}},
     "ce0a2bd7eaf9d2f3a5fd2b9eee367c0a652776092cd277feb3a5f863738cbc54"),
    ({"kernels": {"matmul": {"prefer": "default", "rules": [{"when": {"dtype": "bf16", "k": ">=4096"},
                                                             "use": ["cublaslt", "default"]}]}}},
     "9f879e19c63e8c296d62948dbaf8e418ca12fbc32be01d4eba9864e4689baf21"),
    ({"execution": {"precision": "bf16", "fallback": "error", "deterministic": True}},
     "e2576aa80faeeac125c335502e3632c42b6ba9f729baf7d8c8336e2234704814"),
    ({"execution": {"fixed_shapes": {"x": [1, 4]}, "static_shape": True, "cuda_graphs": True}},
     "b6f3f14b776eaa5cc599b74ba0b0d672c94aeee7bcc8582add54d72327301953"),
    ({"execution": {"num_threads": 4, "cache_dir": "~/.cache/xpuruntime", "optimize_level": 1,
                    "compile_timeout_ms": 1000, "execution_timeout_ms": 50}},
     "7cf7ea8cd5490e701b4593663597130dfe5916601684e28d6788b5a8fa03765d"),
    ({"schema_version": 1, "kernels": {}, "execution": {"fixed_shapes": None, "static_shape": True}},
     "698afe4a8ac31edb06a9aa575a6a923b245c1f0a0b6c2f717a9b76ab7a07b4dd"),
]


@pytest.mark.parametrize("data, expected", PINNED)
def test_hashes_from_before_are_unchanged(data: dict[str, Any], expected: str) -> None:
    policy = Policy.from_dict(data)
    assert policy.hash == expected
    for fmt in ("yaml", "json"):
        assert Policy.loads(policy.dumps(fmt), fmt).hash == expected


# -- YAML 1.2 core, core tags only ---------------------------------------------------------------------------
@pytest.mark.parametrize("text, field, value", [
    ("execution: {num_threads: 010}", "num_threads", 10),  # YAML 1.1: octal 8
    ("execution: {num_threads: 0o10}", "num_threads", 8),
    ("execution: {num_threads: 0x10}", "num_threads", 16),
    ("execution: {num_threads: +4}", "num_threads", 4),
    ("execution: {cache_dir: 2024-01-01}", "cache_dir", "2024-01-01"),  # YAML 1.1: a date
    ("execution: {cache_dir: 1:30}", "cache_dir", "1:30"),  # YAML 1.1: 90
    ("execution: {cache_dir: on}", "cache_dir", "on"),  # YAML 1.1: True
    ("execution: {cache_dir: 1_000}", "cache_dir", "1_000"),
    ("execution: {deterministic: True}", "deterministic", True),
    ("execution: {deterministic: FALSE}", "deterministic", False),
    ("execution: {num_threads: ~}", "num_threads", None),
])
def test_plain_scalars_follow_the_yaml_1_2_core_schema(text: str, field: str, value: Any) -> None:
    assert getattr(Policy.loads(text).execution, field) == value


@pytest.mark.parametrize("text, message", [
    ("execution: {num_threads: 1:30}", "YAML 1.2"),
    ("execution: {num_threads: 1_000}", "YAML 1.2"),
    ("execution: {deterministic: yes}", "YAML 1.2"),
    ("execution: {deterministic: on}", "YAML 1.2"),
    ("execution: {num_threads: !!int 1:30}", "not a YAML 1.2 integer"),
    ("execution: {deterministic: !!bool yes}", "not a YAML 1.2 boolean"),
    ("execution: {cache_dir: !!binary L3RtcC9hAGI=}", "!!binary is not allowed"),  # '/tmp/a\0b'
    ("execution: {cache_dir: !!timestamp 2024-01-01}", "!!timestamp is not allowed"),
    ("kernels: !!set {matmul}", "!!set is not allowed"),
    ("kernels: !!omap [{matmul: cublas}]", "!!omap is not allowed"),
    ("!!merge <<: {kernels: {}}", "!!merge is not allowed"),
    ("execution: !!python/object:os.system {}", "python/object"),
])
def test_yaml_1_1_habits_and_other_tags_are_policy_errors(text: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        Policy.loads(text)


@pytest.mark.parametrize("value", [b"/tmp/a\x00b", b"/tmp/cache", bytearray(b"/tmp")])
def test_bytes_are_not_policy_data(value: Any) -> None:
    with pytest.raises(PolicyError, match="bytes"):
        Policy.from_dict({"execution": {"cache_dir": value}})
    with pytest.raises(PolicyError, match="bytes"):
        ExecutionPolicy(cache_dir=value)


@FUZZ
@given(st.text(max_size=12).filter(lambda t: "\x00" not in t and t.strip() == t and t))
def test_any_text_cache_dir_round_trips_through_yaml(text: str) -> None:
    """Strings that either YAML version would read as another type (``0o17``, ``1:30``, ``yes``) are quoted."""
    try:
        policy = Policy(execution={"cache_dir": text})
    except PolicyError:
        return
    assert Policy.loads(policy.dumps("yaml")).execution.cache_dir == text
