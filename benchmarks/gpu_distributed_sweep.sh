#!/usr/bin/env bash
# On the GPU machine: the policy's DDP step under communication variants (bench_distributed_gpu.py --sweep), first on
# every visible GPU (N), then on 1 GPU (the reference, plus the N-GPU combination), then the merged table; last,
# the gloo CPU distributed tests (they must pass on a machine with GPUs too). About 4-6 minutes on 4 H100s.
#   PYTHONPATH=src OUT=$OUT bash benchmarks/gpu_distributed_sweep.sh      (pydantic must be importable: stage it)
# Knobs: OUT (results folder), LIMIT (s per launch, default 200), SWEEP (variant names or all), SWEEP_ARGS.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 PYTHONUNBUFFERED=1
export PYTHONPATH=${PYTHONPATH:-src}
OUT=${OUT:-benchmarks/results}; mkdir -p "$OUT"
N=$(python3 -c "import torch; print(torch.cuda.device_count())")
echo "visible GPUs: $N; nccl $(python3 -c 'import torch; print(torch.cuda.nccl.version())'); $(date -u +%FT%TZ)"
launch() {
  local n=$1; shift
  timeout -k 10 "${LIMIT:-200}" python3 -m torch.distributed.run --standalone --nproc_per_node "$n" \
    benchmarks/bench_distributed_gpu.py --sweep "${SWEEP:-all}" --pg-timeout-s 120 \
    --json "$OUT/sweep_${n}gpu.json" ${SWEEP_ARGS:-} "$@" > "$OUT/sweep_${n}gpu.log" 2>&1
  echo "launch $n GPU: rc $?"; grep -E "GPU sweep|tokens/s|ERROR|wrote|Error|error" "$OUT/sweep_${n}gpu.log" \
    | grep -v USDT | tail -"${TAIL:-20}"
}
files=()
if [[ $N -gt 1 ]]; then launch "$N"; [[ -f "$OUT/sweep_${N}gpu.json" ]] && files+=("$OUT/sweep_${N}gpu.json"); fi
launch 1 --combo-from "$OUT/sweep_${N}gpu.json"
[[ -f "$OUT/sweep_1gpu.json" ]] && files=("$OUT/sweep_1gpu.json" "${files[@]}")
if [[ ${#files[@]} -gt 0 ]]; then
  python3 benchmarks/bench_distributed_gpu.py --merge "${files[@]}" --json "$OUT/distributed_sweep_${N}.json"
fi
timeout 90 python3 -m pytest tests/pytorch/test_distributed.py -q -p no:cacheprovider 2>&1 | tail -4
