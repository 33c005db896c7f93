"""Training under a kernel policy, with autocast and a CUDA graph (the original design's second example).

    python examples/training_kernel_policy.py

The policy asks for flash attention and cuBLASLt. On a GPU the step is captured once as a CUDA graph and
replayed; on a CPU, capture is impossible, so the block runs eagerly and the receipt says why. Either way the
receipt from ``torch.profiler`` says which attention and matmul kernels actually ran.
"""

from __future__ import annotations

import warnings

import torch

import xpuruntime.pytorch as xrt_torch


class TinyAttention(torch.nn.Module):
    def __init__(self, width: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.heads, self.qkv, self.out = heads, torch.nn.Linear(width, 3 * width), torch.nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in self.qkv(x).chunk(3, dim=-1))
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(y.transpose(1, 2).reshape(b, t, c))


def main() -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    model, criterion = TinyAttention().to(device), torch.nn.MSELoss()
    x, t = torch.randn(4, 16, 32, device=device), torch.randn(4, 16, 32, device=device)

    applied = xrt_torch.set_kernel_policy(attention="flash_v2", matmul="cublasLt")
    print(f"policy set: {xrt_torch.get_kernel_policy()} ({len(applied.violations)} violation(s) at apply time)")

    for _ in range(3):  # warm-up, eagerly: torch needs it before a capture (lazy init, cuBLAS workspaces)
        model.zero_grad(set_to_none=True)
        criterion(model(x).float(), t).backward()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with xrt_torch.autocast(bf16=True), xrt_torch.capture_graph() as g:
            y = model(x)
            loss = criterion(y.float(), t)
            loss.backward()
    for w in caught:
        print(f"warning: {w.message}")
    print(f"captured as a CUDA graph: {g.captured}; loss {loss.item():.4f}")
    if g.captured:
        g.replay()  # the same step again, on whatever x holds now
        print(f"replayed; loss {loss.item():.4f}")

    with xrt_torch.profile() as receipt, xrt_torch.autocast(bf16=True):
        criterion(model(x).float(), t).backward()
    print(receipt.summary())
    print(receipt.table())
    xrt_torch.clear_kernel_policy()


if __name__ == "__main__":
    main()
