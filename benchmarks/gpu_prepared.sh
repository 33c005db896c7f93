#!/usr/bin/env bash
# Prepared runs (session.prepare) on one CUDA GPU: the layer-by-layer bisect of one sub-millisecond call (the hand
# loop over xpuruntime's own engine object, the prepared run's lean call, prepared(), prepared(feeds), run()) and
# the overhead table with --call both (run and prepared rows in the same rounds). ONNX Runtime GPU staged at
# /tmp/ortsite for the ort rows; JSON of the overhead tables to $OUT.
#   OUT=/some/dir bash benchmarks/gpu_prepared.sh [ort|torch]
set -uo pipefail
cd "$(dirname "$0")/.."
WHAT="${1:-torch}"
export PYTHONPATH="/tmp/ortsite:src:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
export TORCHINDUCTOR_CACHE_DIR="${TORCHINDUCTOR_CACHE_DIR:-/tmp/inductor-cache}"
P="python3 benchmarks/profile_run_paths.py --bisect --model minilm --batch 1 --rounds ${ROUNDS:-400}"
if [[ $WHAT == ort ]]; then
  $P --engine onnxruntime --execution '{"precision": "fp16", "fusions": "bert", "cuda_graphs": true, "fixed_shapes": {"input_ids": [1, 128], "attention_mask": [1, 128]}}' 2>&1 | grep -v Warn | tail -16
  MODELS="${MODELS:-minilm,bert}" REPEAT="${REPEAT:-400}" bash benchmarks/gpu_overhead.sh ort 2>&1 | grep -v Warn | tail -16
fi
if [[ $WHAT == torch ]]; then
  $P --engine torch --execution '{"precision": "fp16", "static_shape": true, "compile": "default", "cuda_graphs": true}' 2>&1 | grep -v Warn | tail -18
  MODELS="${MODELS:-minilm,bert}" REPEAT="${REPEAT:-400}" bash benchmarks/gpu_overhead.sh torch 2>&1 | grep -v Warn | tail -20
fi
