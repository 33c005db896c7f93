"""The benchmark set: xpuruntime's best policy against the best alternative, per model and batch, in one process.

Models (transformers configs, random weights, nothing downloaded): BERT-base, MiniLM-L6 (sequence 128), GPT-2 small
prefill (sequence 128 and 512), ResNet-50 and ViT-B/16 (224x224). Every row is one ``xrt.bench`` call per engine
(ONNX Runtime on the exported ONNX model, torch on the module), candidates interleaved, with the bare engines
(``baseline=True``) measured in the same loop. On CUDA the torch policies run twice: norms kept float32 (the
engine's default ``precision_mode="cast"``) and every weight cast (``"cast-all"``, the bare baseline's plain
``module.half()``: like for like). Columns: bare ORT defaults, bare ORT with IO binding (CUDA),
torch eager (fp16 on CUDA), ``torch.compile`` reduce-overhead (fp16, CUDA), xpuruntime's best on ORT and on torch,
the policy that won, and the ratio best-xpuruntime / best-alternative (>= 1.00 means xpuruntime is at least as fast).

    python benchmarks/bench_models.py --device cpu --models minilm,bert --batches 1
    python benchmarks/bench_models.py --device cuda --models bert --batches 1,32      # one group per call on a GPU

JSON goes to $OUT/bench_models_<device>.json when $OUT is set, else benchmarks/results/.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from _common import write_json

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import xpuruntime as xrt  # noqa: E402

MODELS = ("minilm", "bert", "gpt2-128", "gpt2-512", "resnet50", "vit")
FUSIONS = {"minilm": "bert", "bert": "bert", "gpt2-128": "gpt2", "gpt2-512": "gpt2", "resnet50": "off", "vit": "vit"}


# -- models -------------------------------------------------------------------------------------------
def build(name: str) -> tuple[Any, list[str]]:
    """(module returning one tensor, input names) for a benchmark model, random weights."""
    import torch
    import transformers as tf

    torch.manual_seed(0)
    if name in ("bert", "minilm"):
        cfg = tf.BertConfig() if name == "bert" else tf.BertConfig(hidden_size=384, num_hidden_layers=6,
                                                                    num_attention_heads=12, intermediate_size=1536)
        inner, names = tf.BertModel(cfg), ["input_ids", "attention_mask"]
    elif name.startswith("gpt2"):
        inner, names = tf.GPT2Model(tf.GPT2Config(use_cache=False)), ["input_ids", "attention_mask"]
    elif name == "resnet50":
        inner, names = tf.ResNetModel(tf.ResNetConfig()), ["pixel_values"]
    else:
        inner, names = tf.ViTModel(tf.ViTConfig(), add_pooling_layer=False), ["pixel_values"]

    class Wrapped(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner.eval()

        def forward(self, *args: Any) -> Any:
            out = self.inner(**dict(zip(names, args)))
            return out.pooler_output if name == "resnet50" else out.last_hidden_state

    if len(names) == 2:
        return _Two(Wrapped()), names
    return _One(Wrapped()), names


def _Two(m: Any) -> Any:
    import torch

    class Two(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = m

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            return self.m(input_ids, attention_mask)
    return Two().eval()


def _One(m: Any) -> Any:
    import torch

    class One(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = m

        def forward(self, pixel_values: Any) -> Any:
            return self.m(pixel_values)
    return One().eval()


def feeds(name: str, batch: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    if name in ("resnet50", "vit"):
        return {"pixel_values": rng.standard_normal((batch, 3, 224, 224)).astype(np.float32)}
    seq = 512 if name == "gpt2-512" else 128
    return {"input_ids": rng.integers(0, 1000, (batch, seq)).astype(np.int64),
            "attention_mask": np.ones((batch, seq), np.int64)}


def warm_torch_engine(name: str, batch: int, execution: dict[str, Any], device: str,
                      precision_mode: str = "cast-all", runs: int = 5) -> tuple[Any, dict[str, np.ndarray]]:
    """xpuruntime's torch engine for model ``name`` under ``{"execution": execution}``, built as ``xrt.bench``
    builds it and run ``runs`` times (compiled or captured by then), with its numpy feeds; exits on a load error."""
    import torch

    from xpuruntime.inference.bench import _build

    module, names = build(name)
    sample = feeds(name, batch)
    opts = {"example_inputs": tuple(torch.from_numpy(sample[n]) for n in names), "precision_mode": precision_mode}
    cand = _build(module, "torch", "xrt", {"execution": execution}, device, opts)
    if cand.row.error:
        raise SystemExit(cand.row.error)
    eng = cand.engine
    for _ in range(runs):
        eng.run(sample)
    return eng, sample


def export(module: Any, names: list[str], sample: dict[str, np.ndarray], folder: Path) -> Path:
    """The module as ONNX (TorchScript exporter, opset 17). transformers models are exported with their eager
    attention: ONNX Runtime's transformer fusions match the eager attention subgraph, not torch's
    scaled_dot_product_attention as the exporter decomposes it (a Softmax guarded by IsNaN/Where), so an SDPA export
    would get no fused Attention under ``execution.fusions``. The module's own setting is restored afterwards."""
    import onnx
    import torch

    path = folder / "model.onnx"
    args = tuple(torch.from_numpy(sample[n]) for n in names)
    axes = {n: ({0: "batch", 1: "seq"} if n != "pixel_values" else {0: "batch"}) for n in names}
    restore = _eager_attention(module)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, args, str(path), dynamo=False, opset_version=17, input_names=names,
                              output_names=["output"], dynamic_axes={**axes, "output": {0: "batch"}})
    finally:
        for model, implementation in restore:
            model.set_attn_implementation(implementation)
    proto = onnx.load(str(path))
    proto.ir_version = 10
    onnx.save(proto, str(path))
    return path


