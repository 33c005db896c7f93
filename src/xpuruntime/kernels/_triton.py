"""What the Triton kernels share: availability, the interpreter switch, device facts. Imports nothing heavy."""

from __future__ import annotations

import functools
import os
from typing import Any

from xpuruntime.kernels.registry import DispatchContext

__all__ = ["REQUIRES", "INSTALL_HINT", "interpreting", "device_reason", "sm_count", "next_pow2"]

REQUIRES = ("torch", "triton")
INSTALL_HINT = "pip install triton (Linux with a CUDA build of torch)"


def interpreting() -> bool:
    """Whether ``TRITON_INTERPRET`` asks Triton to run kernels on the CPU through its interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


def device_reason(ctx: DispatchContext) -> str | None:
    """Triton kernels need CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``."""
    if ctx.device == "cuda" or (ctx.device == "cpu" and interpreting()):
        return None
    return (f"Triton kernels run on CUDA tensors; got a {ctx.device} tensor "
            "(TRITON_INTERPRET=1 runs them on the CPU through Triton's interpreter, slowly)")


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    import torch

    return int(torch.cuda.get_device_properties(index).multi_processor_count)


def sm_count(device: Any) -> int:
    """Streaming multiprocessors of a CUDA device (4 for a CPU tensor under the interpreter)."""
    if getattr(device, "type", "cpu") != "cuda":
        return 4
    return _sm_count(device.index if device.index is not None else _current_index())


def _current_index() -> int:
    import torch

    return int(torch.cuda.current_device())


def next_pow2(n: int) -> int:
    """The smallest power of two >= n (1 for n <= 1)."""
    return 1 if n <= 1 else 1 << (int(n) - 1).bit_length()
