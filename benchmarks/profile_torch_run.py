"""cProfile of the torch engine's run against the bare loop (MiniLM batch 1, fp16 cast-all): where the host time goes.

    PYTHONPATH=src python benchmarks/profile_torch_run.py --device cuda --execution '{"compile": "reduce-overhead"}'
"""
import argparse, cProfile, json, pstats, sys, time, warnings
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent)); sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import torch
import bench_models as bm
import xpuruntime as xrt
from xpuruntime.inference import _bare

p = argparse.ArgumentParser(); p.add_argument("--device", default="cuda"); p.add_argument("--model", default="minilm")
p.add_argument("--execution", default='{"cuda_graphs": true}'); args = p.parse_args()
warnings.simplefilter("ignore")
m, names = bm.build(args.model); feeds = bm.feeds(args.model, 1)
ex = tuple(torch.from_numpy(feeds[n]) for n in names)
s = xrt.InferenceSession(m, engine="torch", device=args.device, exec_policy={"precision": "fp16", "static_shape": True, **json.loads(args.execution)},
                         engine_options={"example_inputs": ex, "precision_mode": "cast-all"})
eng = s.engine
make, _ = _bare.torch(eng)
bare = make(feeds, "host")
ours = lambda: eng.run(feeds)  # noqa: E731
for _ in range(30): ours(); bare()
for rnd in range(3):
    for name, f in (("ours", ours), ("bare", bare)):
        t = time.perf_counter()
        for _ in range(300): f()
        print(name, round((time.perf_counter() - t) / 300 * 1e6, 1), "us", end="   ")
    print()
for name, f in (("ours", ours), ("bare", bare)):
    prof = cProfile.Profile(); prof.enable()
    for _ in range(500): f()
    prof.disable()
    print("=====", name); pstats.Stats(prof).sort_stats("tottime").print_stats(16)
