#!/usr/bin/env bash
# `make demo`: the main job end to end on a CPU with no weights and no data (synthetic scenes).
set -euo pipefail
OUT=${1:-demo_out}
mkdir -p "$OUT"
co2s-train info --preset tiny --num-classes 5
