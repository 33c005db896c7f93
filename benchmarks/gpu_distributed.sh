#!/usr/bin/env bash
# On the GPU machine: the GPT-2-small training step on 1 GPU and on every visible GPU (N), DDP and FSDP2, eager
# defaults against the policy (bench_distributed_gpu.py under torchrun), the merged table, then the gpu-marked
# distributed tests. NVLink multicast stays off in every process started here.
#   PYTHONPATH=src bash benchmarks/gpu_distributed.sh          (pydantic must be importable: stage it first)
# Knobs: OUT (results folder), LIMIT (s per launch), BENCH_ARGS (e.g. "--model hf"), SKIP_ONE=1, TESTS=0.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 PYTHONUNBUFFERED=1
export PYTHONPATH=${PYTHONPATH:-src}
OUT=${OUT:-benchmarks/results}; mkdir -p "$OUT"
N=$(python3 -c "import torch; print(torch.cuda.device_count())")
echo "visible GPUs: $N; NCCL_NVLS_ENABLE=$NCCL_NVLS_ENABLE TORCH_SYMM_MEM_DISABLE_MULTICAST=$TORCH_SYMM_MEM_DISABLE_MULTICAST"
launch() {
  local n=$1
  timeout "${LIMIT:-300}" python3 -m torch.distributed.run --standalone --nproc_per_node "$n" \
    benchmarks/bench_distributed_gpu.py --json "$OUT/distributed_${n}gpu.json" ${BENCH_ARGS:-} 2>&1 \
    | tee "$OUT/distributed_${n}gpu.log" | grep -vE "^\s*$|USDT" | tail -"${TAIL:-14}"
}
files=()
if [[ ${SKIP_ONE:-0} != 1 ]]; then launch 1; fi
[[ -f "$OUT/distributed_1gpu.json" ]] && files+=("$OUT/distributed_1gpu.json")
if [[ $N -gt 1 ]]; then launch "$N"; [[ -f "$OUT/distributed_${N}gpu.json" ]] && files+=("$OUT/distributed_${N}gpu.json"); fi
if [[ ${#files[@]} -gt 0 ]]; then
  python3 benchmarks/bench_distributed_gpu.py --merge "${files[@]}" --json "$OUT/distributed_gpu_${N}.json"
fi
if [[ ${TESTS:-1} == 1 ]]; then
  timeout 360 python3 -m pytest tests/gpu/test_distributed_gpu.py -q -rs -p no:cacheprovider 2>&1 \
    | tee "$OUT/distributed_gpu_tests.log" | tail -"${TAIL:-14}"
fi
