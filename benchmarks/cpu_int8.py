"""Which INT8 form is fastest on this CPU: the evidence behind export/cpu_int8.py's DEFAULT_CPU_INT8_FORM.

    python benchmarks/cpu_int8.py --onnx bundles/paper256/model.fp32.onnx      # an exported FP32 graph
    python benchmarks/cpu_int8.py --quick                                       # tiny untrained bundle (smoke test)

Each form of CPU_INT8_FORMS (and, for comparison, the TensorRT-shaped int8 of the bundle when --trt-int8 names
it) is written from the same FP32 graph and calibration tiles, then timed with onnxruntime's CPU EP in one run on
this machine: p50 latency of --runs batches after a warm-up, timed graph after graph within each round
(interleaved: background load hits every graph alike), speed-up against FP32, and pixel agreement with the
FP32 labels on the calibration tiles. Writes cpu_int8.{json,csv,md,png} to --out-dir.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
COLUMNS = ("graph", "form", "p50_ms", "p90_ms", "speedup_vs_fp32", "pixel_agreement", "quantize_s", "mb")


def _session(path: Path, x: np.ndarray, threads: int):
    """(run one batch, labels over all of `x`) for one graph on the CPU EP."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    b = sess.get_inputs()[0].shape[0]
    b = b if isinstance(b, int) else 1
    labels = np.concatenate([sess.run(["labels"], {name: x[i : i + b]})[0] for i in range(0, len(x) - b + 1, b)])
    return (lambda: sess.run(["labels"], {name: x[:b]})), labels


def _interleaved(runners: dict, runs: int) -> dict[str, list[float]]:
    """ms per call, graph after graph within each round, so background load hits every graph alike."""
    for run in runners.values():
        run()  # warm-up
    times: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(runs):
        for k, run in runners.items():
            t0 = time.perf_counter()
            run()
            times[k].append(1000 * (time.perf_counter() - t0))
    return times


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--onnx", type=Path, help="FP32 ONNX of a bundle (default: export a tiny untrained one)")
    ap.add_argument("--trt-int8", type=Path, help="the bundle's TensorRT-shaped model.int8.onnx, timed for comparison")
    ap.add_argument("--quick", action="store_true", help="tiny untrained bundle, few runs")
    ap.add_argument("--calib-count", type=int, default=8)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--forms", nargs="+", help="forms to try (default: all of CPU_INT8_FORMS)")
    ap.add_argument("--out-dir", type=Path, default=HERE / "results")
    a = ap.parse_args(argv)

    from co2s.export.calibration import synthetic
    from co2s.export.cpu_int8 import CPU_INT8_FORMS, quantize_int8_cpu
    from co2s.runtime.profiler import cpu_model

    work = Path(tempfile.mkdtemp(prefix="co2s-cpu-int8-"))
    fp32 = a.onnx
    if fp32 is None:
        bundle = work / "bundle"
        cmd = [
            sys.executable,
            "-m",
            "co2s.export.cli",
            "-q",
            "--untrained",
            "--preset",
            "tiny",
            "--num-classes",
            "4",
            "--tile",
            "64",
        ]
        subprocess.run([*cmd, "--precision", "fp32", "--out", str(bundle)], check=True)
        fp32 = bundle / "model.fp32.onnx"
    import onnxruntime as ort

    sess = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])
    tile = sess.get_inputs()[0].shape[1]
    del sess
    calib = synthetic(a.calib_count, tile).images
    runs = 3 if a.quick else a.runs
    graphs = {"fp32": (fp32, None)}
    for form in a.forms or CPU_INT8_FORMS:
        path = work / f"model.int8-cpu.{form}.onnx"
        t0 = time.perf_counter()
        quantize_int8_cpu(fp32, path, calib, form=form, batch=1)
        graphs[form] = (path, time.perf_counter() - t0)
    if a.trt_int8:
        graphs["int8 (TensorRT-shaped)"] = (a.trt_int8, None)
    runners, labels = {}, {}
    for k, (path, _) in graphs.items():
        runners[k], labels[k] = _session(path, calib, a.threads)
    times = _interleaved(runners, runs)
    p50_fp32 = float(np.median(times["fp32"]))
    rows = []
    for k, (path, q_s) in graphs.items():
        graph = "fp32" if k == "fp32" else ("int8-cpu" if k in CPU_INT8_FORMS else k)
        form = "-" if k == "fp32" else k
        agree = float((labels[k] == labels["fp32"]).mean())
        rows.append(_row(graph, form, times[k], p50_fp32, agree, q_s, path))
        print(
            f"{graph:>24} {form:>10}: p50 {rows[-1]['p50_ms']:.0f} ms, "
            f"{rows[-1]['speedup_vs_fp32']:.2f}x fp32, agreement {100 * agree:.2f} %",
            flush=True,
        )
    r = {
        "rows": rows,
        "machine": f"{cpu_model()}, {os.cpu_count()} cores, {platform.machine()}",
        "onnxruntime": ort.__version__,
        "threads": a.threads,
        "tile": tile,
        "model": str(fp32),
        "runs": runs,
    }
    from common import write_outputs

    write_outputs(a.out_dir, "cpu_int8", r, COLUMNS, _markdown, _chart)
    print(f"wrote {a.out_dir}/cpu_int8.{{json,csv,md,png}}")
    return 0


def _row(graph, form, times, p50_fp32, agree, q_s, path) -> dict:
    p50 = float(np.median(times))
    return {
        "graph": graph,
        "form": form,
        "p50_ms": round(p50, 1),
        "p90_ms": round(float(np.percentile(times, 90)), 1),
        "speedup_vs_fp32": round(p50_fp32 / p50, 3),
        "pixel_agreement": None if agree is None else round(agree, 5),
        "quantize_s": None if q_s is None else round(q_s, 1),
        "mb": round(Path(path).stat().st_size / 2**20, 1),
    }


def _markdown(r: dict) -> str:
    lines = [
        "# INT8 forms on the onnxruntime CPU EP",
        "",
        f"{r['machine']}; onnxruntime {r['onnxruntime']}, {r['threads']} threads; tile {r['tile']}, batch 1, "
        f"p50 of {r['runs']} interleaved runs after a warm-up; model `{r['model']}`. Agreement: labels vs FP32 on the "
        "calibration tiles (untrained weights make this a weak check; see accuracy.md for a trained model).",
        "",
        "| graph | form | p50 ms | p90 ms | vs FP32 | agreement | quantise s | MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for x in r["rows"]:
        agree = "-" if x["pixel_agreement"] is None else f"{100 * x['pixel_agreement']:.2f} %"
        q = "-" if x["quantize_s"] is None else f"{x['quantize_s']:.0f}"
        lines.append(
            f"| {x['graph']} | {x['form']} | {x['p50_ms']:.0f} | {x['p90_ms']:.0f} | "
            f"{x['speedup_vs_fp32']:.2f}× | {agree} | {q} | {x['mb']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def _chart(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    labels = [f"{x['graph']}\n{x['form']}" for x in r["rows"]]
    ax.bar(labels, [x["p50_ms"] for x in r["rows"]])
    ax.set_ylabel("p50 ms (batch 1)")
    ax.set_title(f"INT8 forms, tile {r['tile']}, {r['threads']} threads")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
