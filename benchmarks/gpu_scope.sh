#!/usr/bin/env bash
# The torch engine's per-run policy scope, piece by piece, on one CUDA GPU (profile_scope.py); torch only.
#   OUT=/some/dir bash benchmarks/gpu_scope.sh
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="src:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
export TORCHINDUCTOR_CACHE_DIR="${TORCHINDUCTOR_CACHE_DIR:-/tmp/inductor-cache}"
P="python3 benchmarks/profile_scope.py --model ${MODEL:-minilm} --device cuda"
$P --execution '{"precision": "fp16", "static_shape": true, "compile": "reduce-overhead"}' --json "${OUT:-/tmp}/scope_ro.json"
$P --execution '{"precision": "fp16"}' --json "${OUT:-/tmp}/scope_eager.json"
$P --execution '{"precision": "fp32"}' --json "${OUT:-/tmp}/scope_fp32.json"
