"""NPU inference under an int8, static-shape policy (the original design's third example).

    python examples/npu_inference.py

Asks OpenVINO (Intel NPU) and ONNX Runtime (its NPU providers: QNN on Snapdragon, OpenVINO EP on Intel) for the
NPU. Without an NPU both fall back to the CPU under ``fallback="warn"``, and the receipts say so, with the
reason and the fix, instead of pretending: nothing here claims an NPU ran what the CPU ran.
"""

from __future__ import annotations

import warnings

import numpy as np
from _model import mlp_block

import xpuruntime as xrt


def main() -> None:
    npus = xrt.get_device_count("npu")  # OpenVINO NPUs; get_device_count() alone counts CUDA devices
    print(f"NPUs found: {npus}" + ("" if npus else " (the runs below fall back to the CPU, and say so)"))
    policy = xrt.ExecutionPolicy(precision="int8", static_shape=True, fallback="warn")
    x = np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32)
    for engine in ("openvino", "onnxruntime"):
        if engine not in {e.name for e in xrt.list_engines() if e.installed}:
            print(f"\n== {engine}: not installed (pip install 'xpuruntime[{engine}]')")
            continue
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            sess = xrt.InferenceSession(mlp_block(), device="npu", engine=engine, exec_policy=policy)
            out = sess.run({"x": x})
        report = sess.report
        print(f"\n== {engine}: asked {report.requested.get('providers') or report.requested.get('device')}")
        print(report.summary())
        ran_on = ", ".join(report.providers_used)
        print(f"ran on: {ran_on}; output mean {out['y'].mean():.4f}")
        for line in xrt.receipts.group_violations(report.violations, limit=3):
            print(f"  - {line}")


if __name__ == "__main__":
    main()
