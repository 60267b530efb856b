#!/usr/bin/env bash
# The one prepared GPU check (issue 14): on a lent CUDA machine with only PyTorch, install co2s[train,export]
# without touching its torch, then run benchmarks/gpu_check.py into the folder given (e.g. "$OUT").
# Usage: benchmarks/gpu_check.sh OUT [gpu_check.py options]   (under 8 minutes on one H200-class GPU)
set -euo pipefail
out=${1:?usage: benchmarks/gpu_check.sh OUT [--preset paper|tiny]}
shift
cd "$(dirname "$0")/.."
python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device visible to PyTorch')"
# the machine's own torch stays: install co2s and its other dependencies around it
python3 -m pip install -q --no-deps -e .
python3 -m pip install -q timm open_clip_torch pyyaml tensorboard safetensors onnx onnxscript onnxruntime click tqdm
timeout 480 python3 benchmarks/gpu_check.py "$out" "$@"
