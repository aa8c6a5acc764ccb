#!/usr/bin/env bash
# GPU check of the inference worker, for one CUDA machine; finishes in well under 5 minutes.
#   bench/gpu_check.sh            (from the repository root, with the project's .venv set up by ./dev setup)
# Measures the fusion model on CUDA for batch sizes 1..256 (items/s, p95 latency, vs 1-thread CPU),
# checks CPU and CUDA outputs agree (max abs diff <= 1e-4, same decisions), and runs the engine on
# generated media with the fusion model on CPU and on CUDA (same event ids and flags).
# Exit status: 0 all agree, 1 disagreement, 2 no CUDA device. `bench/gpu_check.sh --dry-run-cpu` runs every
# step with the CPU in place of CUDA (to check the script on a machine without a GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
[ -x "$py" ] || py=python3
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "nvidia-smi not found"
exec timeout 280 "$py" -m bench.gpu_fusion "$@"
