#!/usr/bin/env bash
# The benchmark set on one CUDA GPU, one model group per call (each finishes in about 8 minutes or less).
# ONNX Runtime GPU is staged at /tmp/ortsite on the GPU machine; JSON lands in $OUT (else benchmarks/results/).
#   bash benchmarks/bench_models_gpu.sh minilm        # then bert, gpt2-128, gpt2-512, resnet50, vit
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS="${1:-minilm}"
BATCHES="${2:-1,32}"
export PYTHONPATH="/tmp/ortsite:src${PYTHONPATH:+:$PYTHONPATH}"
export TORCHINDUCTOR_CACHE_DIR="${TORCHINDUCTOR_CACHE_DIR:-/tmp/inductor-cache}"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || true
python -c "import onnxruntime as o, torch, transformers as t; print('ort', o.__version__, o.get_available_providers()[:2], 'torch', torch.__version__, 'transformers', t.__version__)"
timeout 560 python benchmarks/bench_models.py --device cuda --models "$MODELS" --batches "$BATCHES" --warmup 10 --repeat 50
