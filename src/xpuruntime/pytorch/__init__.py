"""xpuruntime.pytorch: the same policies in PyTorch training and serving (needs the ``torch`` extra).

Imported lazily: ``import xpuruntime`` never imports torch; this module does, and says what to
install when torch is missing::

    >>> import xpuruntime.pytorch as xrt_torch   # doctest: +SKIP
"""

from __future__ import annotations

try:
    import torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "xpuruntime.pytorch needs PyTorch, which is not installed.\n"
        "  fix: pip install 'xpuruntime[torch]'  (or install a torch build for your CUDA version first)"
    ) from exc

__all__: list[str] = []
