"""The runtime layer as a CPU-only user meets it: Device lookups, streams and pinned memory refused by name,
memory info, NVTX ranges (no-ops without nvtx), spans."""

from __future__ import annotations

import subprocess
import sys

import pytest

import xpuruntime as xrt
from xpuruntime.runtime import memory, profiler, stream
from xpuruntime.runtime.devices import get_device_count

NO_CUDA = get_device_count("cuda") == 0
needs_no_cuda = pytest.mark.skipif(not NO_CUDA, reason="checks the errors of a machine without CUDA")


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_device_is_constructible_as_the_original_api_shows():
    assert xrt.Device("cpu") is xrt.runtime.get_device("cpu")
    assert xrt.Device() == xrt.get_current_device()
    assert xrt.Device(device_id="cpu").is_cpu


@needs_no_cuda
def test_device_of_a_missing_gpu_says_what_is_missing():
    for spec in (0, "cuda:0"):
        with pytest.raises(xrt.DeviceError) as info:
            xrt.Device(spec)
        assert "no CUDA device found" in str(info.value)


def test_device_records_still_build_by_keyword():
    import dataclasses

    cpu = xrt.Device("cpu")
    assert dataclasses.replace(cpu, name="renamed").name == "renamed"


def test_get_device_count_counts_cuda_devices_not_all_devices():
    assert "CUDA devices by default, not all devices" in xrt.get_device_count.__doc__
    assert xrt.get_device_count("cpu") == 1
    assert xrt.get_device_count() == len([d for d in xrt.get_all_devices() if d.is_cuda])


@needs_no_cuda
@pytest.mark.parametrize("make", [lambda: xrt.Stream(), lambda: xrt.Event(), lambda: xrt.Stream(0),
                                  lambda: memory.pinned_empty((4, 4))])
def test_cuda_objects_without_cuda_are_a_device_error(make):
    with pytest.raises(xrt.DeviceError) as info:
        make()
    assert "CUDA" in str(info.value)


def test_a_stream_on_the_cpu_is_refused_by_name():
    with pytest.raises(xrt.DeviceError) as info:
        xrt.Stream("cpu")
    assert "not a CUDA device" in str(info.value)


def test_unknown_stream_backend_suggests_the_closest():
    with pytest.raises(xrt.DeviceError) as info:
        stream.stream_backend("cuda_core")
    assert "cuda.core" in str(info.value)


def test_pinned_buffer_arguments_are_checked_before_anything_is_allocated():
    with pytest.raises(xrt.InputError):
        memory.pinned_empty((-1, 4))
    with pytest.raises(xrt.InputError):
        memory.pinned_empty(4, "no-such-dtype")
    with pytest.raises(xrt.OutOfMemoryError):
        memory.pinned_empty((1 << 40, 1 << 20), "float64")


def test_memory_info_of_the_host():
    info = xrt.memory_info("cpu")
    assert info.source == "os" and info.total > 0
    assert info.free is None or 0 <= info.free <= info.total
    assert info.to_dict()["used"] == info.used


@needs_no_cuda
def test_memory_limits_need_torch_cuda():
    with pytest.raises(xrt.DeviceError):
        memory.set_memory_fraction(0.5)
    with pytest.raises(xrt.InputError):
        memory.set_memory_fraction(1.5)


def test_nvtx_ranges_are_no_ops_without_nvtx():
    code = ("import sys; sys.modules['nvtx'] = None\n"
            "from xpuruntime.runtime import profiler\n"
            "assert not profiler.nvtx_available()\n"
            "assert profiler.nvtx_range('a') is profiler.nvtx_range('b')\n"
            "with profiler.nvtx_range('x'): pass\n"
            "print('ok')")
    result = _python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_nvtx_ranges_with_nvtx_installed():
    pytest.importorskip("nvtx")
    assert profiler.nvtx_available()
    with profiler.nvtx_range("xpuruntime test"):  # no profiler attached: a real range, recorded nowhere
        pass


def test_span_log_keeps_named_spans_and_a_bounded_tail():
    log = profiler.SpanLog("xpuruntime test", limit=4)
    for _ in range(20):
        with log.span("run", batch=1):
            pass
    spans = log.items()
    assert 4 <= len(spans) <= 8
    assert all(s["name"] == "run" and s["dur_us"] >= 0 and s["args"] == {"batch": 1} for s in spans)
    assert log.last()["start_us"] >= spans[0]["start_us"]


def test_profile_without_sessions_is_empty():
    with profiler.profile() as prof:
        pass
    assert prof.reports == [] and prof.spans == []
    assert prof.to_trace()["traceEvents"] == []


def test_a_cuda_core_stream_query_reads_cu_stream_query() -> None:
    """cuda.core's Stream has no query(): the answer is cuStreamQuery's CUresult (data here; the GPU tests run it)."""
    from xpuruntime.errors import DeviceError
    from xpuruntime.runtime.stream import _stream_done

    assert _stream_done((0,), "cuda:0") is True
    assert _stream_done((600,), "cuda:0") is False  # CUDA_ERROR_NOT_READY
    with pytest.raises(DeviceError, match="cuStreamQuery failed on cuda:0"):
        _stream_done((700,), "cuda:0")
