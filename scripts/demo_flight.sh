#!/usr/bin/env bash
# `make demo`'s flight (called by demo.sh; runs on its own too): a synthetic nadir flight, video and telemetry CSV
# (co2s.train.data.flight), through co2s-stream --realtime as the live camera would be: --drop latest processes the
# newest frame and drops (and counts) the older ones, so latency stays bounded however slow the model is.
#   bash scripts/demo_flight.sh OUT BUNDLE        writes OUT/flight.mp4, OUT/flight.csv and co2s-stream's OUT/flight/
# Without PyAV (the [video] extra) the flight is skipped with one line; without the [geo] extra it is flown without
# --telemetry (no footprints). demo_report.py states either in report.md.
set -euo pipefail
OUT=$1
BUNDLE=$2
FLIGHT_SECONDS=${FLIGHT_SECONDS:-10}
FLIGHT_FPS=${FLIGHT_FPS:-10}
FLIGHT_SIZE=${FLIGHT_SIZE:-240x320}  # height x width
HFOV=${HFOV:-60}                      # the camera's horizontal field of view, degrees

if ! python -c 'import av' 2>/dev/null; then
  echo "flight: skipped: PyAV is not installed (pip install 'co2s[video]')"
  exit 0
fi
rm -rf "$OUT/flight"
python -m co2s.train.data.flight "$OUT" --seconds "$FLIGHT_SECONDS" --fps "$FLIGHT_FPS" --size "$FLIGHT_SIZE" \
  --hfov "$HFOV"
stream_args=("$BUNDLE" "$OUT/flight.mp4" --out "$OUT/flight" --realtime --drop latest)
if python -c 'import pyproj, pyogrio, shapely' 2>/dev/null; then
  stream_args+=(--telemetry "$OUT/flight.csv" --camera-hfov "$HFOV")
else
  echo "flight: flown without --telemetry (no footprints): the geo extra is not installed (pip install 'co2s[geo]')"
fi
echo "co2s-stream ${stream_args[*]}"
co2s-stream "${stream_args[@]}"
