"""The original design's spellings kept as aliases: KernelPolicy.to_json/from_json and auto_strategy."""

from __future__ import annotations

import json

import pytest

import xpuruntime as xrt


def test_to_json_has_the_original_shape_and_round_trips():
    kp = xrt.KernelPolicy(matmul="cublasLt", attention="flash_v2", auto_strategy="first_supported")
    data = json.loads(kp.to_json())
    assert data == {"preferences": {"matmul": "cublaslt", "attention": "flash"}, "auto_strategy": "first_supported"}
    back = xrt.KernelPolicy.from_json(kp.to_json())
    assert back == kp and back.auto_strategy == "first_supported"


def test_from_json_reads_a_kernels_section_too():
    kp = xrt.KernelPolicy.from_json('{"matmul": ["cublaslt", "cublas"]}')
    assert kp.get("matmul") == ("cublaslt", "cublas") and kp.auto_strategy is None


@pytest.mark.parametrize("text, where", [("not json", "kernels"), ("[1, 2]", "kernels"),
                                         ('{"preferences": {}, "strategy": "x"}', "kernels.strategy"),
                                         ('{"preferences": {"matmul": "fastest"}}', "kernels.matmul")])
def test_from_json_errors_name_the_field(text, where):
    with pytest.raises(xrt.PolicyError) as info:
        xrt.KernelPolicy.from_json(text)
    assert info.value.field == where


@pytest.mark.parametrize("spelling", ["best_performance", "BestPerformance", "best-performance"])
def test_auto_strategy_accepts_the_original_enum_names(spelling):
    assert xrt.KernelPolicy(auto_strategy=spelling).auto_strategy == "best_performance"


def test_unknown_auto_strategy_names_the_supported_ones():
    with pytest.raises(xrt.PolicyError) as info:
        xrt.KernelPolicy(auto_strategy="first_suported")
    assert "first_supported" in str(info.value)


def test_auto_strategy_is_not_part_of_the_policy_hash_but_survives_policy_and_merge():
    a, b = xrt.KernelPolicy(matmul="auto"), xrt.KernelPolicy(matmul="auto", auto_strategy="first_supported")
    assert a.hash == b.hash
    assert xrt.Policy(kernels=b).kernels.auto_strategy == "first_supported"
    assert a.merge(b).auto_strategy == "first_supported"
    assert b.merge(a).auto_strategy == "first_supported"


def test_the_tuner_takes_its_strategy_from_the_policy_unless_told():
    from xpuruntime.kernels.tuner import Tuner

    kp = xrt.KernelPolicy(matmul="auto", auto_strategy="first_supported")
    assert Tuner(policy=kp).strategy == "first_supported"
    assert Tuner(policy=kp, strategy="best_performance").strategy == "best_performance"
    assert Tuner().strategy == "best_performance"
