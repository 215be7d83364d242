#!/usr/bin/env bash
# Training and inference throughput and MFU of DeepLabV3-ResNet50 under JAX on
# one GPU: bf16, output stride 16, 513x513, batch 16.
# Needs keras>=3.14, wrapt and jax[cuda]; TensorFlow is not used.
# Usage: benchmarks/gpu.sh [extra args for benchmarks.accelerator]
# Writes benchmarks/gpu_results.json.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python3 -c "import keras, jax, wrapt" 2>/dev/null; then
    echo "gpu.sh: needs keras, wrapt and jax importable by python3;" \
         "install with: pip install 'keras>=3.14' wrapt 'jax[cuda12]'" >&2
    exit 2
fi
python3 -c "import jax; print('devices:', jax.devices())"
KERAS_BACKEND=jax PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" \
    python3 -m benchmarks.accelerator \
    --size 513 --batch 16 --output-stride 16 --precision mixed_bfloat16 \
    --out benchmarks/gpu_results.json "$@"
