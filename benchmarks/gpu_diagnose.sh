#!/usr/bin/env bash
# Per-call diagnosis on one CUDA GPU: where xpuruntime's time goes against the bare engine, and why captured
# models can run slower than eager. ONNX Runtime GPU staged at /tmp/ortsite (else its rows fail and the rest runs).
#   OUT=/some/dir bash benchmarks/gpu_diagnose.sh [torch|ort|kernels|bisect|bisect-torch|all]
# bisect: xpuruntime's call layer by layer against the bare loops (profile_run_paths.py --bisect)
set -uo pipefail
cd "$(dirname "$0")/.."
WHAT="${1:-all}"
export PYTHONPATH="/tmp/ortsite:src:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
export TORCHINDUCTOR_CACHE_DIR="${TORCHINDUCTOR_CACHE_DIR:-/tmp/inductor-cache}"
P="python3 benchmarks/profile_run_paths.py --rounds ${ROUNDS:-200}"
RO='{"precision": "fp16", "static_shape": true, "compile": "reduce-overhead"}'
CG='{"precision": "fp16", "static_shape": true, "compile": "default", "cuda_graphs": true}'
if [[ $WHAT == torch || $WHAT == all ]]; then
  $P --engine torch --model gpt2-128 --batch 32 --execution "$RO" --cprofile 2>&1 | head -70
  $P --engine torch --model gpt2-128 --batch 32 --execution "$CG"
  $P --engine torch --model minilm --batch 1 --execution "$RO" --cprofile 2>&1 | head -70
  $P --engine torch --model minilm --batch 1 --execution "$CG"
fi
if [[ $WHAT == ort || $WHAT == all ]]; then
  $P --engine onnxruntime --model minilm --batch 1 --io device --execution '{}' --cprofile 2>&1 | head -70
  $P --engine onnxruntime --model minilm --batch 1 --execution '{"precision": "fp16", "fusions": "bert", "cuda_graphs": true, "fixed_shapes": {"input_ids": [1, 128], "attention_mask": [1, 128]}}' --cprofile 2>&1 | head -70
fi
if [[ $WHAT == bisect || $WHAT == bisect-torch ]]; then
  $P --bisect --engine torch --model minilm --batch 1 --execution "$RO"
  $P --bisect --engine torch --model minilm --batch 1 --execution "$CG"
  $P --bisect --engine torch --model minilm --batch 1 --execution '{"precision": "fp16"}'
fi
if [[ $WHAT == bisect ]]; then
  $P --bisect --engine onnxruntime --model minilm --batch 1 --io device --execution '{}'
  $P --bisect --engine onnxruntime --model minilm --batch 1 --execution '{"precision": "fp16", "fusions": "bert", "cuda_graphs": true, "fixed_shapes": {"input_ids": [1, 128], "attention_mask": [1, 128]}}'
fi
if [[ $WHAT == kernels || $WHAT == all ]]; then
  python3 benchmarks/profile_graph_kernels.py --model vit --batch 32
fi
