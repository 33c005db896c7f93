"""Tuning on the CPU: strategies, candidates and their reasons, records, recording a workload, tuned policies.

Kernels that differ on a CPU are registered in a private registry (a slow one, a wrong one, a broken one, one
with parameter variants), so what the tuner decides is known in advance.
"""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F

pytestmark = pytest.mark.torch

import xpuruntime.kernels as xk  # noqa: E402
from xpuruntime import KernelPolicy, Policy, PolicyError  # noqa: E402
from xpuruntime.errors import InputError  # noqa: E402
from xpuruntime.kernels import tuner as T  # noqa: E402
from xpuruntime.kernels.registry import KernelRegistry  # noqa: E402
from xpuruntime.policies import vocabulary  # noqa: E402
from xpuruntime.policies.records import Candidate, TuningRecord, records_from_data, records_hash  # noqa: E402

SHAPE = "matmul:fp32:64x32x48"


def _slow(a, b):
    time.sleep(0.008)
    return a @ b


def _default(a, b):  # a default a kernel can beat
    time.sleep(0.003)
    return a @ b


@pytest.fixture(autouse=True)
def _one_thread():
    """Timing tests on a small shared CPU: one intra-op thread, so a thread pool's hiccups do not decide."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _variant(a, b, *, params):
    if params["delay_ms"]:
        time.sleep(params["delay_ms"] / 1e3)
    return a @ b


@pytest.fixture
def registry() -> KernelRegistry:
    for name in ("test_slow", "test_wrong", "test_broken", "test_variants", "test_fast"):
        vocabulary.register_kernel("matmul", name)
    reg = KernelRegistry()
    reg.register("matmul", "default", forward=_default, default=True)
    reg.register("matmul", "test_slow", forward=_slow)
    reg.register("matmul", "test_wrong", forward=lambda a, b: 2 * (a @ b))
    reg.register("matmul", "test_broken", forward=lambda a, b: (_ for _ in ()).throw(RuntimeError("kaput")))
    reg.register("matmul", "cublas", forward=lambda a, b: a @ b, devices=("cuda",))
    reg.register("matmul", "test_variants", forward=_variant, check_params=lambda ctx, p: None,
                 variants=lambda ctx: [{"delay_ms": 3, "rank": 0}, {"delay_ms": 0, "rank": 1}])
    return reg


def _tuner(registry: KernelRegistry, **kw) -> T.Tuner:
    return T.Tuner(registry=registry, warmup=1, repeats=3, **kw)


# ---------------------------------------------------------------------------------------------- strategies
def test_best_performance_measures_every_candidate_and_says_why_others_were_not(registry):
    record = _tuner(registry).tune_one(T.parse_spec(SHAPE))
    outcome = {c.label: (c.status, c.reason) for c in record.candidates}
    assert outcome["default"][0] == "ok" and outcome["test_slow"][0] == "ok"
    assert outcome["test_wrong"][0] == "failed" and "wrong result" in outcome["test_wrong"][1]
    assert outcome["test_broken"] == ("failed", "RuntimeError: kaput")
    assert outcome["cublas"] == ("skipped", "runs on cuda tensors only; got a cpu tensor")
    assert outcome["test_variants#0"][0] == "ok" and outcome["test_variants#1"][0] == "ok"
    slow = next(c for c in record.candidates if c.kernel == "test_slow")
    assert len(slow.times_ms) == 3 and slow.time_ms >= 8.0 and record.timer == "perf_counter"
    assert record.kernel == "test_variants" and record.params == {"delay_ms": 0, "rank": 1}  # the fast variant


def test_a_kernel_must_beat_the_default_by_min_speedup(registry):
    record = _tuner(registry, kernels={"matmul": ["test_variants", "test_slow"]}, min_speedup=1e6).tune_one(
        T.parse_spec(SHAPE))
    assert record.kernel == "default" and record.speedup == 1.0  # nothing is a million times faster


def test_first_supported_takes_the_policys_order_without_timing(registry):
    base = Policy(kernels={"matmul": ["cublas", "test_broken", "test_slow", "default"]})
    record = _tuner(registry, strategy="first_supported", policy=base).tune_one(T.parse_spec(SHAPE))
    assert record.kernel == "test_slow" and record.timer == "none" and record.time_ms is None
    statuses = [(c.kernel, c.status) for c in record.candidates]
    assert statuses == [("cublas", "skipped"), ("test_broken", "failed"), ("test_slow", "ok"), ("default", "ok")]


def test_bad_tuner_arguments_are_refused():
    with pytest.raises(PolicyError, match="unknown tuning strategy"):
        T.Tuner(strategy="fastest")
    with pytest.raises(PolicyError, match="unknown bucket"):
        T.Tuner(bucket="log")
    with pytest.raises(PolicyError, match="unknown kernel"):
        T.Tuner(kernels={"matmul": ["cublass"]})


# ---------------------------------------------------------------------------------------------- records
def test_records_round_trip_and_hash(registry):
    records = _tuner(registry).tune(T.targets_from_specs([SHAPE, "matmul:fp32:8x64x64x16:nt"]))
    data = [r.to_dict() for r in records]
    back = records_from_data(data)
    assert back == records and records_hash(back) == records_hash(records)
    assert back[1].options == {"layout": ["row", "col"]} and back[1].dims["batch"] == 8
    assert records_hash(records[::-1]) != records_hash(records)


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d.pop("kernel"), "record"),
    (lambda d: d.update(strategy="fastest"), "record.strategy"),
    (lambda d: d["candidates"][0].update(time_ms=float("nan")), "record.candidates[0].time_ms"),
    (lambda d: d.update(dims={"m": -1}), "record.dims"),
    (lambda d: d.update(op="gemmm"), "record.op"),
])
def test_invalid_records_name_the_field(registry, mutate, field):
    data = _tuner(registry).tune_one(T.parse_spec(SHAPE)).to_dict()
    mutate(data)
    with pytest.raises(PolicyError) as err:
        TuningRecord.from_dict(data)
    assert err.value.field == field


def test_a_record_is_a_rule_with_the_default_behind_the_winner():
    cand = Candidate("test_fast", "ok", 1.0, (1.0,), params={"x": 1})
    rec = TuningRecord("matmul", "bf16", "cuda", {"batch": 1, "m": 8, "n": 8, "k": 8},
                       {"dtype": "bf16", "batch": 1, "m": 8, "n": 8, "k": 8}, "test_fast", {"x": 1},
                       (Candidate("default", "ok", 2.0, (2.0,)), cand))
    assert rec.rule() == {"when": {"dtype": "bf16", "batch": 1, "m": 8, "n": 8, "k": 8},
                          "use": ["test_fast", "default"], "params": {"test_fast": {"x": 1}}}
    assert rec.speedup == 2.0 and rec.chosen is cand


# ---------------------------------------------------------------------------------------------- targets
def test_shape_specs_parse_and_errors_say_the_form():
    t = T.parse_spec("matmul:bfloat16:4x1024x768x768:nt", device="cuda")
    assert (t.op, t.dtype, t.device, t.dims, t.options["layout"]) == (
        "matmul", "bf16", "cuda", {"batch": 4, "m": 1024, "n": 768, "k": 768}, ["row", "col"])
    assert T.parse_spec("attention:fp16:2x12x128x128x64:causal").options == {"is_causal": True}
    assert T.parse_spec("layernorm:fp32:8x768").dims == {"rows": 8, "hidden": 768}
    assert len(T.targets_from_specs(["matmul:fp32:8x8x8,matmul:fp32:8x8x8", "matmul:fp32:8x8x16"])) == 2
    for bad, words in [("matmul:bf16", "malformed"), ("matmul:bf17:8x8x8", "did you mean"),
                       ("matmul:bf16:8x8", "has 2 dims"), ("matmul:bf16:8x8x8:zz", "unknown layout"),
                       ("conv:fp32:8x8x8", "not tunable")]:
        with pytest.raises(InputError) as err:
            T.parse_spec(bad)
        assert words in str(err.value)


def test_recording_sees_torch_calls_with_layout_autocast_and_causality():
    lin = torch.nn.Linear(32, 64)
    with xk.recording() as rec:
        x = torch.randn(2, 16, 32)
        y = lin(x)
        y @ torch.randn(64, 8)
        q = torch.randn(2, 4, 16, 8)
        F.scaled_dot_product_attention(q, q, q, is_causal=True)
        F.layer_norm(y, (64,))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            lin(x)
        xk.matmul(torch.randn(8, 4), torch.randn(4, 2))  # an xpuruntime.kernels op: from the dispatch log
    seen = {(t.op, t.dtype, tuple(t.dims.values()), tuple(t.options.get("layout", ()))) for t in rec.targets}
    assert ("matmul", "fp32", (1, 32, 64, 32), ("row", "col")) in seen  # F.linear: weight.t() is column-major
    assert ("matmul", "bf16", (1, 32, 64, 32), ("row", "col")) in seen  # autocast runs it in bf16
    assert ("matmul", "fp32", (1, 32, 8, 64), ("row", "row")) in seen
    assert ("matmul", "fp32", (1, 8, 2, 4), ("row", "row")) in seen
    assert ("layernorm", "fp32", (32, 64), ()) in seen
    attention = next(t for t in rec.targets if t.op == "attention")
    assert attention.dims["seq_q"] == 16 and attention.options["is_causal"] is True


# ---------------------------------------------------------------------------------------------- policies
def test_a_tuned_policy_pins_each_winner_and_drives_the_dispatcher(registry):
    base = Policy(kernels={"matmul": {"prefer": "default", "rules": [{"when": {"m": ">=4096"}, "use": "default"}]}},
                  execution={"fallback": "error"})
    records = _tuner(registry, kernels={"matmul": ["test_variants"]}, min_speedup=1.0).tune(
        T.targets_from_specs([SHAPE]))
    assert records[0].kernel == "test_variants" and records[0].params["delay_ms"] == 0
    tuned = T.build_policy(records, base)
    rules = tuned.kernels.preference("matmul").rules
    assert len(rules) == 2 and rules[1] == base.kernels.preference("matmul").rules[0]  # base rules come after
    assert rules[0].use == ("test_variants", "default") and rules[0].params["test_variants"]["rank"] == 1
    assert tuned.execution == base.execution
    loaded = Policy.loads(tuned.dumps())
    assert loaded.hash == tuned.hash
    ctx = T.parse_spec(SHAPE).context()
    sel = xk.Dispatcher(registry).select("matmul", ctx, loaded, log=False)
    assert sel.kernel == "test_variants" and sel.params == {"delay_ms": 0, "rank": 1}
    assert sel.reason.startswith("kernels.matmul.rules[0]")


def test_winners_the_base_already_runs_add_no_rule(registry):
    records = _tuner(registry, kernels={"matmul": ["test_slow"]}).tune(T.targets_from_specs([SHAPE]))
    assert records[0].kernel == "default"
    assert T.build_policy(records).kernels.preference("matmul") is None
    assert len(T.build_policy(records, all_rules=True).kernels.preference("matmul").rules) == 1
    assert T.build_policy(records, {"kernels": {"matmul": "test_slow"}}).kernels.preference("matmul").rules[0].use == \
        ("default",)


def test_pow2_buckets_write_ranges_of_m(registry):
    record = _tuner(registry, bucket="pow2", kernels={"matmul": []}).tune_one(T.parse_spec("matmul:fp32:100x8x8"))
    assert record.when["m"] == "65..128"
    assert KernelPolicy().set("matmul", "default", when=record.when).resolve("matmul", "fp32", batch=1, m=120, n=8,
                                                                             k=8) == ("default",)


def test_tuning_through_the_real_registry_and_the_torch_ops():
    """The global registry on the CPU: attention has three CPU kernels; the tuned policy drives xk.attention."""
    records = T.Tuner(warmup=1, repeats=3, min_speedup=1.0).tune(
        T.targets_from_specs(["attention:fp32:1x2x64x64x16:causal", "layernorm:fp32:16x64"]))
    att = records[0]
    assert {c.kernel for c in att.candidates if c.status == "ok"} == {"default", "flash", "math"}
    assert att.default_time_ms is not None and records[1].baseline == "native"
    tuned = T.build_policy(records, all_rules=True)
    q = torch.randn(1, 2, 64, 16)
    with xk.use_policy(tuned), xk.dispatch_logging() as logged:
        out = xk.attention(q, q, q, is_causal=True)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, q, q, is_causal=True), rtol=1e-4, atol=1e-5)
    assert logged[0].kernel == att.kernel and logged[0].reason.startswith("kernels.attention.rules[0]")


def test_onnx_shapes_come_from_shape_inference(tmp_path):
    onnx = pytest.importorskip("onnx")
    import numpy as np
    from onnx import TensorProto, helper

    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("Reshape", ["y", "shape"], ["y2"]),
             helper.make_node("Gemm", ["y2", "w2"], ["z"], transB=1)]
    inits = [helper.make_tensor("w", TensorProto.FLOAT, [32, 8], np.ones(256, np.float32)),
             helper.make_tensor("w2", TensorProto.FLOAT, [4, 8], np.ones(32, np.float32)),
             helper.make_tensor("shape", TensorProto.INT64, [2], np.array([-1, 8]))]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16, 32])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    targets, notes = T.targets_from_onnx(model, dims={"batch": 4}, dtype="bf16")
    assert [(t.dtype, t.dims, t.options["layout"]) for t in targets] == [
        ("bf16", {"batch": 1, "m": 64, "n": 8, "k": 32}, ["row", "row"]),
        ("bf16", {"batch": 1, "m": 64, "n": 4, "k": 8}, ["row", "col"])]
    assert notes == []
    with pytest.raises(InputError, match="symbolic input dims") as err:
        T.targets_from_onnx(model)
    assert err.value.hint == "--dim batch=N"
    onnx.save(model, tmp_path / "m.onnx")
    assert len(T.targets_from_onnx(tmp_path / "m.onnx", dims={"batch": 2})[0]) == 2


def test_a_tuned_policy_applies_per_shape_in_a_torch_training_step():
    """Recorded under autocast, tuned, applied with xpuruntime.pytorch: matmuls are routed, in the autocast dtype,
    and each call is decided by its rule (forward and backward)."""
    xrt_torch = pytest.importorskip("xpuruntime.pytorch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 16))
    x = torch.randn(4, 8, 32)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(x).float().square().mean()
        loss.backward()
        return loss

    with xk.recording() as rec:
        ref = step()
    assert {(t.dtype, t.dims["m"], t.dims["n"]) for t in rec.targets} == {("bf16", 32, 64), ("bf16", 32, 16)}
    tuned = T.build_policy(T.Tuner(warmup=0, repeats=1).tune(rec.targets), all_rules=True)
    with xrt_torch.policy(tuned, exec_policy={"precision": "bf16"}), xk.dispatch_logging() as logged:
        loss = step()
    torch.testing.assert_close(loss, ref, rtol=1e-2, atol=1e-4)  # bf16: the bias is added after the product
    forward = [r for r in logged if r.phase == "forward"]
    assert len(forward) == 2 and all(r.dtype == "bf16" and "rules[" in r.reason for r in forward)
    assert any(r.phase == "backward" for r in logged)


def test_a_policy_with_rules_routes_only_the_calls_its_rules_match():
    """Shapes without a rule stay torch's own calls (no custom op, no dispatch record)."""
    xrt_torch = pytest.importorskip("xpuruntime.pytorch")
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.Linear(64, 16))
    x = torch.randn(4, 8, 32)
    policy = Policy(kernels={"matmul": {"prefer": "default", "rules": [
        {"when": {"m": 32, "n": 64, "k": 32}, "use": ["cublas", "default"]}]}})
    with xrt_torch.policy(policy), xk.dispatch_logging() as logged:
        y = model(x)
    assert [(r.dims["n"], r.dims["k"]) for r in logged if r.phase == "forward"] == [(64, 32)]
    torch.testing.assert_close(y, model(x))
