"""ExecutionPolicy: defaults, aliases, copies, contradictions and typed errors."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from xpuruntime import ExecutionPolicy, PolicyError


def test_defaults_are_explicit_and_reproducible():
    ep = ExecutionPolicy()
    assert ep.precision == "fp32" and ep.fallback == "warn" and ep.optimize_level == 3
    assert not ep.static_shape and not ep.deterministic and not ep.cuda_graphs
    assert repr(ep) == "ExecutionPolicy()"


def test_precision_aliases_and_int8_static_shape_from_the_model():
    assert ExecutionPolicy(precision="bfloat16").precision == "bf16"
    assert ExecutionPolicy(precision="HALF").precision == "fp16"
    ep = ExecutionPolicy(precision="int8", static_shape=True)
    assert ep.static_shape and ep.fixed_shapes is None


def test_with_precision_and_fallback_keep_every_other_field(tmp_path: Path):
    ep = ExecutionPolicy(precision="fp16", deterministic=True, num_threads=3, cache_dir=tmp_path,
                         fixed_shapes={"x": [1, 3, 224, 224]}, execution_timeout_ms=500)
    other = ep.with_precision("bf16").with_fallback("error")
    assert other.precision == "bf16" and other.fallback == "error"
    for name in ("deterministic", "num_threads", "cache_dir", "fixed_shapes", "static_shape", "execution_timeout_ms"):
        assert getattr(other, name) == getattr(ep, name), name
    assert ep.precision == "fp16"  # immutable
    assert other.cache_dir == str(tmp_path)


def test_fixed_shapes_imply_static_shape():
    ep = ExecutionPolicy(fixed_shapes={"x": (2, 8)})
    assert ep.static_shape and ep.fixed_shapes == {"x": (2, 8)}


def test_merge_takes_only_explicit_fields_of_other():
    base = ExecutionPolicy(precision="bf16", deterministic=True)
    overlay = ExecutionPolicy(fallback="error")
    merged = base.merge(overlay)
    assert (merged.precision, merged.deterministic, merged.fallback) == ("bf16", True, "error")
    assert base.merge({"precision": "fp16"}).precision == "fp16"


def test_hash_is_stable_and_ignores_alias_spelling():
    assert ExecutionPolicy(precision="bfloat16").hash == ExecutionPolicy(precision="bf16").hash
    assert ExecutionPolicy().hash == ExecutionPolicy(precision="fp32").hash
    assert ExecutionPolicy().hash != ExecutionPolicy(precision="tf32").hash


def test_frozen():
    policy = ExecutionPolicy()
    with pytest.raises(pydantic.ValidationError, match="Instance is frozen") as info:
        policy.precision = "fp16"  # type: ignore[misc]
    assert [(e["type"], e["loc"]) for e in info.value.errors()] == [("frozen_instance", ("precision",))]
    assert policy.precision == "fp32"


@pytest.mark.parametrize("kwargs,field,fix", [
    ({"precision": "fp61"}, "execution.precision", "fp16"),
    ({"precision": "bf15"}, "execution.precision", "bf16"),
    ({"precision": 16}, "execution.precision", None),
    ({"fallback": "eror"}, "execution.fallback", "error"),
    ({"optimize_level": 5}, "execution.optimize_level", None),
    ({"optimize_level": -1}, "execution.optimize_level", None),
    ({"optimize_level": "3"}, "execution.optimize_level", None),
    ({"num_threads": 0}, "execution.num_threads", None),
    ({"execution_timeout_ms": -1}, "execution.execution_timeout_ms", None),
    ({"compile_timeout_ms": 0}, "execution.compile_timeout_ms", None),
    ({"static_shape": "yes"}, "execution.static_shape", None),
    ({"deterministic": 1}, "execution.deterministic", None),
    ({"precison": "fp16"}, "execution.precison", "precision"),
    ({"fixed_shapes": {"x": [1, 0]}}, "execution.fixed_shapes", None),
    ({"fixed_shapes": {"x": [1, True]}}, "execution.fixed_shapes.x.1", None),
    ({"fixed_shapes": [1, 2]}, "execution.fixed_shapes", None),
    ({"cache_dir": ""}, "execution.cache_dir", None),
    ({"cuda_graphs": True}, "execution", "static_shape=True"),
    ({"static_shape": False, "fixed_shapes": {"x": [1]}}, "execution", "drop one"),
])
def test_bad_fields_raise_policy_error_with_path(kwargs, field, fix):
    with pytest.raises(PolicyError) as info:
        ExecutionPolicy(**kwargs)
    assert info.value.field == field
    assert "received" in str(info.value)
    if fix:
        assert fix in str(info.value)


def test_cuda_graphs_with_static_shapes_is_valid():
    assert ExecutionPolicy(cuda_graphs=True, static_shape=True).cuda_graphs
