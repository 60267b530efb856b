"""Compare INT8 PTQ methods on a bundle's FP32 graph: label agreement with FP32 on held-out synthetic tiles.

    python benchmarks/export_int8_methods.py BUNDLE [--calib 16] [--eval 8] [--methods ort-minmax,modelopt-max]

Each method quantises the same FP32 ONNX on the same calibration tiles (make_scene seeds 0..), then
runs on *different* tiles (seeds 100_000..) next to the FP32 graph; agreement and mIoU-vs-FP32 are printed
as a table. modelopt methods need `nvidia-modelopt[onnx]` importable (it pins other onnx/onnxruntime
versions, so it is best installed in a side environment or on PYTHONPATH).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from co2s.bundle.formats import INT8_METHODS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--calib", type=int, default=16)
    ap.add_argument("--eval", type=int, default=8)
    ap.add_argument("--methods", default=",".join(m for m in INT8_METHODS if m != "auto"))
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()

    from co2s.bundle import load_bundle
    from co2s.export.parity import run_onnx
    from co2s.export.precision import quantize_int8
    from co2s.metrics import confusion_matrix, mean_iou
    from co2s.train.data import make_scene

    m = load_bundle(args.bundle, verify=True)
    tile = m.tile
    fp32 = m.artefact("onnx", "fp32").path
    calib = np.stack([make_scene(i, tile)[0] for i in range(args.calib)])
    evals = np.stack([make_scene(100_000 + i, tile)[0] for i in range(args.eval)])
    ref = run_onnx(fp32, evals)
    rows = []
    for method in args.methods.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "int8.onnx"
            t0 = time.perf_counter()
            try:
                info = quantize_int8(fp32, out, calib, method=method)
            except ImportError as e:
                rows.append({"method": method, "error": str(e).split(";")[0]})
                continue
            seconds = time.perf_counter() - t0
            got = run_onnx(out, evals)
            rows.append(
                {
                    "method": method,
                    "seconds": round(seconds, 1),
                    "bytes": out.stat().st_size,
                    "agreement": float((got["labels"] == ref["labels"]).mean()),
                    "miou_vs_fp32": mean_iou(confusion_matrix(got["labels"], ref["labels"], m.num_classes)),
                    "max_abs_conf_diff": float(np.abs(got["confidence"] - ref["confidence"]).max()),
                    "qdq": info["quantize_linear"] + info["dequantize_linear"],
                }
            )
    print(f"{'method':18} {'agreement %':>12} {'mIoU vs fp32':>13} {'max |dconf|':>12} {'Q+DQ':>6} {'s':>6}")
    for r in rows:
        if "error" in r:
            print(f"{r['method']:18} unavailable: {r['error']}")
        else:
            print(
                f"{r['method']:18} {100 * r['agreement']:12.3f} {r['miou_vs_fp32']:13.2f} {r['max_abs_conf_diff']:12.4f} "
                f"{r['qdq']:6d} {r['seconds']:6.1f}"
            )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
