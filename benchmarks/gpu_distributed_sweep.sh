#!/usr/bin/env bash
# On the GPU machine: the policy's DDP step under communication variants (bench_distributed_gpu.py --sweep), first on
# every visible GPU (N), then on 1 GPU (the reference, plus the N-GPU combination), then the merged table; last,
# the gloo CPU distributed tests (they must pass on a machine with GPUs too). About 4-6 minutes on 4 H100s.
#   OUT=$OUT bash benchmarks/gpu_distributed_sweep.sh         (stages .stage/wheels -- pydantic -- to /tmp/site)
# Knobs: OUT (results folder), SWEEP (variant names of _dist_sweep.VARIANTS, comma-separated, or all; control is
# always measured), ONE_SWEEP (variants of the 1-GPU launch; set, it also skips the N-GPU combination there),
# LIMIT (s per launch, default 200), LIMIT1 (s for the 1-GPU launch, default LIMIT), SWEEP_ARGS, GPU_TESTS=1 (also
# the gpu-marked NCCL tests), TESTS=0 (no tests).
# The last-bucket and compile variants of issue 14 (< 8 minutes on 4 GPUs, the compile variant last in its own group):
#   OUT=$OUT SWEEP=control,bf16-last,bf16-last-bucket50,compile ONE_SWEEP=control LIMIT=330 LIMIT1=100 \
#     SWEEP_ARGS="--alive 2" bash benchmarks/gpu_distributed_sweep.sh
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 PYTHONUNBUFFERED=1
if ! python3 -c "import pydantic" 2>/dev/null && [[ -d .stage/wheels ]]; then
  [[ -d /tmp/site/pydantic ]] || python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site \
    .stage/wheels/*.whl
fi
export PYTHONPATH=$PWD/src:/tmp/site${PYTHONPATH:+:$PYTHONPATH}
OUT=${OUT:-benchmarks/results}; mkdir -p "$OUT"
N=$(python3 -c "import torch; print(torch.cuda.device_count())")
echo "visible GPUs: $N; nccl $(python3 -c 'import torch; print(torch.cuda.nccl.version())'); $(date -u +%FT%TZ)"
echo "sweep: ${SWEEP:-all} at $N GPUs; ${ONE_SWEEP:-${SWEEP:-all}} at 1 GPU"
launch() {
  local n=$1 names=$2 limit=$3; shift 3
  timeout -k 10 "$limit" python3 -m torch.distributed.run --standalone --nproc_per_node "$n" \
    benchmarks/bench_distributed_gpu.py --sweep "$names" --pg-timeout-s 120 \
    --json "$OUT/sweep_${n}gpu.json" ${SWEEP_ARGS:-} "$@" > "$OUT/sweep_${n}gpu.log" 2>&1
  echo "launch $n GPU: rc $?"; grep -E "GPU sweep|tokens/s|ERROR|wrote|Error|error" "$OUT/sweep_${n}gpu.log" \
    | grep -v USDT | tail -"${TAIL:-20}"
}
files=()
if [[ $N -gt 1 ]]; then
  launch "$N" "${SWEEP:-all}" "${LIMIT:-200}"
  [[ -f "$OUT/sweep_${N}gpu.json" ]] && files+=("$OUT/sweep_${N}gpu.json")
fi
if [[ -n ${ONE_SWEEP:-} ]]; then
  launch 1 "$ONE_SWEEP" "${LIMIT1:-${LIMIT:-200}}"
else
  launch 1 "${SWEEP:-all}" "${LIMIT1:-${LIMIT:-200}}" --combo-from "$OUT/sweep_${N}gpu.json"
fi
[[ -f "$OUT/sweep_1gpu.json" ]] && files=("$OUT/sweep_1gpu.json" "${files[@]}")
if [[ ${#files[@]} -gt 0 ]]; then
  python3 benchmarks/bench_distributed_gpu.py --merge "${files[@]}" --json "$OUT/distributed_sweep_${N}.json"
fi
if [[ ${TESTS:-1} != 0 ]]; then
  timeout 90 python3 -m pytest tests/pytorch/test_distributed.py -q -p no:cacheprovider 2>&1 | tail -4
  if [[ ${GPU_TESTS:-0} == 1 ]]; then
    timeout 240 python3 -m pytest tests/gpu/test_distributed_gpu.py -q -p no:cacheprovider 2>&1 | tail -6
  fi
fi