def _eager_attention(module: Any) -> list[tuple[Any, str]]:
    """Switch every transformers model inside ``module`` to eager attention; (model, previous setting) to restore."""
    restore = []
    for model in module.modules():
        config = getattr(model, "config", None)
        previous = getattr(config, "_attn_implementation", None)
        if hasattr(model, "set_attn_implementation") and previous not in (None, "eager"):
            model.set_attn_implementation("eager")
            restore.append((model, previous))
    return restore


# -- policies ---------------------------------------------------------------------------------------------
def ort_policies(name: str, batch_feeds: dict[str, np.ndarray], cuda: bool) -> list[tuple[str, dict[str, Any]]]:
    fusions = FUSIONS[name]
    fixed = {k: list(v.shape) for k, v in batch_feeds.items()}
    if not cuda:
        out = [("default", {}), ("fixed-shapes", {"execution": {"fixed_shapes": fixed}})]
        if fusions != "off":
            out.append((f"fusions-{fusions}", {"execution": {"fusions": fusions}}))
        return out
    out = [("default", {}), ("tf32", {"execution": {"precision": "tf32"}}), ("fp16", {"execution": {"precision": "fp16"}})]
    if fusions != "off":
        out.append((f"fp16-{fusions}", {"execution": {"precision": "fp16", "fusions": fusions}}))
    out.append((f"fp16-{fusions}-graphs", {"execution": {"precision": "fp16", "fusions": fusions, "cuda_graphs": True,
                                                          "fixed_shapes": fixed}}))
    return out


def torch_policies(cuda: bool) -> list[tuple[str, dict[str, Any]]]:
    if not cuda:
        return [("default", {}), ("bf16", {"execution": {"precision": "bf16"}})]
    static = {"precision": "fp16", "static_shape": True}
    return [("fp16", {"execution": {"precision": "fp16"}}),
            ("fp16-graphs", {"execution": {**static, "cuda_graphs": True}}),
            ("fp16-reduce-overhead", {"execution": {**static, "compile": "reduce-overhead"}}),
            ("fp16-compile-graphs", {"execution": {**static, "compile": "default", "cuda_graphs": True}})]


# -- one row ------------------------------------------------------------------------------------------
def row(name: str, batch: int, device: str, warmup: int, repeat: int, engines: list[str]) -> dict[str, Any]:
    import torch

    cuda = device.startswith("cuda")
    module, names = build(name)
    sample = feeds(name, batch)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if "onnxruntime" in engines or "openvino" in engines:
            path = export(module, names, sample, Path(tmp))
            onnx_engines = [e for e in engines if e in ("onnxruntime", "openvino")]
            results["onnx"] = xrt.bench(path, policies=ort_policies(name, sample, cuda), engines=onnx_engines,
                                        device=device, feeds=sample, warmup=warmup, repeat=repeat, baseline=True)
            if cuda:
                results["onnx_device_io"] = xrt.bench(path, policies=[("default", {})], device=device, feeds=sample,
                                                      warmup=warmup, repeat=repeat, io="device", baseline=True)
        if "torch" in engines:
            # one interleaved loop: norms kept float32 (the engine's default "cast") and every weight cast ("cast-all",
            # the same numerics as the bare module.half() / .bfloat16()), each with its bare twin
            example = tuple(torch.from_numpy(sample[n]) for n in names)
            cast = {"example_inputs": example}
            cast_all = {"example_inputs": example, "precision_mode": "cast-all"}
            pairs = [("torch", (label, p), cast) for label, p in torch_policies(cuda)]
            pairs += [("torch", (f"{label}-castall", p), cast_all) for label, p in torch_policies(cuda) if label != "default"]
            results["torch"] = xrt.bench(module, pairs=pairs, device=device, feeds=sample, warmup=warmup,
                                         repeat=repeat, baseline=True)
    return summarise(name, batch, results)


