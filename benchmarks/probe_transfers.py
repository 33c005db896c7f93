"""What a host-I/O CUDA-graph call spends on its transfers, and what fewer synchronisations would save (diagnosis).

A hand-written CUDA-graph loop with numpy I/O (ONNX Runtime's documented recipe, torch's ``static.copy_`` +
``replay`` + ``.cpu()``) makes one synchronous copy per input and one per output: each waits for the device.
This probe times the I/O of a BERT-shaped call (three int64 ``[batch, 128]`` inputs, fp16 ``[batch, 128, 384]``
and ``[batch, 384]`` outputs) around a tiny captured graph, interleaved call by call in a shuffled order:

- torch: per-input pageable copies (the hand loop) against pinned staging with asynchronous copies, one packed
  copy, and asynchronous output copies with one synchronisation;
- ONNX Runtime (when its CUDA build is importable): one ``update_inplace`` per input against the inputs packed
  in one host array and one ``update_inplace``.

    PYTHONPATH=/tmp/ortsite:src python benchmarks/probe_transfers.py [--rounds 2000] [--batch 1 32]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from typing import Any, Callable

import numpy as np

ALIGN = 256


def _layout(shapes: list[tuple[int, ...]], itemsize: int) -> tuple[list[int], int]:
    offsets, total = [], 0
    for shape in shapes:
        offsets.append(total)
        total += -(-int(np.prod(shape)) * itemsize // ALIGN) * ALIGN
    return offsets, total


def torch_variants(batch: int) -> dict[str, Callable[[], Any]]:
    import torch

    dev = torch.device("cuda")
    shapes = [(batch, 128)] * 3
    feeds = [np.random.randint(0, 1000, size=s, dtype=np.int64) for s in shapes]
    weight = torch.randn(1000, 384, device=dev, dtype=torch.float16)

    def body(a: Any, b: Any, c: Any) -> tuple[Any, Any]:
        h = weight[a] + weight[b] + weight[c]
        return h, h[:, 0]

    def capture(statics: list[Any]) -> tuple[Any, tuple[Any, Any]]:
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                body(*statics)
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            outs = body(*statics)
        return g, outs

    # the hand loop: separate static inputs, pageable copies, .cpu() per output
    plain = [torch.zeros(s, dtype=torch.int64, device=dev) for s in shapes]
    g1, outs1 = capture(plain)

    def hand() -> Any:
        for static, x in zip(plain, feeds):
            static.copy_(torch.from_numpy(x))
        g1.replay()
        return [t.cpu().numpy() for t in outs1]

    pins = [torch.empty(s, dtype=torch.int64, pin_memory=True) for s in shapes]
    pin_np = [p.numpy() for p in pins]

    def pinned_async() -> Any:
        for view, x in zip(pin_np, feeds):
            np.copyto(view, x)
        for static, p in zip(plain, pins):
            static.copy_(p, non_blocking=True)
        g1.replay()
        return [t.cpu().numpy() for t in outs1]

    # packed: the static inputs are views of one device buffer, filled by one copy from one pinned buffer
    offsets, total = _layout(shapes, 8)
    dev_buf = torch.zeros(total, dtype=torch.uint8, device=dev)
    host_buf = torch.zeros(total, dtype=torch.uint8, pin_memory=True)
    packed = [dev_buf[o:o + int(np.prod(s)) * 8].view(torch.int64).view(s) for o, s in zip(offsets, shapes)]
    host_np = host_buf.numpy()
    host_views = [host_np[o:o + int(np.prod(s)) * 8].view(np.int64).reshape(s) for o, s in zip(offsets, shapes)]
    g2, outs2 = capture(packed)

    def packed_in() -> Any:
        for view, x in zip(host_views, feeds):
            np.copyto(view, x)
        dev_buf.copy_(host_buf, non_blocking=True)
        g2.replay()
        return [t.cpu().numpy() for t in outs2]

    stream = torch.cuda.current_stream()

    def packed_in_async_out() -> Any:
        for view, x in zip(host_views, feeds):
            np.copyto(view, x)
        dev_buf.copy_(host_buf, non_blocking=True)
        g2.replay()
        got = [t.to("cpu", non_blocking=True) for t in outs2]
        stream.synchronize()
        return [t.numpy() for t in got]

    out_pins = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for t in outs2]

    def packed_in_pinned_out_copy() -> Any:
        for view, x in zip(host_views, feeds):
            np.copyto(view, x)
        dev_buf.copy_(host_buf, non_blocking=True)
        g2.replay()
        for p, t in zip(out_pins, outs2):
            p.copy_(t, non_blocking=True)
        stream.synchronize()
        return [p.numpy().copy() for p in out_pins]

    ref = [t.copy() for t in hand()]
    for fn in (pinned_async, packed_in, packed_in_async_out, packed_in_pinned_out_copy):
        got = fn()
        assert all(np.array_equal(a, b) for a, b in zip(ref, got)), fn.__name__
    return {"torch hand (pageable copy_ per input, .cpu() per output)": hand,
            "torch pinned staging, async copy per input": pinned_async,
            "torch packed pinned input, one async copy": packed_in,
            "torch packed input + async outputs, one sync": packed_in_async_out,
            "torch packed input + pinned outputs copied": packed_in_pinned_out_copy}


def ort_variants(batch: int) -> dict[str, Callable[[], Any]]:
    try:
        import onnxruntime as ort
    except ImportError:
        return {}
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return {}
    shapes = [(batch, 128)] * 3
    feeds = [np.random.randint(0, 1000, size=s, dtype=np.int64) for s in shapes]
    values = [ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0) for x in feeds]

    def per_input() -> Any:
        for v, x in zip(values, feeds):
            v.update_inplace(x)

    offsets, total = _layout(shapes, 8)
    host = np.zeros(total, dtype=np.uint8)
    views = [host[o:o + int(np.prod(s)) * 8].view(np.int64).reshape(s) for o, s in zip(offsets, shapes)]
    dev = ort.OrtValue.ortvalue_from_numpy(host, "cuda", 0)

    def packed() -> Any:
        for view, x in zip(views, feeds):
            np.copyto(view, x)
        dev.update_inplace(host)

    out_big = ort.OrtValue.ortvalue_from_numpy(np.zeros((batch, 128, 384), np.float16), "cuda", 0)
    out_small = ort.OrtValue.ortvalue_from_numpy(np.zeros((batch, 384), np.float16), "cuda", 0)

    def outputs() -> Any:
        return [out_big.numpy(), out_small.numpy()]

    return {"ort update_inplace per input (3 copies)": per_input,
            "ort inputs packed, one update_inplace": packed,
            "ort numpy() per output (2 copies)": outputs}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=2000)
    p.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    p.add_argument("--json", default="")
    args = p.parse_args()
    import torch

    rows = []
    for batch in args.batch:
        fns = {**torch_variants(batch), **ort_variants(batch)}
        times: dict[str, list[float]] = {k: [] for k in fns}
        names = list(fns)
        for _ in range(50):
            for n in names:
                fns[n]()
        torch.cuda.synchronize()
        rng = random.Random(0)
        for _ in range(args.rounds):
            rng.shuffle(names)
            for n in names:
                start = time.perf_counter()
                fns[n]()
                times[n].append((time.perf_counter() - start) * 1e6)
        for n in fns:
            rows.append({"batch": batch, "variant": n, "p50_us": statistics.median(times[n]),
                         "p10_us": sorted(times[n])[len(times[n]) // 10]})
    print(f"{'batch':>5}  {'p50 us':>8}  {'p10 us':>8}  variant")
    for r in rows:
        print(f"{r['batch']:>5}  {r['p50_us']:8.1f}  {r['p10_us']:8.1f}  {r['variant']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
