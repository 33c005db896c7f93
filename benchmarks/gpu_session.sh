#!/usr/bin/env bash
# On the GPU machine: install the staged wheels, run the gpu-marked tests and the GPU benchmarks.
# Expects /tmp/stage/part* (the split onnxruntime-gpu wheel) and .stage/wheels (pydantic, pytest, ...).
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
whl=/tmp/stage/onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl
if [[ ! -d /tmp/ortsite/onnxruntime ]]; then
  cat /tmp/stage/part* > "$whl" && python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/ortsite "$whl"
fi
[[ -d /tmp/site/pydantic ]] || python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .stage/wheels/*.whl
export PYTHONPATH=$PWD/src:/tmp/ortsite:/tmp/site:${PYTHONPATH:-} PYTHONUNBUFFERED=1
python3 -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())"
python3 -m pytest ${GPU_TESTS:-tests/gpu} -v -s -rs -p no:cacheprovider 2>&1 | tee "$OUT/gpu_tests.log"
python3 -m xpuruntime demo 2>&1 | tee "$OUT/demo_gpu.txt" | tail -40
for b in ${BENCH:-benchmarks/bench_ort_gpu_iobinding.py benchmarks/bench_ort_precision_gpu.py}; do
  [[ -f $b ]] && python3 "$b" --json "$OUT/$(basename "$b" .py).json" 2>&1 | tee "$OUT/$(basename "$b" .py).log" | tail -25
done
python3 -m xpuruntime devices; python3 -m xpuruntime fingerprint --json > "$OUT/fingerprint_gpu.json"