def _p50(result: Any, label: str) -> float | None:
    if result is None:
        return None
    hit = next((r for r in result.rows if r.label == label), None)
    return hit.p50_ms if hit is not None else None


def _least(result: Any, *labels: str) -> float | None:
    """The fastest of the bare rows ``labels`` (the bare twins of a cast and a cast-all policy are the same loop)."""
    return min((v for v in (_p50(result, label) for label in labels) if v), default=None)


def _fastest(result: Any, engine: str) -> Any:
    rows = [r for r in (result.rows if result else []) if r.kind == "xpuruntime" and r.engine == engine and r.p50_ms]
    return min(rows, key=lambda r: r.p50_ms) if rows else None


def summarise(name: str, batch: int, results: dict[str, Any]) -> dict[str, Any]:
    onnx, dio, tor = results.get("onnx"), results.get("onnx_device_io"), results.get("torch")
    ort_best, ov_best = _fastest(onnx, "onnxruntime"), _fastest(onnx, "openvino")
    torch_best = _fastest(tor, "torch")
    alternatives = {
        "bare ORT defaults": _p50(onnx, "bare onnxruntime:default"),
        "bare ORT IO binding": _p50(dio, "bare onnxruntime:default"),
        "torch eager": _least(tor, "bare torch:fp16", "bare torch:fp16-castall", "bare torch:bf16",
                              "bare torch:bf16-castall", "bare torch:default"),
        "torch.compile reduce-overhead": _least(tor, "bare torch:fp16-reduce-overhead",
                                                "bare torch:fp16-reduce-overhead-castall"),
        "bare OpenVINO defaults": _p50(onnx, "bare openvino:default"),
    }
    ours = [r for r in (ort_best, ov_best, torch_best) if r is not None]
    best = min(ours, key=lambda r: r.p50_ms) if ours else None
    alt = min((v for v in alternatives.values() if v), default=None)
    return {"model": name, "batch": batch, "alternatives_ms": alternatives,
            "xpuruntime_best_ort_ms": ort_best.p50_ms if ort_best else None,
            "xpuruntime_best_torch_ms": torch_best.p50_ms if torch_best else None,
            "xpuruntime_best_openvino_ms": ov_best.p50_ms if ov_best else None,
            "winner": best.label if best else None,
            "ratio_best_alternative_over_xpuruntime": (alt / best.p50_ms) if best and alt else None,
            "details": {k: v.to_dict() for k, v in results.items()}}


def print_table(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="xpuruntime best vs the best alternative (p50 ms; ratio >= 1.00: xpuruntime at least as fast)")
    alt_cols = list(rows[0]["alternatives_ms"]) if rows else []
    for col in ("model", "batch", *alt_cols, "xrt best ORT", "xrt best OpenVINO", "xrt best torch", "winner", "ratio"):
        table.add_column(col)
    fmt = lambda v: "" if v is None else f"{v:.3f}"  # noqa: E731
    for r in rows:
        table.add_row(r["model"], str(r["batch"]), *[fmt(r["alternatives_ms"][c]) for c in alt_cols],
                      fmt(r["xpuruntime_best_ort_ms"]), fmt(r["xpuruntime_best_openvino_ms"]),
                      fmt(r["xpuruntime_best_torch_ms"]), r["winner"] or "",
                      "" if r["ratio_best_alternative_over_xpuruntime"] is None else
                      f"{r['ratio_best_alternative_over_xpuruntime']:.2f}")
    Console(width=220).print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--engines", default=None, help="default: onnxruntime,torch (+openvino on the CPU)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    cpu = not args.device.startswith("cuda")
    engines = (args.engines or ("onnxruntime,openvino,torch" if cpu else "onnxruntime,torch")).split(",")
    rows = []
    for name in args.models.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            start = time.perf_counter()
            rows.append(row(name, batch, args.device, args.warmup, args.repeat, engines))
            print(f"{name} batch {batch}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    print_table(rows)
    out = Path(os.environ.get("OUT") or Path(__file__).parent / "results")
    tag = args.models.replace(",", "+") + "_b" + args.batches.replace(",", "+")
    write_json(out / f"bench_models_{'cpu' if cpu else 'cuda'}_{tag}.json", {
        "date": datetime.date.today().isoformat(), "device": _device(args.device), "python": platform.python_version(),
        "versions": rows[0]["details"][next(iter(rows[0]["details"]))]["versions"] if rows else {},
        "settings": {"warmup": args.warmup, "repeat": args.repeat, "engines": engines}, "rows": rows})


def _device(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(0)
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


if __name__ == "__main__":
    main()
