"""OpenVINO sync, OpenVINO async queue (run_many) and ONNX Runtime CPU throughput on the same models.

    python benchmarks/bench_openvino_cpu.py [--quick] [--json PATH]

Each variant processes the same list of feed sets (seeded random inputs); the three variants are
measured in interleaved rounds, order rotated, and the table reports inferences per second
(median over rounds). All sessions run ``precision="fp32"`` with the same policy, so the numbers
compare engines, not precisions (OpenVINO's own CPU default would be bf16 on a bf16-capable CPU).
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import quantiles, write_json  # noqa: E402

import xpuruntime as xrt  # noqa: E402
from xpuruntime.inference.samples import tiny_convnet, tiny_transformer  # noqa: E402

MODELS = {
    "tiny_convnet b8 3x64x64": (lambda: tiny_convnet(channels=16, size=64), (8, 3, 64, 64)),
    "tiny_transformer d256 x[4,64,256]": (lambda: tiny_transformer(d_model=256, heads=4, ffn=1024), (4, 64, 256)),
}


def _sessions(model: object) -> dict[str, object]:
    policy = xrt.ExecutionPolicy(precision="fp32", fallback="error")
    return {
        "onnxruntime sync": xrt.InferenceSession(model, engine="onnxruntime", exec_policy=policy),
        "openvino sync (LATENCY)": xrt.InferenceSession(model, engine="openvino", exec_policy=policy),
        "openvino run_many (THROUGHPUT queue)": xrt.InferenceSession(
            model, engine="openvino", exec_policy=policy, engine_options={"performance_hint": "THROUGHPUT"}),
    }


def _variant(name: str, sess: object, feeds: list[dict[str, np.ndarray]]) -> float:
    t0 = time.perf_counter()
    if "run_many" in name:
        sess.run_many(feeds)  # type: ignore[attr-defined]
    else:
        for f in feeds:
            sess.run(f)  # type: ignore[attr-defined]
    return len(feeds) / (time.perf_counter() - t0)


def _bench(label: str, rounds: int, per_round: int) -> dict[str, object]:
    build, shape = MODELS[label]
    sessions = _sessions(build())
    rng = np.random.default_rng(0)
    feeds = [{"x": rng.standard_normal(shape).astype(np.float32)} for _ in range(per_round)]
    names = list(sessions)
    for n in names:
        _variant(n, sessions[n], feeds[:4])  # warm-up
    rates: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for n in names[r % 3:] + names[: r % 3]:
            rates[n].append(_variant(n, sessions[n], feeds))
    return {"model": label, "input_shape": list(shape), "batch_items_per_round": per_round,
            "inferences_per_s": {n: quantiles(np.array(v)) for n, v in rates.items()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", default="benchmarks/results/openvino_cpu.json")
    args = parser.parse_args()
    rounds, per_round = (3, 16) if args.quick else (10, 64)
    results = [_bench(label, rounds, per_round) for label in MODELS]
    print(f"{'model':<36}{'variant':<40}{'inf/s p10':>11}{'median':>9}{'p90':>9}")
    for res in results:
        for name, q in res["inferences_per_s"].items():
            print(f"{res['model']:<36}{name:<40}{q['p10']:>11.1f}{q['median']:>9.1f}{q['p90']:>9.1f}")
    import onnxruntime
    import openvino

    from xpuruntime.runtime.devices import get_device

    write_json(Path(args.json), {
        "benchmark": "openvino_cpu", "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": get_device("cpu").name, "cpus": __import__("os").cpu_count(), "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__, "openvino": openvino.__version__,
        "command": " ".join(["python", *sys.argv]), "mode": "quick" if args.quick else "full", "results": results})
    print(f"\nwritten: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
