"""Kernel params in policies: syntax, validation with field paths, round trips, hashes, schema."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest

from xpuruntime import KernelPolicy, Policy, PolicyError

ALGO = {"algorithm": {"id": 66, "tile": 18, "stages": [2, 3]}, "layout": ["row", "col"], "limit": 8}
YAML = """
kernels:
  matmul:
    prefer: [nvmath, default]
    params:
      nvmath_python: {limit: 16}
    rules:
      - when: {dtype: bf16, m: 8192, n: 768, k: 768}
        use: [nvmath, default]
        params:
          nvmath: {algorithm: {id: 66, tile: 18, stages: [2, 3]}, layout: [row, col], limit: 8}
      - when: {dtype: bf16}
        use: cublaslt
"""


def test_params_from_a_file_reach_resolution_per_rule_and_for_prefer():
    kp = Policy.loads(YAML).kernels
    assert kp.resolve("matmul", "bf16", m=8192, n=768, k=768) == ("nvmath", "default")
    assert kp.params("matmul", "bf16", m=8192, n=768, k=768)["nvmath"] == ALGO
    assert dict(kp.params("matmul", "bf16", m=1)) == {}  # the second rule has none
    assert kp.params("matmul", "fp32", m=1)["nvmath"] == {"limit": 16}  # prefer's (alias canonicalised)
    assert kp.params("attention") == {}


def test_set_with_params_and_round_trips_keep_the_hash(tmp_path: Path):
    kp = KernelPolicy().set("matmul", ["nvmath", "default"], when={"dtype": "bf16", "m": 8192}, params={"nvmath": ALGO})
    policy = Policy(kernels=kp)
    for suffix in (".yaml", ".json"):
        back = Policy.load(policy.save(tmp_path / f"p{suffix}"))
        assert back == policy and back.hash == policy.hash
    assert policy.to_dict()["kernels"]["matmul"]["rules"][0]["params"] == {"nvmath": ALGO}
    changed = KernelPolicy().set("matmul", ["nvmath", "default"], when={"dtype": "bf16", "m": 8192},
                                 params={"nvmath": {**ALGO, "limit": 4}})
    assert Policy(kernels=changed).hash != policy.hash
    assert [c.path for c in policy.diff(Policy(kernels=changed))] == ["kernels.matmul.rules"]


def test_policies_with_params_pickle_and_copy():
    import copy
    import pickle

    policy = Policy.loads(YAML)
    policy.kernels.resolve("matmul", "bf16", m=8192, n=768, k=768)  # fills the resolution cache
    for back in (pickle.loads(pickle.dumps(policy)), copy.deepcopy(policy)):
        assert back == policy and back.hash == policy.hash
        assert back.kernels.params("matmul", "bf16", m=8192, n=768, k=768)["nvmath"] == ALGO


def test_policies_without_params_hash_as_before():
    plain = {"matmul": {"prefer": "cublas", "rules": [{"when": {"k": ">=4096"}, "use": "cublaslt"}]}}
    kp = KernelPolicy(plain)
    assert kp.to_dict() == plain  # no params key appears
    assert kp.hash == "65033f08e6c944b5c06bee8e344a533fc499bb0ed2eecc88ab83ce0f0d928cdd"  # as before params existed
    assert KernelPolicy(matmul={"prefer": "cublas", "params": {}}).hash == KernelPolicy(matmul="cublas").hash


@pytest.mark.parametrize("prefs, field, words", [
    ({"matmul": {"prefer": "cublas", "params": {"nvmath": {}}}}, "kernels.matmul.params.nvmath",
     "does not use"),
    ({"matmul": {"prefer": ["nvmath", "default"], "params": {"default": {}}}}, "kernels.matmul.params.default",
     "does not use"),
    ({"matmul": {"prefer": "nvmath", "params": {"nvmth": {}}}}, "kernels.matmul.params.nvmth", "did you mean"),
    ({"matmul": {"prefer": "nvmath", "params": ["nvmath"]}}, "kernels.matmul.params", "mapping of kernel"),
    ({"matmul": {"prefer": "nvmath", "params": {"nvmath": 3}}}, "kernels.matmul.params.nvmath", "mapping"),
    ({"matmul": {"prefer": "nvmath", "params": {"nvmath": {"x": float("inf")}}}}, "kernels.matmul.params.nvmath.x",
     "finite"),
    ({"matmul": {"prefer": "nvmath", "params": {"nvmath": {"x": {1: 2}}}}}, "kernels.matmul.params.nvmath.x.1",
     "string"),
    ({"matmul": {"prefer": "nvmath", "params": {"nvmath": {"x": object()}}}}, "kernels.matmul.params.nvmath.x",
     "plain values"),
    ({"matmul": {"rules": [{"when": {"m": 1}, "use": "cublas", "param": {}}]}}, "kernels.matmul.rules[0]",
     "did you mean 'params'"),
    ({"matmul": {"rules": [{"when": {"m": 1}, "use": "triton", "params": {"nvmath": {}}}]}},
     "kernels.matmul.rules[0].params.nvmath", "does not use"),
])
def test_bad_params_name_the_field(prefs, field, words):
    with pytest.raises(PolicyError) as err:
        KernelPolicy(prefs)
    assert err.value.field == field and words in str(err.value)


def test_the_json_schema_accepts_params_and_refuses_unknown_keys():
    schema = Policy.json_schema()
    jsonschema.validate(Policy.loads(YAML).to_dict(), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"kernels": {"matmul": {"prefer": "nvmath", "parms": {}}}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"kernels": {"matmul": {"prefer": "nvmath", "params": {"nvmath": 3}}}}, schema)
