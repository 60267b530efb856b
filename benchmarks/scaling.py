"""Scaling: how latency and memory grow with the work -- tile size and class count -- on ORT CPU FP32.

    python benchmarks/scaling.py --quick                  # tiny preset, tiles 128/256 x classes 6/15 (~1-2 min)
    python benchmarks/scaling.py                          # paper preset, tiles 256/512/768/1024 x classes 6/15
    python benchmarks/scaling.py --preset tiny --tiles 256,512,768,1024

For every (tile, classes) pair an untrained FP32 bundle is exported (weights do not change cost), then timed in a
fresh torch-free child process (`--measure`), batch 1, synthetic tiles, so its memory numbers are those of a
runtime process alone:
  - p50/p99 latency, ms per megapixel, achieved GFLOP/s (FLOPs from the ONNX graph, as runtime_matrix.py counts);
  - peak host RSS of the process (VmHWM: Python + numpy + onnxruntime + session + activations) and the part the
    ORT session and inference add over the bare interpreter (peak - RSS before the session was created).
Writes scaling.{csv,md,json,png} to --out-dir (default benchmarks/results/).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


import common  # noqa: E402  (benchmarks/common.py, beside this script)
from runtime_matrix import _default_threads, _x  # noqa: E402  (sibling benchmark script)

# --- the child: one bundle, torch-free ----------------------------------------------------------------------------


def measure(bundle_dir: str, iters: int, warmup: int, threads: int) -> dict:
    import numpy as np  # noqa: F401 - counted in the baseline RSS

    from co2s.runtime import load_bundle, open_backend
    from co2s.runtime.bench import synthetic_tiles
    from co2s.runtime.profiler import current_host_memory_mb, peak_host_memory_mb, stage_stats

    bundle = load_bundle(bundle_dir)
    tiles = synthetic_tiles(4, bundle.tile)
    rss_before = current_host_memory_mb()
    t = time.perf_counter()
    be = open_backend(bundle, "ort-cpu", "fp32", threads=threads)
    load_s = time.perf_counter() - t
    rss_loaded = current_host_memory_mb()
    for i in range(warmup):
        be.run(tiles[i % 4 : i % 4 + 1])
    lat = []
    for i in range(iters):
        t = time.perf_counter()
        be.run(tiles[i % 4 : i % 4 + 1])
        lat.append(time.perf_counter() - t)
    st = stage_stats(lat)
    peak = peak_host_memory_mb()
    be.close()
    return {
        "p50_ms": st["p50_ms"],
        "p99_ms": st["p99_ms"],
        "mean_ms": st["mean_ms"],
        "session_load_s": load_s,
        "rss_before_session_mb": rss_before,
        "rss_after_load_mb": rss_loaded,
        "peak_rss_mb": peak,
        "peak_growth_mb": None if peak is None or rss_before is None else peak - rss_before,
    }


# --- the parent: export, spawn, report ----------------------------------------------------------------------------


def export(preset: str, tile: int, classes: int, out: Path) -> float:
    from co2s.export.options import ExportOptions
    from co2s.export.pipeline import export_bundle

    t = time.perf_counter()
    export_bundle(
        ExportOptions(
            out=out,
            untrained=True,
            preset=preset,
            num_classes=classes,
            tile=tile,
            precisions=("fp32",),
            calib_count=2,
            force=True,
            log=lambda s: print(f"  [export] {s}", flush=True),
        )
    )
    return time.perf_counter() - t


def run_child(bundle: Path, iters: int, warmup: int, threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    p = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--measure",
            str(bundle),
            "--iters",
            str(iters),
            "--warmup",
            str(warmup),
            "--threads",
            str(threads),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    if p.returncode != 0:
        raise RuntimeError(f"measuring {bundle} failed:\n{p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny preset, tiles 128,256, few iterations")
    ap.add_argument("--preset", choices=("tiny", "paper"), help="default: tiny with --quick, else paper")
    ap.add_argument("--tiles", help="comma-separated tile sides (default 256,512,768,1024; quick 128,256)")
    ap.add_argument("--classes", default="6,15", help="comma-separated class counts (default 6,15)")
    ap.add_argument("--iters", type=int, help="timed calls per bundle (default 10; quick 5)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument(
        "--threads",
        type=int,
        default=_default_threads(),
        help="onnxruntime threads (default $OMP_NUM_THREADS, else all cores)",
    )
    ap.add_argument("--out-dir", default=str(HERE / "results"))
    ap.add_argument("--work", help="scratch folder for the bundles (default: a temporary one)")
    ap.add_argument("--measure", help=argparse.SUPPRESS)  # internal: time one bundle in this (torch-free) process
    a = ap.parse_args(argv)
    if a.measure:
        print(json.dumps(measure(a.measure, a.iters or 5, a.warmup, a.threads)))
        return 0
    a.preset = a.preset or ("tiny" if a.quick else "paper")
    tiles = [int(x) for x in (a.tiles or ("128,256" if a.quick else "256,512,768,1024")).split(",") if x.strip()]
    classes = [int(x) for x in a.classes.split(",") if x.strip()]
    a.iters = a.iters or (5 if a.quick else 10)
    work = Path(a.work or tempfile.mkdtemp(prefix="co2s_scaling_"))
    work.mkdir(parents=True, exist_ok=True)

    from runtime_matrix import onnx_flops

    from co2s.bundle import load_bundle
    from co2s.runtime.profiler import device_stamp, library_versions

    t_start = time.perf_counter()
    loadavg = " ".join(f"{x:.1f}" for x in os.getloadavg())
    rows = []
    for n in classes:
        for t in tiles:
            b = work / f"{a.preset}_t{t}_c{n}"
            print(f"{a.preset} tile {t}, {n} classes: export...", flush=True)
            ex_s = export(a.preset, t, n, b)
            bundle = load_bundle(b)
            fp32 = bundle.artefact("onnx", "fp32")
            fl = onnx_flops(fp32.path, batch=1)
            r = run_child(b, a.iters, a.warmup, a.threads)
            mp = t * t / 1e6
            row = {
                "preset": a.preset,
                "tile": t,
                "classes": n,
                "backend": "ort-cpu",
                "precision": "fp32",
                "batch": 1,
                "p50_ms": round(r["p50_ms"], 3),
                "p99_ms": round(r["p99_ms"], 3),
                "ms_per_megapixel": round(r["p50_ms"] / mp, 3),
                "gflop_per_tile": round(fl["flops"] / 1e9, 4),
                "gflops": round(fl["flops"] / (r["p50_ms"] / 1e3) / 1e9, 2),
                "peak_rss_mb": None if r["peak_rss_mb"] is None else round(r["peak_rss_mb"], 1),
                "peak_growth_mb": None if r["peak_growth_mb"] is None else round(r["peak_growth_mb"], 1),
                "rss_after_load_mb": None if r["rss_after_load_mb"] is None else round(r["rss_after_load_mb"], 1),
                "model_mb": round(sum(a.size for a in (fp32, *bundle.companions(fp32))) / 2**20, 1),
                "session_load_s": round(r["session_load_s"], 2),
                "export_s": round(ex_s, 1),
                "iters": a.iters,
            }
            rows.append(row)
            print(
                f"  p50 {row['p50_ms']:.1f} ms, {row['gflop_per_tile']:.3f} GFLOP/tile, peak RSS "
                f"{row['peak_rss_mb']} MB (+{row['peak_growth_mb']} MB over the bare interpreter)",
                flush=True,
            )
    result = {
        "preset": a.preset,
        "tiles": tiles,
        "classes": classes,
        "threads": a.threads,
        "iters": a.iters,
        "warmup": a.warmup,
        "quick": a.quick,
        "loadavg_at_start": loadavg,
        "device": device_stamp(use_gpu=False),
        "versions": library_versions(),
        "rows": rows,
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    out = Path(a.out_dir)
    write_outputs(out, result)
    if not a.work:  # a scratch folder of ours: the bundles in it go
        shutil.rmtree(work, ignore_errors=True)
    print(markdown(result))
    print(f"wrote {out}/scaling.{{csv,md,json,png}} in {result['seconds']:.0f} s")
    return 0


# --- reporting ----------------------------------------------------------------------------------------------------

COLUMNS = [
    "preset",
    "tile",
    "classes",
    "backend",
    "precision",
    "batch",
    "p50_ms",
    "p99_ms",
    "ms_per_megapixel",
    "gflop_per_tile",
    "gflops",
    "peak_rss_mb",
    "peak_growth_mb",
    "rss_after_load_mb",
    "model_mb",
    "session_load_s",
    "export_s",
    "iters",
]


def write_outputs(out: Path, r: dict) -> None:
    common.write_outputs(out, "scaling", r, COLUMNS, markdown, chart)


def markdown(r: dict) -> str:
    d = r["device"]
    rows = r["rows"]
    lines = [
        "# co2s scaling: tile size and class count (ORT CPU FP32)",
        "",
        f"- {r['preset']} preset, **untrained** bundles (cost does not depend on the weights), batch 1, synthetic "
        f"tiles; {r['iters']} timed calls per bundle after {r['warmup']} warm-up calls",
        f"- machine: {d.get('cpu')} ({d.get('cpu_cores')} cores); {r['threads']} onnxruntime thread(s); load "
        f"average at start {r['loadavg_at_start']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in r["versions"].items() if v),
        "- each bundle is timed in a fresh torch-free process: peak RSS = that process's high-water mark "
        "(interpreter + numpy + onnxruntime + session + activations); growth = peak minus RSS before the "
        "session was created",
        "- GFLOP per tile: MatMul/Gemm/Conv/ConvTranspose of the ONNX graph after shape inference",
        "",
        "| tile | classes | p50 ms | p99 ms | ms / MP | GFLOP / tile | GFLOP/s | peak RSS MB | growth MB | model MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for x in rows:
        lines.append(
            f"| {x['tile']} | {x['classes']} | {x['p50_ms']:.2f} | {x['p99_ms']:.2f} | {x['ms_per_megapixel']:.1f} | "
            f"{x['gflop_per_tile']:.3f} | {x['gflops']:.1f} | {_x(x['peak_rss_mb'], '{:.0f}')} | "
            f"{_x(x['peak_growth_mb'], '{:.0f}')} | {x['model_mb']:.1f} |"
        )
    # growth ratios: what doubling the tile side / adding classes costs
    lines += ["", "## Growth", ""]
    tiles, classes = r["tiles"], r["classes"]
    for n in classes:
        rs = sorted((x for x in rows if x["classes"] == n), key=lambda x: x["tile"])
        if len(rs) > 1:
            a, b = rs[0], rs[-1]
            px = (b["tile"] / a["tile"]) ** 2
            lines.append(
                f"- {n} classes, tile {a['tile']} -> {b['tile']} ({px:.0f}x the pixels): latency "
                f"{b['p50_ms'] / a['p50_ms']:.1f}x, FLOPs {b['gflop_per_tile'] / a['gflop_per_tile']:.1f}x, "
                f"peak-RSS growth {_x(None if not a['peak_growth_mb'] else b['peak_growth_mb'] / a['peak_growth_mb'], '{:.1f}x')}"
            )
    for t in tiles:
        rs = sorted((x for x in rows if x["tile"] == t), key=lambda x: x["classes"])
        if len(rs) > 1:
            a, b = rs[0], rs[-1]
            lines.append(
                f"- tile {t}, {a['classes']} -> {b['classes']} classes: latency {b['p50_ms'] / a['p50_ms']:.2f}x, "
                f"FLOPs {b['gflop_per_tile'] / a['gflop_per_tile']:.2f}x, peak RSS "
                f"{_x(b['peak_rss_mb'], '{:.0f}')} vs {_x(a['peak_rss_mb'], '{:.0f}')} MB"
            )
    lines += ["", f"Run time {r['seconds']:.0f} s" + (" (--quick)" if r["quick"] else "") + " (exports included)."]
    return "\n".join(lines) + "\n"


def chart(r: dict, path: Path) -> None:
    rows = r["rows"]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
    panels = (
        ("p50_ms", "p50 latency per tile (ms)"),
        ("ms_per_megapixel", "ms per megapixel"),
        ("peak_rss_mb", "peak RSS of the runtime process (MB)"),
    )
    for ax, (key, title) in zip(axes, panels):
        for n in r["classes"]:
            rs = sorted((x for x in rows if x["classes"] == n and x.get(key) is not None), key=lambda x: x["tile"])
            ax.plot([x["tile"] for x in rs], [x[key] for x in rs], marker="o", label=f"{n} classes")
        ax.set_xticks(r["tiles"])
        ax.set_xlabel("tile side (px)")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    d = r["device"]
    fig.suptitle(
        f"co2s {r['preset']} (untrained), ORT CPU FP32, batch 1 - {d.get('cpu', '')}, {r['threads']} thread(s)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
