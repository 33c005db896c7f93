#!/usr/bin/env bash
# What control costs on one CUDA GPU: bench_overhead.py (xpuruntime against its bare twin, interleaved in an order
# shuffled each round, overhead = median of same-round ratios with a 95% bootstrap interval). ONNX Runtime GPU
# staged at /tmp/ortsite (else its rows fail and the rest runs); JSON to $OUT.
#   OUT=/some/dir bash benchmarks/gpu_overhead.sh [torch|ort|ort-device|all]
set -uo pipefail
cd "$(dirname "$0")/.."
WHAT="${1:-all}"
export PYTHONPATH="/tmp/ortsite:src:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
export TORCHINDUCTOR_CACHE_DIR="${TORCHINDUCTOR_CACHE_DIR:-/tmp/inductor-cache}"
B="python3 benchmarks/bench_overhead.py --device cuda --warmup 30 --repeat ${REPEAT:-600} --batches ${BATCHES:-1}"
MODELS="${MODELS:-minilm,bert}"
if [[ $WHAT == ort || $WHAT == all ]]; then
  $B --engines onnxruntime --models "$MODELS" --ort-configs default,fp16-fusions,fp16-fusions-graphs --tag "ort${TAG_SUFFIX:-}"
fi
if [[ $WHAT == ort-device || $WHAT == all ]]; then
  $B --engines onnxruntime --models "$MODELS" --ort-configs default,fp16-fusions --io device --tag "ort${TAG_SUFFIX:-}"
fi
if [[ $WHAT == torch || $WHAT == all ]]; then
  $B --engines torch --models "$MODELS" --torch-configs "${TORCH_CONFIGS:-fp16,fp16-graphs,fp16-compile-graphs,fp16-reduce-overhead}" --tag "torch${TAG_SUFFIX:-}"
fi
