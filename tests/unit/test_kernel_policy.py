"""KernelPolicy: aliases, lists, rules, editing, merging and errors a user would hit."""

from __future__ import annotations

import pytest

from xpuruntime import KernelPolicy, PolicyError
from xpuruntime.policies import vocabulary


def test_aliases_map_to_canonical_names_and_repr_reads_well():
    kp = KernelPolicy(matmul="cublasLt", attention="flash_v2")
    assert kp.get("matmul") == "cublaslt"
    assert kp.get("attention") == "flash"
    assert repr(kp) == "KernelPolicy(matmul=cublaslt, attention=flash)"


def test_op_aliases_are_canonicalised():
    kp = KernelPolicy(gemm="cublas", sdpa="mem_efficient")
    assert kp.to_dict() == {"matmul": "cublas", "attention": "efficient"}
    assert "gemm" in kp and "matmul" in kp and "conv" not in kp and "nonsense" not in kp


def test_ordered_list_keeps_order_and_auto_may_come_last():
    kp = KernelPolicy(attention=["flash", "efficient", "auto"])
    assert kp.get("attention") == ("flash", "efficient", "auto")
    assert kp.to_dict() == {"attention": ["flash", "efficient", "auto"]}


def test_set_is_chainable_and_remove_restores_default():
    kp = KernelPolicy().set("matmul", "cublas").set("conv", "exhaustive")
    assert kp.get("conv") == "cudnn_exhaustive"
    assert kp.remove("matmul").get("matmul") is None
    assert kp.resolve("matmul") == ("default",)
    assert len(kp) == 1


def test_rules_first_match_wins_and_fall_back_to_prefer():
    kp = KernelPolicy(matmul={
        "prefer": "cublas",
        "rules": [
            {"when": {"dtype": "bf16", "k": ">=4096"}, "use": "cublaslt"},
            {"when": {"dtype": ["fp16", "bf16"], "m": "1..64"}, "use": ["triton", "cublas"]},
            {"when": {"n": [768, 3072]}, "use": "nvmath"},
        ],
    })
    assert kp.resolve("matmul", "bfloat16", m=8, n=8, k=8192) == ("cublaslt",)
    assert kp.resolve("matmul", "bf16", m=8, k=1024) == ("triton", "cublas")
    assert kp.resolve("matmul", "fp16", m=65, k=1024) == ("cublas",)
    assert kp.resolve("matmul", "fp32", n=768) == ("nvmath",)
    assert kp.resolve("matmul") == ("cublas",)  # no dtype, no dims: only unconditional prefer applies
    assert kp.get("matmul") == "cublas"


def test_set_with_when_appends_rules_in_order():
    kp = KernelPolicy(matmul="cublas")
    kp.set("matmul", "cublaslt", when={"dtype": "bf16", "k": ">=4096"}).set("matmul", "triton", when={"m": "<16"})
    rules = kp.preference("matmul").rules
    assert [r.use for r in rules] == [("cublaslt",), ("triton",)]
    assert kp.to_dict()["matmul"]["rules"][1] == {"when": {"m": "<16"}, "use": "triton"}
    assert repr(kp) == "KernelPolicy(matmul=cublas (+2 rules))"


@pytest.mark.parametrize("cond,true_for,false_for", [
    (4096, [4096], [4095, 4097]),
    (">=4096", [4096, 9000], [4095]),
    (">4096", [4097], [4096]),
    ("<=64", [64, 0], [65]),
    ("<64", [63], [64]),
    ("!=1", [2], [1]),
    ("128..1024", [128, 500, 1024], [127, 1025]),
    ([1, 8, 32], [1, 8, 32], [2]),
])
def test_dim_conditions(cond, true_for, false_for):
    kp = KernelPolicy(matmul={"rules": [{"when": {"k": cond}, "use": "triton"}]})
    for k in true_for:
        assert kp.resolve("matmul", k=k) == ("triton",), k
    for k in false_for:
        assert kp.resolve("matmul", k=k) == ("default",), k


def test_merge_other_wins_per_op_and_originals_untouched():
    a = KernelPolicy(matmul="cublas", attention="flash")
    b = KernelPolicy(attention="math", layernorm="triton")
    merged = a.merge(b)
    assert merged.to_dict() == {"matmul": "cublas", "attention": "math", "layernorm": "triton"}
    assert a.get("attention") == "flash" and "layernorm" not in a


