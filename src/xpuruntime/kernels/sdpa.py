"""Attention kernels: each of torch's SDPA backends as a registered kernel, scoped to one call.

``flash``, ``efficient``, ``cudnn`` and ``math`` run ``torch.nn.functional.scaled_dot_product_attention`` inside
``torch.nn.attention.sdpa_kernel([backend])``, so exactly that backend runs (or torch raises: no silent fallback
to math); ``default`` lets torch choose. Registered when this module is imported; never activated.
:func:`attention` is the op users call: it asks the dispatcher which kernel the active policy wants for the
call's shape (``batch, heads, seq_q, seq_k, head_dim``) and logs the decision. Autograd runs the chosen backend's
own backward (the scope only selects the forward op; its gradient formula is recorded with it).

>>> import torch, xpuruntime.kernels as xk
>>> q = torch.randn(2, 4, 64, 32)
>>> with xk.use_policy({"kernels": {"attention": ["flash", "math"]}}):
...     y = xk.attention(q, q, q, is_causal=True)      # torch's CPU flash kernel, or math where it cannot run
"""

from __future__ import annotations

from typing import Any

from xpuruntime.kernels.registry import DispatchContext, get_registry

__all__ = ["attention", "BACKENDS", "sdpa_default", "sdpa_flash", "sdpa_efficient", "sdpa_cudnn", "sdpa_math"]

#: kernel -> torch.nn.attention.SDPBackend member
BACKENDS = {"flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION", "cudnn": "CUDNN_ATTENTION",
            "math": "MATH"}
_MOD = "xpuruntime.kernels.sdpa"


def attention(q: Any, k: Any, v: Any, attn_mask: Any = None, dropout_p: float = 0.0, is_causal: bool = False,
              scale: float | None = None) -> Any:
    """``scaled_dot_product_attention`` with the kernel the active policy picks for this call (logged).

    ``q`` is ``(batch, heads, seq_q, head_dim)``; ``k``/``v`` ``(batch, heads, seq_k, head_dim)``.
    """
    from xpuruntime.kernels import dispatcher as _dispatch
    from xpuruntime.kernels.torch_ops import dtype_name

    ctx = DispatchContext("attention", device=q.device.type, dtype=dtype_name(q.dtype), dims=_dims(q, k),
                          shapes=(tuple(q.shape), tuple(k.shape), tuple(v.shape)),
                          requires_grad=any(t.requires_grad for t in (q, k, v)))
    selection = _dispatch.get_dispatcher().select("attention", ctx)
    return selection.forward()(q, k, v, attn_mask, dropout_p, is_causal, scale)


def _dims(q: Any, k: Any) -> dict[str, int]:
    *lead, seq_q, head_dim = q.shape
    heads = lead[-1] if lead else 1
    batch = 1
    for d in lead[:-1]:
        batch *= d
    return {"batch": batch, "heads": heads, "seq_q": seq_q, "seq_k": k.shape[-2], "head_dim": head_dim}


def _sdpa(backend: str | None, q: Any, k: Any, v: Any, attn_mask: Any = None, dropout_p: float = 0.0,
          is_causal: bool = False, scale: float | None = None) -> Any:
    import torch.nn.functional as F

    if backend is None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p,
                                              is_causal=is_causal, scale=scale)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([getattr(SDPBackend, BACKENDS[backend])]):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p,
                                              is_causal=is_causal, scale=scale)


def sdpa_default(*args: Any) -> Any:
    """SDPA with torch's own backend choice."""
    return _sdpa(None, *args)


def sdpa_flash(*args: Any) -> Any:
    """SDPA with the flash backend only."""
    return _sdpa("flash", *args)


def sdpa_efficient(*args: Any) -> Any:
    """SDPA with the memory-efficient backend only."""
    return _sdpa("efficient", *args)


def sdpa_cudnn(*args: Any) -> Any:
    """SDPA with the cuDNN backend only."""
    return _sdpa("cudnn", *args)


def sdpa_math(*args: Any) -> Any:
    """SDPA with the unfused math backend only."""
    return _sdpa("math", *args)


def _head_dim_at_most(limit: int) -> Any:
    def check(ctx: DispatchContext) -> str | None:
        head_dim = ctx.dim("head_dim")
        return None if head_dim is None or head_dim <= limit else f"head_dim {head_dim} > {limit}"
    return check


def _register() -> None:
    reg = get_registry()
    reg.register("attention", "default", forward=f"{_MOD}:sdpa_default", requires=("torch",), default=True,
                 description="scaled_dot_product_attention, torch's backend choice")
    reg.register("attention", "flash", forward=f"{_MOD}:sdpa_flash", devices=("cuda", "cpu"), requires=("torch",),
                 dtypes=("fp16", "bf16", "fp32"), supports=_head_dim_at_most(256),
                 description="SDPA flash backend only (CUDA: fp16/bf16; torch's CPU flash kernel on the CPU)")
    reg.register("attention", "efficient", forward=f"{_MOD}:sdpa_efficient", devices=("cuda",), requires=("torch",),
                 dtypes=("fp16", "bf16", "fp32"), description="SDPA memory-efficient backend only")
    reg.register("attention", "cudnn", forward=f"{_MOD}:sdpa_cudnn", devices=("cuda",), requires=("torch",),
                 dtypes=("fp16", "bf16"), supports=_head_dim_at_most(256), description="SDPA cuDNN backend only")
    reg.register("attention", "math", forward=f"{_MOD}:sdpa_math", requires=("torch",),
                 description="SDPA unfused math backend only")


_register()
