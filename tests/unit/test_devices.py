"""Device parsing, discovery and the current device, on whatever machine runs the tests."""

from __future__ import annotations

import contextvars
import json
import threading

import pytest

from xpuruntime.errors import DeviceError
from xpuruntime.runtime import (
    Device,
    DeviceSpec,
    cuda_discovery_notes,
    get_all_devices,
    get_current_device,
    get_device,
    get_device_count,
    parse_device,
    set_current_device,
    synchronize,
    use_device,
    visible_cuda_indices,
)


@pytest.mark.parametrize(
    ("spec", "kind", "index"),
    [
        ("cpu", "cpu", None),
        ("CPU", "cpu", None),
        ("cpu:0", "cpu", None),
        (" cuda ", "cuda", None),
        ("cuda:0", "cuda", 0),
        ("Cuda:12", "cuda", 12),
        ("gpu", "gpu", None),
        ("GPU:1", "gpu", 1),
        ("npu", "npu", None),
        ("npu:0", "npu", 0),
        ("auto", "auto", None),
        (None, "auto", None),
        (3, "cuda", 3),
        (DeviceSpec("gpu", 2), "gpu", 2),
    ],
)
def test_parse_device_accepts_the_documented_forms(spec, kind, index):
    assert parse_device(spec) == DeviceSpec(kind, index)


@pytest.mark.parametrize("spec", ["cdua:0", "cuda:-1", "cuda:x", "", "   ", "cuda:", "cpu:1", "auto:0", -1, 1.5, True])
def test_parse_device_rejects_malformed_specs_with_the_expected_forms(spec):
    with pytest.raises(DeviceError) as info:
        parse_device(spec)
    message = str(info.value)
    assert "cuda:N" in message and "'cpu'" in message and "auto" in message
    assert info.value.hint


def test_parse_device_suggests_the_closest_spelling():
    with pytest.raises(DeviceError) as info:
        parse_device("cdua:0")
    assert "did you mean 'cuda:0'?" in str(info.value)


def test_parse_device_roundtrips_a_device_and_its_string():
    cpu = get_device("cpu")
    assert parse_device(cpu) == DeviceSpec("cpu")
    assert str(parse_device("cuda:2")) == "cuda:2"


def test_cpu_device_is_described():
    cpu = get_device("cpu")
    assert cpu.is_cpu and not cpu.is_cuda
    assert str(cpu) == "cpu" and cpu.spec == "cpu"
    assert cpu.name and cpu.source == "os" and cpu.supports_int8 and not cpu.supports_fp8
    assert cpu.total_memory is None or cpu.total_memory > 0
    assert repr(cpu).startswith(f"<Device cpu: {cpu.name}")
    assert json.loads(json.dumps(cpu.to_dict()))["spec"] == "cpu"


def test_device_repr_and_memory_for_a_cuda_description():
    d = Device(
        kind="cuda", id=0, name="NVIDIA H100 80GB HBM3", total_memory=85_040_000_000,
        compute_capability=(9, 0), supports_fp16=True, supports_bf16=True, supports_int8=True,
        supports_fp8=True, source="nvml",
    )
    assert repr(d) == "<Device cuda:0: NVIDIA H100 80GB HBM3 (79.2 GB, sm_90)>"
    assert d.total_memory_gb == 79.2 and d.is_cuda and str(d) == "cuda:0"
    assert d.to_dict()["compute_capability"] == [9, 0]


def test_all_devices_start_with_one_cpu_and_have_unique_specs():
    devices = get_all_devices()
    specs = [d.spec for d in devices]
    assert specs[0] == "cpu"
    assert specs.count("cpu") == 1
    assert len(specs) == len(set(specs))
    assert all(d.kind in ("cpu", "cuda", "gpu", "npu") for d in devices)


def test_openvino_devices_are_listed_by_kind_and_index():
    pytest.importorskip("openvino")
    import openvino

    names = openvino.Core().available_devices
    specs = {d.spec for d in get_all_devices(refresh=True)}
    for name in names:
        family, _, suffix = name.partition(".")
        if family in ("GPU", "NPU"):
            assert f"{family.lower()}:{suffix or 0}" in specs
    assert get_device_count("gpu") == sum(1 for n in names if n.startswith("GPU"))
    assert get_device_count("npu") == sum(1 for n in names if n.startswith("NPU"))


def test_device_count_matches_discovery():
    devices = get_all_devices()
    assert get_device_count() == len([d for d in devices if d.is_cuda])
    assert get_device_count("cpu") == 1
    with pytest.raises(DeviceError, match="did you mean 'cuda'"):
        get_device_count("cdua")


def test_absent_cuda_device_lists_present_devices():
    with pytest.raises(DeviceError) as info:
        get_device("cuda:99")
    message = str(info.value)
    assert "present: " in message and "cpu" in message
    for d in get_all_devices():
        assert d.spec in message


def test_auto_is_first_cuda_device_else_cpu():
    cuda = [d for d in get_all_devices() if d.is_cuda]
    assert get_device("auto") == (cuda[0] if cuda else get_device("cpu"))
    assert get_device(None) == get_device("auto")


def test_cuda_without_cuda_devices_says_why():
    if get_device_count() > 0:
        assert get_device("cuda").is_cuda
        return
    with pytest.raises(DeviceError, match="no CUDA device found"):
        get_device("cuda")
    assert cuda_discovery_notes(), "discovery must record why no CUDA device was found"


def test_set_current_device_roundtrip():
    previous = get_current_device()
    try:
        assert set_current_device("cpu") == get_device("cpu")
        assert get_current_device().is_cpu
    finally:
        set_current_device(previous)
    assert get_current_device() == previous


def test_set_current_device_rejects_absent_devices():
    before = get_current_device()
    with pytest.raises(DeviceError):
        set_current_device("cuda:99")
    assert get_current_device() == before


def test_current_device_is_context_local():
    ctx = contextvars.copy_context()
    ctx.run(set_current_device, "cpu")
    assert ctx.run(get_current_device).is_cpu
    seen: list[Device] = []
    thread = threading.Thread(target=lambda: seen.append(ctx.run(get_current_device)))
    thread.start()
    thread.join()
    assert seen[0].is_cpu
    assert get_current_device() == get_device("auto")


def test_use_device_restores_the_previous_device():
    before = get_current_device()
    with use_device("cpu") as d:
        assert get_current_device() == d and d.is_cpu
    assert get_current_device() == before


def test_synchronize_on_cpu_is_a_noop():
    assert synchronize("cpu") is None
    assert get_device("cpu").synchronize() is None


UUIDS = ["GPU-aaaa-1111", "GPU-bbbb-2222", "GPU-cccc-3333"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, [0, 1, 2]),
        ("", []),
        ("-1", []),
        ("0", [0]),
        ("2,0", [2, 0]),
        (" 1 , 2 ", [1, 2]),
        ("1,-1,0", [1]),
        ("0,5,1", [0]),
        ("0,0,1", [0]),
        ("1,x,2", [1]),
        ("GPU-cccc-3333,0", [2, 0]),
        ("GPU-bbbb", [1]),
        ("bbbb", [1]),
        ("GPU-", []),
        ("MIG-aaaa/1/0", []),
    ],
)
def test_visible_cuda_indices_follow_cuda_rules(value, expected):
    assert visible_cuda_indices(value, UUIDS) == expected
