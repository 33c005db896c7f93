"""Which SDPA backend torch picks eagerly, under CUDA graph capture and under torch.compile, for one attention shape,
and why a fused backend is refused there (torch's own warnings when that backend alone is allowed). Diagnosis.

    python benchmarks/probe_sdpa_capture.py --shape 32,12,197,64
"""
import argparse
import warnings

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--shape", default="32,12,197,64")
p.add_argument("--layout", default="transposed", help="transposed: q/k/v views of [b, s, h, d] (transformers); contiguous")
args = p.parse_args()
b, h, s, d = (int(v) for v in args.shape.split(","))
if args.layout == "transposed":
    q, k, v = (torch.randn(b, s, h, d, device="cuda", dtype=torch.float16).transpose(1, 2) for _ in range(3))
else:
    q, k, v = (torch.randn(b, h, s, d, device="cuda", dtype=torch.float16) for _ in range(3))
names = {int(getattr(SDPBackend, n)): n for n in ("ERROR", "MATH", "FLASH_ATTENTION", "EFFICIENT_ATTENTION",
                                                    "CUDNN_ATTENTION") if hasattr(SDPBackend, n)}
print("torch", torch.__version__, "priority", [names.get(int(x), x) for x in torch._C._get_sdp_priority_order()])
print("eager choice:", names.get(torch._fused_sdp_choice(q, k, v), "?"))
side = torch.cuda.Stream()
side.wait_stream(torch.cuda.current_stream())
with torch.cuda.stream(side), torch.inference_mode():
    torch.nn.functional.scaled_dot_product_attention(q, k, v)
torch.cuda.current_stream().wait_stream(side)
g = torch.cuda.CUDAGraph()
with torch.cuda.graph(g), torch.inference_mode():
    choice = torch._fused_sdp_choice(q, k, v)
    capturing = torch.cuda.is_current_stream_capturing()
print("under capture:", names.get(choice, "?"), "(capturing:", capturing, ")")
for backend in ("CUDNN_ATTENTION", "FLASH_ATTENTION", "EFFICIENT_ATTENTION"):
    g = torch.cuda.CUDAGraph()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with sdpa_kernel([getattr(SDPBackend, backend)]), torch.cuda.graph(g), torch.inference_mode():
                torch.nn.functional.scaled_dot_product_attention(q, k, v)
            g.replay()
            torch.cuda.synchronize()
            result = "captured and replayed"
        except RuntimeError as exc:
            result = "refused: " + str(exc).strip().splitlines()[0][:160]
    print(f"{backend} alone under capture: {result}")
    for w in caught[:4]:
        print("   warning:", str(w.message).strip().replace("\n", " ")[:220])
