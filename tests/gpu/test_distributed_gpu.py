"""One policy on every visible GPU: NCCL under torchrun (skipped with fewer than 2 GPUs).

Launches ``tests/pytorch/_dist_worker.py`` on all visible GPUs with the nccl backend; NVLink multicast stays off
(``NCCL_NVLS_ENABLE=0``, ``TORCH_SYMM_MEM_DISABLE_MULTICAST=1`` in every process).
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.gpu

_SPEC = importlib.util.spec_from_file_location("_dist_launch", Path(__file__).parents[1] / "pytorch" /
                                               "_dist_launch.py")


def _launch():
    module = importlib.util.module_from_spec(_SPEC)
    _SPEC.loader.exec_module(module)
    return module.launch


def _ok(seen: dict, scenario: str) -> dict:
    """What a rank saw in one scenario; its traceback if it crashed there."""
    got = seen[scenario]
    assert not (isinstance(got, dict) and "crashed" in got), got.get("traceback")
    return got


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    count = torch.cuda.device_count()
    if count < 2:
        pytest.skip(f"needs at least 2 GPUs, found {count}")
    return _launch()(tmp_path_factory.mktemp("nccl"), backend="nccl", nproc=count, timeout=300, strict=False)


def test_every_rank_agrees_over_nccl_and_the_fingerprint_holds_nccls_version(ranks):
    hashes = {_ok(seen, "init")["agreed"] for seen in ranks}
    assert len(hashes) == 1 and all(_ok(seen, "init")["backend"] == "nccl" for seen in ranks)
    assert all(_ok(seen, "init")["env"]["NCCL_NVLS_ENABLE"] == "0" for seen in ranks)
    assert torch.cuda.nccl.version()  # what _here() adds to the fingerprint when the wheel metadata lacks it


def test_every_rank_raises_on_a_mismatch(ranks):
    assert all(_ok(seen, "policy_mismatch")["raised"] for seen in ranks)
    assert all("driver" in _ok(seen, "fingerprint_mismatch")["raised"] for seen in ranks)
    assert all(_ok(seen, "late_setting")["raised"].startswith("NCCL_ALGO=Tree") for seen in ranks)


def test_ddp_with_the_bf16_compression_hook_and_observed_overlap(ranks):
    for seen in ranks:
        got = _ok(seen, "ddp")
        assert len(set(got["grads"])) == 1
        assert got["requested"]["ddp_comm_hook"] == "bf16_compress_hook" and got["honored"]
        overlap = got["requested"]["communication_overlap"]
        assert overlap["comm_us"] > 0 and overlap["evidence"].startswith("torch.profiler")


def test_the_whole_ddp_step_is_captured_as_one_cuda_graph(ranks):
    for seen in ranks:
        got = _ok(seen, "ddp_graph")
        assert got["captured"] and got["side_stream"]
        assert len(set(got["weights"])) == 1  # every rank applied the same averaged gradients
        assert all(math.isfinite(loss) for loss in got["losses"])
        assert got["overlap"]["comm_us"] > 0  # the allreduce kernels are inside the replayed graph


def test_fsdp2_and_gathered_receipts_over_nccl(ranks):
    for seen in ranks:
        assert _ok(seen, "fsdp2")["requested"]["fully_shard"]["mp_policy"]["param_dtype"] == "bf16"
        assert _ok(seen, "gathered")["ranks"] == [r for r in range(len(ranks)) for _ in range(2)]
        assert _ok(seen, "gathered")["honored"] is True


def test_bf16_on_the_last_bucket_only_over_nccl(ranks):
    for seen in ranks:
        got = _ok(seen, "ddp_last_bucket")
        last, plain = got["last"], got["plain"]
        assert last["requested"]["ddp_comm_hook"] == "bf16_compress_last_bucket_hook" and last["violations"] == []
        assert last["exact"]["bf16"] == {"first": True, "last": False}  # only the last bucket went over in bf16
        assert got["all"]["exact"]["bf16"] == {"first": True, "last": True}
        assert last["losses"] == pytest.approx(plain["losses"], rel=1e-2)
        assert len(set(last["weights"])) == 1
