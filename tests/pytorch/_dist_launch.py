"""Launch ``_dist_worker.py`` under torchrun and read what each rank saw (used by the CPU and the GPU tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

WORKER = Path(__file__).with_name("_dist_worker.py")
SRC = Path(__file__).resolve().parents[2] / "src"


def launch(out: Path, backend: str = "gloo", nproc: int = 2, timeout: int = 120, strict: bool = True) -> list[dict]:
    """Run the worker on ``nproc`` ranks under torchrun; each rank's findings. ``strict``: no scenario crashed."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1"}
    if backend == "gloo":  # the CPU scenarios stay on the CPU on a machine with GPUs as well
        env["CUDA_VISIBLE_DEVICES"] = ""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(WORKER), str(out), backend]
    done = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(nproc)]
    for rank in ranks if strict else []:
        crashed = {k: v["traceback"] for k, v in rank.items() if isinstance(v, dict) and "crashed" in v}
        assert not crashed, crashed
    return ranks
