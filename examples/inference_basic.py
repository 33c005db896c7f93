"""Inference with a kernel policy, and the receipt of what actually ran (the original design's first example).

    python examples/inference_basic.py [--html receipt.html] [--trace run.trace.json]

On a CUDA machine it asks for cuBLASLt, flash attention and fp16 on cuda:0; on a CPU it runs the same policy on
the CPU, and the receipt says what the CPU provider did with each request.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
from _model import mlp_block

import xpuruntime as xrt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--html", help="write the receipt as a self-contained HTML page")
    parser.add_argument("--trace", help="write a Chrome/Perfetto trace of the profiled run")
    args = parser.parse_args()

    policy = xrt.KernelPolicy(matmul="cublasLt", attention="flash_v2")  # the original spellings are aliases
    on_gpu = xrt.get_device_count() > 0  # CUDA devices
    device = "cuda:0" if on_gpu else "cpu"
    exec_policy = xrt.ExecutionPolicy(precision="fp16" if on_gpu else "fp32", fallback="warn")
    print(f"policy: {policy} {exec_policy.precision} on {device}")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sess = xrt.InferenceSession(mlp_block(), device=device, engine="onnxruntime", kernel_policy=policy,
                                    exec_policy=exec_policy)
        x = np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32)
        out = sess.run({"x": x})
        report = sess.explain({"x": x})  # one profiled run: per-node provider, precision and time
    for message in dict.fromkeys(str(w.message) for w in caught):  # session and explain warn alike: once
        print(f"warning: {message}")
    print(f"output y: shape {out['y'].shape}, mean {out['y'].mean():.4f}")
    print(report.summary())
    print(report.table())
    if args.html:
        Path(args.html).write_text(report.to_html(), encoding="utf-8")
        print(f"wrote {args.html}")
    if args.trace:
        Path(args.trace).write_text(json.dumps(report.to_trace()), encoding="utf-8")
        print(f"wrote {args.trace}")


if __name__ == "__main__":
    main()