def test_hash_ignores_order_and_alias_spelling():
    a = KernelPolicy(matmul="cublasLt", attention="flash_v2")
    b = KernelPolicy(attention="flash", matmul="cublaslt")
    assert a == b and a.hash == b.hash
    assert a.hash != KernelPolicy(matmul="cublas", attention="flash").hash


def test_diff_names_the_op():
    a = KernelPolicy(matmul="cublas", attention="flash")
    b = KernelPolicy(matmul="cublaslt", conv="cudnn_default")
    assert [(c.path, c.old, c.new) for c in a.diff(b)] == [
        ("kernels.attention", "flash", None),
        ("kernels.conv", None, "cudnn_default"),
        ("kernels.matmul", "cublas", "cublaslt"),
    ]


@pytest.mark.parametrize("kwargs,field,fix", [
    ({"matmul": "cublsLt"}, "kernels.matmul", "cublaslt"),
    ({"atention": "flash"}, "kernels.atention", "attention"),
    ({"attention": "flsh"}, "kernels.attention", "flash"),
    ({"attention": ["flash", "flash"]}, "kernels.attention", None),
    ({"attention": []}, "kernels.attention", None),
    ({"attention": 3}, "kernels.attention", None),
    ({"matmul": ["auto", "cublas"]}, "kernels.matmul", "move 'auto'"),
    ({"matmul": {"prefered": "cublas"}}, "kernels.matmul.prefered", "prefer"),
    ({"matmul": {"rules": {"when": {}}}}, "kernels.matmul.rules", None),
    ({"matmul": {"rules": [{"when": {"kk": 5}, "use": "triton"}]}}, "kernels.matmul.rules[0].when.kk", "'k'"),
    ({"matmul": {"rules": [{"when": {"k": ">>5"}, "use": "triton"}]}}, "kernels.matmul.rules[0].when.k", None),
    ({"matmul": {"rules": [{"when": {"k": -1}, "use": "triton"}]}}, "kernels.matmul.rules[0].when.k", None),
    ({"matmul": {"rules": [{"when": {"k": True}, "use": "triton"}]}}, "kernels.matmul.rules[0].when.k", None),
    ({"matmul": {"rules": [{"when": {"k": "9..2"}, "use": "triton"}]}}, "kernels.matmul.rules[0].when.k", None),
    ({"matmul": {"rules": [{"when": {"dtype": "bf61"}, "use": "triton"}]}}, "kernels.matmul.rules[0].when.dtype",
     "bf16"),
    ({"matmul": {"rules": [{"when": {}, "use": "triton"}]}}, "kernels.matmul.rules[0].when", None),
    ({"matmul": {"rules": [{"when": {"k": 1}, "use": "triton", "extra": 1}]}}, "kernels.matmul.rules[0]", None),
    ({"matmul": {"rules": [{"when": {"k": 1}, "use": "flash"}]}}, "kernels.matmul.rules[0].use", None),
])
def test_bad_preferences_raise_policy_error_with_field_path(kwargs, field, fix):
    with pytest.raises(PolicyError) as info:
        KernelPolicy(**kwargs)
    assert info.value.field == field
    assert "expected" in str(info.value)
    if fix:
        assert fix in str(info.value)


def test_registry_accepts_new_kernels_and_refuses_reserved_names():
    vocabulary.register_kernel("matmul", "test_cutlass_gemm", aliases=("tcg",), description="test only")
    assert KernelPolicy(matmul="TCG").get("matmul") == "test_cutlass_gemm"
    assert "test_cutlass_gemm" in vocabulary.kernels_for("matmul")
    with pytest.raises(PolicyError, match="reserved"):
        vocabulary.register_kernel("matmul", "auto")
    with pytest.raises(PolicyError, match="invalid kernel name"):
        vocabulary.register_kernel("matmul", "has space")
    vocabulary.register_op("test_rmsnorm", dims=("rows", "hidden"))
    vocabulary.register_kernel("test_rmsnorm", "fused")
    assert KernelPolicy(test_rmsnorm="fused").resolve("test_rmsnorm", rows=3) == ("fused",)


def test_constructor_rejects_non_mapping():
    with pytest.raises(PolicyError, match="invalid kernel policy"):
        KernelPolicy(["matmul"])  # type: ignore[arg-type]
