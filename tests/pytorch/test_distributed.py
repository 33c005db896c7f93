"""One policy on two ranks: two gloo processes under torchrun agree, both raise on a mismatch, receipts gather.

One ``torchrun --standalone --nproc_per_node 2`` launch runs every scenario of ``_dist_worker.py`` (about 10 s
on two cores); each test reads what the ranks wrote.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import xpuruntime as xrt
from xpuruntime.errors import InputError, PolicyError
from xpuruntime.pytorch import distributed as xdist

LAUNCH = importlib.util.spec_from_file_location("_dist_launch", Path(__file__).with_name("_dist_launch.py"))
launch = importlib.util.module_from_spec(LAUNCH)
LAUNCH.loader.exec_module(launch)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    return launch.launch(tmp_path_factory.mktemp("ranks"))


def test_ranks_agree_on_the_policy_hash_and_the_nccl_variables_are_set_before_init(ranks):
    policy = xrt.Policy(execution={"precision": "fp32", "fallback": "warn"},
                        communication={"backend": "gloo", "timeout_s": 120,
                                       "nccl": {"algo": "Ring", "proto": "Simple", "nvls_enable": False}})
    for seen in ranks:
        assert seen["init"]["agreed"] == policy.hash == seen["init"]["policy_hash"]
        assert seen["init"]["world"] == 2 and seen["init"]["backend"] == "gloo"
        assert seen["init"]["env"] == {"NCCL_ALGO": "Ring", "NCCL_PROTO": "Simple", "NCCL_NVLS_ENABLE": "0"}


def test_both_ranks_raise_on_a_policy_mismatch_naming_the_ranks(ranks):
    messages = [seen["policy_mismatch"]["raised"] for seen in ranks]
    assert all(messages) and messages[0] == messages[1]
    assert "policy: rank 0 holds" in messages[0] and "policy: rank 1 holds" in messages[0]


def test_both_ranks_raise_on_a_driver_mismatch_naming_the_field(ranks):
    for seen in ranks:
        message = seen["fingerprint_mismatch"]["raised"]
        assert "rank 1 vs rank 0: driver" in message and "999.99" in message
        assert "python" not in message  # a harmless difference is no reason to refuse


def test_harmless_differences_are_notes_and_the_ranks_still_agree(ranks):
    for seen in ranks:
        got = seen["harmless_difference"]
        assert got["hash"] == ranks[0]["init"]["agreed"]
        assert any("python" in n and "0.0.1" in n for n in got["notes"])
        assert got["fingerprints"][0] != got["fingerprints"][1]


def test_an_nccl_setting_asked_for_after_init_is_refused_by_name(ranks):
    for seen in ranks:
        message = seen["late_setting"]["raised"]
        assert message.startswith("NCCL_ALGO=Tree: can only take effect before")


def test_ddp_gradients_agree_and_the_receipt_records_the_settings_as_configured(ranks):
    for seen in ranks:
        got = seen["ddp"]
        assert got["grads"][0] == got["grads"][1]  # the allreduce ran (each rank had its own batch)
        assert got["requested"]["DistributedDataParallel"]["bucket_cap_mb"] == 1
        assert got["requested"]["ddp_comm_hook"] == "fp16_compress_hook"
        assert any(n.startswith("configured: NCCL_ALGO=Ring") and "no evidence" in n for n in got["notes"])
        assert any("unverified" in n for n in got["notes"])  # no GPU kernels: overlap not observed
        assert got["honored"] is True


def test_a_hook_torch_refuses_is_a_violation_by_name(ranks):
    for seen in ranks:
        (violation,) = seen["ddp_refused_hook"]["violations"]
        assert "reduce_precision" in violation and "bf16_compress_hook" in violation


def test_reducing_only_the_last_bucket_compresses_that_bucket_and_trains_as_without(ranks):
    for seen in ranks:
        got = seen["ddp_last_bucket"]
        plain, last, every = got["plain"], got["last"], got["all"]
        assert last["requested"] == {"ddp_comm_hook": "fp16_compress_last_bucket_hook",
                                     "reduce_precision_buckets": "last"} and last["violations"] == []
        assert any(n.startswith("configured: reduce_precision_buckets=last") for n in last["notes"])
        # a compressed bucket's gradients are fp16 values: the first layer's (the last bucket) only
        assert last["exact"]["fp16"] == {"first": True, "last": False}
        assert every["exact"]["fp16"] == {"first": True, "last": True}
        assert plain["exact"]["fp16"] == {"first": False, "last": False}
        assert last["losses"] == pytest.approx(plain["losses"], rel=1e-3)
        assert len(set(last["weights"])) == 1  # the ranks still hold one model


def test_the_bf16_last_bucket_hook_runs_on_gloo_but_wrap_keeps_torchs_nccl_rule(ranks):
    for seen in ranks:
        got = seen["ddp_last_bucket"]
        hook = got["bf16_hook"]  # registered directly on torch's DDP
        assert hook["exact"]["bf16"] == {"first": True, "last": False}
        assert hook["losses"] == pytest.approx(got["plain"]["losses"], rel=1e-3)
        (violation,) = got["bf16_policy"]["violations"]
        assert "reduce_precision" in violation and "needs the NCCL backend" in violation


def test_fsdp2_refuses_a_last_bucket_reduction_by_name(ranks):
    for seen in ranks:
        assert "reduce_precision_buckets: requested last" in seen["fsdp2_last_bucket"]["raised"]


def test_the_last_bucket_hook_takes_bf16_or_fp16():
    assert xdist.compress_last_bucket_hook("bf16").__name__ == "bf16_compress_last_bucket_hook"
    with pytest.raises(InputError, match="no compression hook"):
        xdist.compress_last_bucket_hook("fp32")


def test_fsdp2_shards_with_the_policys_mixed_precision_and_refuses_graphs(ranks):
    for seen in ranks:
        got = seen["fsdp2"]
        assert got["requested"]["fully_shard"]["mp_policy"] == {"param_dtype": "bf16", "reduce_dtype": "fp32"}
        assert got["requested"]["fully_shard"]["prefetch"] == 1
        assert got["dtype"] == "torch.float32"  # sharded parameters stay fp32 for the optimizer
        assert any("cuda_graphs" in v for v in got["violations"])


def test_receipts_are_gathered_with_a_rank_column_and_judged_over_all_ranks(ranks, tmp_path):
    for seen in ranks:
        got = seen["gathered"]
        assert got["ranks"] == [0, 0, 1, 1]
        assert got["honored"] is False and list(got["by_rank"]) == ["1"]  # only rank 1 broke the policy
        assert "NOT honoured" in got["table"]
    assert ranks[0]["gathered"]["saved"] and ranks[1]["gathered"]["saved"] is None  # rank 0 writes it
    saved = json.loads(Path(ranks[0]["gathered"]["saved"]).read_text())
    assert saved["world_size"] == 2 and [r["rank"] for r in saved["receipts"]] == [0, 0, 1, 1]


# -- without a process group -----------------------------------------------------------------------------------
def test_agree_without_a_process_group_is_this_process_hash():
    policy = xrt.Policy(execution={"precision": "bf16"})
    assert xdist.agree(policy) == policy.hash


def test_wrap_needs_a_process_group_and_a_known_strategy():
    with pytest.raises(InputError, match="unknown strategy"):
        xdist.wrap(torch.nn.Linear(2, 2), None, strategy="zero3")
    with pytest.raises(InputError, match="needs a process group"):
        xdist.wrap(torch.nn.Linear(2, 2), None)


def test_nccl_environment_uses_nccls_own_names():
    comm = xrt.Policy(communication={"nccl": {"NCCL_ALGO": "tree", "ib_disable": True, "buffsize": 4194304}})
    assert xdist.nccl_environment(comm.communication) == {
        "NCCL_ALGO": "Tree", "NCCL_BUFFSIZE": "4194304", "NCCL_IB_DISABLE": "1"}


def test_overlap_is_measured_from_kernel_intervals():
    got = xdist.overlap_of([(0, 10), (20, 30)], [(5, 25), (28, 40)])
    assert (got.comm_us, got.overlapped_us) == (20, 12) and got.fraction == 0.6
    assert xdist.overlap_of([], [(0, 1)]).fraction is None


def test_saving_a_receipt_into_a_missing_folder_is_refused(tmp_path):
    report = xdist.DistributedReport("0" * 64, 1, None)
    with pytest.raises(PolicyError, match="cannot write"):
        report.save(tmp_path / "nope" / "r.json")
    assert report.save(tmp_path / "r.json").exists() and report.honored
