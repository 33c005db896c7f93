"""xpuruntime.pytorch: the same policies in PyTorch training and serving (needs the ``torch`` extra).

Imported lazily: ``import xpuruntime`` never imports torch; this module does, and says what to
install when torch is missing::

    >>> import xpuruntime.pytorch as xrt_torch                                     # doctest: +SKIP
    >>> with xrt_torch.policy(kernel_policy={"attention": "flash", "matmul": "cublaslt"},
    ...                       exec_policy={"precision": "bf16"}):                  # doctest: +SKIP
    ...     with xrt_torch.profile() as receipt:
    ...         loss = model(x).sum(); loss.backward()
    >>> print(receipt.table())                                                     # doctest: +SKIP

- :func:`policy` / :func:`set_kernel_policy`: translate a policy into torch's switches (SDPA backends,
  ``preferred_blas_library``, fp32 precision, cuDNN, determinism) and restore them exactly afterwards;
  the translation table is in :mod:`xpuruntime.pytorch._translate`.
- :func:`autocast`: ``torch.autocast`` whose precision the receipts record.
- :func:`capture_graph`: CUDA graph capture and replay of a function, a whole training step included; or,
  as the original design wrote it, ``with capture_graph() as g:`` then ``g.replay()``.
- :func:`compile_step`: ``execution.compile`` as part of the training policy (``torch.compile`` in the policy's
  mode, run under the policy; capture it whole with :func:`capture_graph`); :func:`compare_steps` and
  :func:`check_end_to_end` time a whole step under several policies, interleaved (the tuner's end-to-end check).
- :func:`profile`: a receipt (:class:`~xpuruntime.receipts.ExecutionReport`) read from ``torch.profiler``.
- :mod:`xpuruntime.pytorch.distributed` (imported on its own): one policy on many GPUs with torch.distributed,
  DDP and FSDP2 (agreement, the communication section, per-rank receipts).

torch's switches are process-global; what each thread or task asked for is kept in a ContextVar.
"""

from __future__ import annotations

try:
    import torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "xpuruntime.pytorch needs PyTorch, which is not installed.\n"
        "  fix: pip install 'xpuruntime[torch]'  (or install a torch build for your CUDA version first)"
    ) from exc

from xpuruntime.pytorch._autocast import autocast
from xpuruntime.pytorch._graphs import CapturedGraph, GraphCapture, capture_graph
from xpuruntime.pytorch._kernels import available as kernel_available
from xpuruntime.pytorch._profile import profile, profile_run
from xpuruntime.pytorch._state import applied as applied_policy
from xpuruntime.pytorch._state import clear_kernel_policy, get_kernel_policy, policy, set_kernel_policy
from xpuruntime.pytorch._step import CompiledStep, EndToEnd, check_end_to_end, compare_steps, compile_step
from xpuruntime.pytorch._translate import TorchPlan, translate

__all__ = [
    "set_kernel_policy",
    "get_kernel_policy",
    "clear_kernel_policy",
    "policy",
    "autocast",
    "capture_graph",
    "CapturedGraph",
    "GraphCapture",
    "profile",
    "translate",
    "TorchPlan",
    "compile_step",
    "CompiledStep",
    "compare_steps",
    "check_end_to_end",
    "EndToEnd",
    # what the torch inference engine builds on (engine="torch"): the same translation, application and receipts
    "applied_policy",
    "kernel_available",
    "profile_run",
]
