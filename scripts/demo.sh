#!/usr/bin/env bash
# `make demo`: the main job end to end — train -> export -> infer -> bench -> flight -> report — on a CPU with no
# weights and no data (synthetic scenes; the flight: scripts/demo_flight.sh). With real data and weights:
#   make demo DATASET=potsdam DATA=/data/potsdam CLIP=ViT-B-16.pt DINOV3=dinov3_vitb16_pretrain_lvd1689m.pth
set -euo pipefail
OUT=${1:-demo_out}
DATASET=${DATASET:-synthetic}
ITERS=${ITERS:-}
SCENE=${SCENE:-1536x2048}      # height x width of the large scene co2s-infer segments
BENCH_ITERS=${BENCH_ITERS:-20}
mkdir -p "$OUT"
start=$(date +%s)
step() { printf '\n== %s (%ss)\n' "$1" $(( $(date +%s) - start )); }

train_args=(--dataset "$DATASET" --out "$OUT/run" --seed 0)
if [[ -n "${DATA:-}" || -n "${CLIP:-}" || -n "${DINOV3:-}" ]]; then
  train_args+=(--preset paper)
  [[ -n "${DATA:-}" ]] && train_args+=(--data-root "$DATA")
  [[ -n "${CLIP:-}" ]] && train_args+=(--clip-weights "$CLIP")
  [[ -n "${DINOV3:-}" ]] && train_args+=(--dinov3-weights "$DINOV3")
  [[ -n "$ITERS" ]] && train_args+=(--iters "$ITERS")
else
  # The tiny preset: same code path at a width a laptop CPU trains in a few minutes.
  train_args+=(--preset tiny --iters "${ITERS:-1200}" --eval-every 300 --num-labeled 16 --num-unlabeled 144 --num-val 16)
fi
step "train: co2s-train ${train_args[*]}"
rm -rf "$OUT/run"
co2s-train "${train_args[@]}"

export_args=(--checkpoint "$OUT/run/best.pt" --out "$OUT/bundle" --force --calib-count 16 --dynamic-batch 1:4:8)
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  export_args+=(--engine fp16 --engine int8)
fi
# EXPORT_EXTRA: more co2s-export options, e.g. --allow-degraded for a model trained only a few iterations.
export_args+=(${EXPORT_EXTRA:-})
step "export: co2s-export ${export_args[*]}"
# 4: partial export (a precision failed its parity gate and was left out), 3: engines deferred to the target GPU;
# either way the bundle is written and usable, and the later steps use only the precisions it has.
export_status=0
co2s-export "${export_args[@]}" || export_status=$?
case $export_status in
  0) ;;
  4) echo "note: partial export (exit 4): the bundle is written without the precision named above" ;;
  3) echo "note: engines deferred to the target GPU (exit 3): the bundle is written with its ONNX models" ;;
  *) exit "$export_status" ;;
esac

step "a large synthetic scene to segment"
python - "$OUT/scene.png" "$SCENE" <<'PY'
import sys
from PIL import Image
from co2s.train.data import make_large_scene
height, width = map(int, sys.argv[2].split("x"))
image, _ = make_large_scene(seed=2024, height=height, width=width)
Image.fromarray(image).save(sys.argv[1])
PY

step "infer: co2s-infer $OUT/bundle $OUT/scene.png --out $OUT --profile"
co2s-infer "$OUT/bundle" "$OUT/scene.png" --out "$OUT" --profile

step "bench: co2s-bench $OUT/bundle --precision all"
co2s-bench "$OUT/bundle" --precision all --batch 1,4 --calls "$BENCH_ITERS" --warmup 3 \
  --json "$OUT/bench.json" --markdown "$OUT/bench.md"

step "flight: scripts/demo_flight.sh $OUT $OUT/bundle"
bash "$(dirname "$0")/demo_flight.sh" "$OUT" "$OUT/bundle"

step "report"
python "$(dirname "$0")/demo_report.py" "$OUT" --wall-seconds $(( $(date +%s) - start ))
