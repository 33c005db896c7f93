#!/usr/bin/env bash
# On the GPU machine: the torch / Triton side (no onnxruntime-gpu needed). Installs .stage/wheels
# (pydantic, pytest, ...) to /tmp/site, runs the gpu-marked torch and Triton tests, then the benchmarks.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
[[ -d /tmp/site/pydantic ]] || python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .stage/wheels/*.whl
export PYTHONPATH=$PWD/src:/tmp/site:${PYTHONPATH:-} PYTHONUNBUFFERED=1
python3 -m pytest ${GPU_TESTS:-tests/gpu/test_triton_kernels.py tests/gpu/test_pytorch_gpu.py} -q -rs -x -p no:cacheprovider \
  ${PYTEST_ARGS:-} 2>&1 | tee "$OUT/torch_gpu_tests.log" | tail -${TAIL:-40}
for b in ${BENCH:-}; do
  python3 $b 2>&1 | tee "$OUT/$(basename "${b%% *}" .py).log" | tail -30
done
