#!/usr/bin/env bash
# Staged CUDA host I/O on and off (XPURUNTIME_STAGED_IO), one after the other on one machine: the overhead tables of
# gpu_overhead.sh twice, JSON tagged _staged and _unstaged. Staging is the torch engine's (captured graphs); the ort
# tables measured the same idea for ONNX Runtime's CUDA-graph binding (removed: it was slower there, BENCHMARKS.md).
#   OUT=/some/dir bash benchmarks/gpu_staged.sh [torch|ort] [on|off|both]
set -uo pipefail
cd "$(dirname "$0")/.."
WHAT="${1:-torch}"
WHICH="${2:-both}"
if [[ $WHICH == on || $WHICH == both ]]; then
  echo "== staged I/O on"
  XPURUNTIME_STAGED_IO=1 TAG_SUFFIX=_staged bash benchmarks/gpu_overhead.sh "$WHAT" 2>&1 | grep -v Warn | tail -22
fi
if [[ $WHICH == off || $WHICH == both ]]; then
  echo "== staged I/O off"
  XPURUNTIME_STAGED_IO=0 TAG_SUFFIX=_unstaged bash benchmarks/gpu_overhead.sh "$WHAT" 2>&1 | grep -v Warn | tail -22
fi
