#!/usr/bin/env bash
# On the GPU machine, after the onnxruntime-gpu parts are in /tmp/stage: every gpu-marked test, then the GPU
# benchmarks. Carry .stage/wheels (pydantic, pytest, ...) and .stage/nvmath (nvmath-python).
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
whl=/tmp/stage/onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl
if [[ ! -d /tmp/ortsite/onnxruntime ]]; then
  cat /tmp/stage/part* > "$whl" && python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/ortsite "$whl"
fi
[[ -d /tmp/site/pydantic ]] || python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site \
  .stage/wheels/*.whl .stage/nvmath/*.whl
export PYTHONPATH=$PWD/src:/tmp/ortsite:/tmp/site:${PYTHONPATH:-} PYTHONUNBUFFERED=1
python3 -c "import onnxruntime as o, nvmath; print('onnxruntime', o.__version__, o.get_available_providers(), 'nvmath', nvmath.__version__)"
python3 -m pytest tests/gpu -q -rs -p no:cacheprovider 2>&1 | tee "$OUT/gpu_tests_all.log" | grep -vE "^\s*$" | tail -${TAIL:-25}
run() { local name=$1; shift; timeout "${LIMIT:-240}" python3 "$@" 2>&1 | tee "$OUT/$name.log" | tail -${BTAIL:-22}; }
run tuning_gpu benchmarks/bench_tuning_gpu.py ${TUNE_ARGS:-} --json "$OUT/tuning_gpu.json"
run triton_layernorm_gpu benchmarks/bench_triton_layernorm_gpu.py --json "$OUT/triton_layernorm_gpu.json"
