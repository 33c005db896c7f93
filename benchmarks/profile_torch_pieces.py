"""Where the torch engine's per-call time goes, piece by piece, against the bare loop (GPU diagnosis); with
``--cprofile``, cProfile's top entries of the engine's run and of the bare loop.

    PYTHONPATH=src python benchmarks/profile_torch_pieces.py --execution '{"compile": "reduce-overhead"}'
    PYTHONPATH=src python benchmarks/profile_torch_pieces.py --execution '{"cuda_graphs": true}' --cprofile
"""
import argparse, cProfile, json, pstats, sys, time, warnings
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent)); sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import torch
import bench_models as bm
import xpuruntime as xrt
from xpuruntime.inference import _bare

p = argparse.ArgumentParser(); p.add_argument("--device", default="cuda"); p.add_argument("--model", default="minilm")
p.add_argument("--execution", default='{"compile": "reduce-overhead"}'); p.add_argument("--cprofile", action="store_true")
args = p.parse_args()
warnings.simplefilter("ignore")
m, names = bm.build(args.model); feeds = bm.feeds(args.model, 1)
ex = tuple(torch.from_numpy(feeds[n]) for n in names)
s = xrt.InferenceSession(m, engine="torch", device=args.device, exec_policy={"precision": "fp16", "static_shape": True, **json.loads(args.execution)},
                         engine_options={"example_inputs": ex, "precision_mode": "cast-all"})
eng = s.engine
make, _ = _bare.torch(eng)
bare = make(feeds, "host")
checked = eng.check_feeds(feeds, eng._feeds)
dev = [eng._as_tensor(checked[n]) for n in names]
def scoped_forward():
    with eng._scope(receipt=False):
        out = eng._forward(dev)
    return out.cpu()
def forward_only():
    return eng._forward(dev).cpu()
def compiled_only():
    with torch.inference_mode():
        return eng._compiled(*dev).float().cpu()
pieces = {"session.run": lambda: s.run(feeds), "engine.run": lambda: eng.run(feeds),
          "run_impl": lambda: eng.run_impl(checked, eng._output_list, None), "scope+forward+cpu": scoped_forward,
          "forward+cpu": forward_only, "bare": bare}
if eng._compiled is not None:
    pieces["compiled+cpu"] = compiled_only
for f in pieces.values():
    for _ in range(30): f()
res = {k: [] for k in pieces}
for rnd in range(8):
    for k, f in pieces.items():
        t = time.perf_counter()
        for _ in range(100): f()
        res[k].append((time.perf_counter() - t) / 100 * 1e6)
for k, v in res.items():
    v.sort(); print(f"{k:20s} {v[len(v)//2]:8.1f} us")
if args.cprofile:
    for name, f in (("engine.run", pieces["engine.run"]), ("bare", bare)):
        prof = cProfile.Profile(); prof.enable()
        for _ in range(500): f()
        prof.disable()
        print("=====", name); pstats.Stats(prof).sort_stats("tottime").print_stats(16)
