"""The policy's communication section: validation, files, hashes, schema; NCCL in the fingerprint."""

from __future__ import annotations

import dataclasses

import pytest

import xpuruntime as xrt
from xpuruntime.errors import PolicyError
from xpuruntime.policies.lock import compare_fingerprints
from xpuruntime.policies._common import content_hash
from xpuruntime.policies.communication import NCCL_SETTINGS, CommunicationPolicy
from xpuruntime.runtime.fingerprint import Fingerprint, fingerprint

SECTION = {"backend": "NCCL", "timeout_s": 600, "nccl": {"NCCL_ALGO": "ring,tree", "proto": "^ll128",
                                                         "nvls_enable": 0, "socket_ifname": "=eth0"},
           "ddp": {"bucket_cap_mb": 100, "gradient_as_bucket_view": True}, "fsdp": {"reshard_after_forward": 2,
                                                                                   "prefetch": 2},
           "reduce_precision": "BF16"}


def test_a_section_is_normalised_to_nccls_own_spellings():
    comm = CommunicationPolicy(**SECTION)
    assert comm.backend == "nccl" and comm.reduce_precision == "bf16"
    assert comm.nccl == {"algo": "Ring,Tree", "nvls_enable": False, "proto": "^LL128", "socket_ifname": "=eth0"}
    assert comm.ddp.bucket_cap_mb == 100 and comm.fsdp.reshard_after_forward == 2


def test_policies_without_the_section_keep_their_hash_and_their_file():
    policy = xrt.Policy(kernels={"attention": "flash"}, execution={"precision": "bf16"})
    old = content_hash({"schema_version": 1, "kernels": policy.kernels.to_dict(),
                        "execution": policy.execution.to_dict(exclude_defaults=True)})
    assert policy.hash == old and "communication" not in policy.to_dict()
    assert xrt.Policy(kernels={"attention": "flash"}, execution={"precision": "bf16"}, communication={}).hash == old


def test_the_section_round_trips_through_yaml_and_json_and_changes_the_hash(tmp_path):
    policy = xrt.Policy(execution={"precision": "bf16"}, communication=SECTION)
    for name in ("p.yaml", "p.json"):
        back = xrt.Policy.load(policy.save(tmp_path / name))
        assert back == policy and back.hash == policy.hash
    assert policy.hash != xrt.Policy(execution={"precision": "bf16"}).hash
    assert "communication.ddp.bucket_cap_mb: None -> 100" in [str(c) for c in xrt.Policy().diff(policy)]


def test_merge_lets_the_overlay_win_variable_by_variable():
    base = xrt.Policy(communication={"nccl": {"algo": "Ring", "proto": "Simple"}, "ddp": {"bucket_cap_mb": 25}})
    top = xrt.Policy(communication={"nccl": {"algo": "Tree"}, "reduce_precision": "fp16"})
    merged = base.merge(top).communication
    assert merged.nccl == {"algo": "Tree", "proto": "Simple"}
    assert merged.ddp.bucket_cap_mb == 25 and merged.reduce_precision == "fp16"


@pytest.mark.parametrize(("section", "field", "words"), [
    ({"nccl": {"algoo": "Ring"}}, "communication.nccl.algoo", "did you mean 'algo'"),
    ({"nccl": {"algo": "Rnig"}}, "communication.nccl.algo", "did you mean 'Ring'"),
    ({"nccl": {"buffsize": -1}}, "communication.nccl.buffsize", "non-negative integer"),
    ({"nccl": {"nvls_enable": "yes"}}, "communication.nccl.nvls_enable", "true or false"),
    ({"nccl": {"socket_ifname": "eth0\nNCCL_DEBUG=INFO"}}, "communication.nccl.socket_ifname", "no quotes"),
    ({"fsdp": {"reshard_after_forward": 1}}, "communication.fsdp.reshard_after_forward", "group size"),
    ({"backend": "mpi"}, "communication.backend", "nccl"),
    ({"bucket_cap_mb": 5}, "communication.bucket_cap_mb", "one of backend"),
])
def test_bad_settings_name_the_field_and_the_fix(section, field, words):
    with pytest.raises(PolicyError) as info:
        xrt.Policy.from_dict({"communication": section})
    assert info.value.field == field and words in str(info.value)


def test_last_bucket_reduction_is_hashed_and_saved_only_when_asked_for(tmp_path):
    bf16 = xrt.Policy(communication={"reduce_precision": "bf16"})
    assert xrt.Policy(communication={"reduce_precision": "bf16", "reduce_precision_buckets": "all"}).hash == bf16.hash
    last = xrt.Policy(communication={"reduce_precision": "bf16", "reduce_precision_buckets": "Last"})
    assert last.communication.reduce_precision_buckets == "last" and last.hash != bf16.hash
    assert "reduce_precision_buckets" not in bf16.to_dict()["communication"]
    assert xrt.Policy.load(last.save(tmp_path / "p.yaml")) == last


@pytest.mark.parametrize(("section", "words"), [
    ({"reduce_precision_buckets": "last"}, "received: reduce_precision: None"),
    ({"reduce_precision": "fp32", "reduce_precision_buckets": "last"}, "received: reduce_precision: fp32"),
    ({"reduce_precision": "bf16", "reduce_precision_buckets": "first"}, "'all' or 'last'"),
])
def test_last_bucket_reduction_needs_a_reduced_precision(section, words):
    with pytest.raises(PolicyError) as info:
        xrt.Policy.from_dict({"communication": section})
    assert info.value.field == "communication.reduce_precision_buckets" and words in str(info.value)


def test_the_json_schema_describes_the_section():
    jsonschema = pytest.importorskip("jsonschema")
    schema = xrt.Policy.json_schema()
    jsonschema.Draft202012Validator(schema).validate(xrt.Policy(communication=SECTION).to_dict())
    bad = {"communication": {"nccl": {"NOT_A_VARIABLE": 1}}}
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(bad))
    assert set(NCCL_SETTINGS) <= set(schema["properties"]["communication"]["properties"]["nccl"]["propertyNames"]
                                     ["enum"])


def test_nccl_joins_the_fingerprint_without_changing_older_hashes():
    fp = dataclasses.replace(fingerprint(), nccl=None)
    old = {k: v for k, v in fp.to_dict().items() if k not in ("nccl", "hash")}
    assert Fingerprint.from_dict(old).hash == fp.hash  # a fingerprint written before the field still loads
    with_nccl = dataclasses.replace(fp, nccl="2.27.7")
    assert with_nccl.hash != fp.hash
    assert Fingerprint.from_dict(with_nccl.to_dict()).nccl == "2.27.7"


def test_an_nccl_change_is_drift_and_a_python_change_a_note():
    fp = dataclasses.replace(fingerprint(), nccl="2.27.7")
    drift = compare_fingerprints(fp, dataclasses.replace(fp, nccl="2.26.2", python="0.0.1"))
    assert [c.path for c in drift.changes] == ["nccl"] and [c.path for c in drift.notes] == ["python"]
