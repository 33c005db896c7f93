#!/usr/bin/env bash
# On the single-GPU machine, after the ONNX Runtime CUDA parts are in /tmp/stage (see README "GPU machines"):
# install the staged wheels, then run every gpu-marked test, the torch tests, and the GPU conformance report.
# Logs go to $OUT (or benchmarks/results). Each step is capped so the whole call fits in the 10-minute limit.
set -uo pipefail
OUT=${OUT:-benchmarks/results}; mkdir -p "$OUT"
cat /tmp/stage/part* > /tmp/stage/onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/ortsite \
  /tmp/stage/onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl .stage/wheels/*.whl >/dev/null 2>&1
export PYTHONPATH=/tmp/ortsite:src PYTHONUNBUFFERED=1
python3 -c "import onnxruntime as o, torch; print('ort', o.__version__, o.get_available_providers(), 'torch', torch.__version__)"
run() { local name=$1 limit=$2; shift 2; echo "== $name"; timeout "$limit" "$@" > "$OUT/$name.log" 2>&1; echo "rc=$?"; tail -4 "$OUT/$name.log"; }
# no -x: one failure must not hide the rest. The distributed tests need several GPUs (gpu_distributed.sh);
# tests/pytorch/test_distributed.py (gloo on CPU tensors) is excluded here as well.
run gpu_tests 330 python3 -m pytest tests/gpu -q -rfEs -p no:cacheprovider --ignore=tests/gpu/test_distributed_gpu.py \
  --ignore=tests/gpu/test_conformance_gpu.py
run torch_tests 90 python3 -m pytest tests/pytorch -q -rfEs -p no:cacheprovider \
  --ignore=tests/pytorch/test_distributed.py
run conformance_gpu 150 python3 -m pytest tests/gpu/test_conformance_gpu.py -q -rfEs -p no:cacheprovider
