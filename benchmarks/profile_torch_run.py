"""cProfile of the torch engine's run (fp16, CUDA graphs, cast-all) on MiniLM batch 1: where the host time goes."""
import cProfile, pstats, sys, time, warnings
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent)); sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import torch
import bench_models as bm
import xpuruntime as xrt
warnings.simplefilter("ignore")
m, names = bm.build("minilm"); feeds = bm.feeds("minilm", 1)
ex = tuple(torch.from_numpy(feeds[n]) for n in names)
s = xrt.InferenceSession(m, engine="torch", device="cuda", exec_policy={"precision": "fp16", "static_shape": True, "cuda_graphs": True},
                         engine_options={"example_inputs": ex, "precision_mode": "cast-all"})
eng = s.engine
for _ in range(50): eng.run(feeds)
t = time.perf_counter()
for _ in range(500): eng.run(feeds)
print("run us", (time.perf_counter() - t) / 500 * 1e6)
cProfile.run("for _ in range(1000): eng.run(feeds)", "/tmp/prof")
pstats.Stats("/tmp/prof").sort_stats("tottime").print_stats(22)
