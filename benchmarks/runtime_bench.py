"""Issue 5's runtime numbers on this machine's CPU (onnxruntime CPU EP):

    python benchmarks/runtime_bench.py --bundle BUNDLE                  # a full-size (paper, 512^2) bundle
    python benchmarks/runtime_bench.py --bundle BUNDLE --quick          # a smoke run
    python benchmarks/runtime_bench.py --bundle B --stress-bundle TINY  # + tiling overhead with a cheap model

1. Latency per precision (batch 1, p50/p90/p99) of every ONNX precision in the bundle, and PyTorch eager on the
   same deploy graph (DeployModel, uint8 in, same thread count) measured in the same run. Configurations are
   interleaved call by call, so background load on a shared machine hits all of them alike.
2. INT8 vs FP32: speed-up and label agreement on real tiles (Dubai aerial when found, else synthetic scenes).
3. Tiling overhead on a 4096^2 scene: the whole pipeline (GeoTIFF windowed read, tiles at stride 5/6, inference,
   stitching, compressed GeoTIFF + overlay writes) against the same number of tiles run back to back from memory.
   The extra tiles that overlap costs are reported separately (a modelling choice, not pipeline overhead).

PyTorch eager needs torch and the model: an --untrained bundle is rebuilt from its seed; for a trained one pass
--checkpoint. Writes runtime_bench.{csv,md,json,png} to --out (default benchmarks/results/).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from co2s.bundle import Bundle, load_bundle
from co2s.bundle.formats import default_overlap
from co2s.runtime.backends import open_backend
from co2s.runtime.bench import synthetic_tiles, tiles_from_images
from co2s.runtime.pipeline import InferencePipeline, InferOptions, collect_inputs
from co2s.runtime.profiler import StageProfiler, device_stamp, library_versions, stage_stats
from co2s.runtime.tiling import TileGrid, pad_to_tile

HERE = Path(__file__).resolve().parent
TARGETS = {"ort_vs_eager": 1.3, "int8_speedup": 1.8, "int8_agreement": 0.97, "tiling_overhead": 0.10}


def dubai_images() -> list[Path]:
    try:
        from co2s.train.data import default_dubai_root

        root = default_dubai_root()
    except Exception:  # noqa: BLE001 - torch-side package or data missing: synthetic tiles instead
        return []
    return sorted(root.glob("Tile_*/images/*.jpg"))


# --- 1 + 2: latency per precision and PyTorch eager ---------------------------------------------------------------


def eager_model(bundle: Bundle, checkpoint: str | None):
    """The exported graph as a PyTorch module (same folding), or (None, reason)."""
    try:
        import torch
    except ImportError:
        return None, "torch is not installed"
    from co2s.export.deploy import DeployConfig, DeployModel
    from co2s.export.options import ExportOptions
    from co2s.export.pipeline import load_model

    m = bundle.data["model"]
    if not m.get("untrained") and not checkpoint:
        return None, "a trained bundle: pass --checkpoint to time PyTorch eager"
    opts = ExportOptions(
        out=Path(tempfile.gettempdir()),
        untrained=bool(m.get("untrained")) and not checkpoint,
        checkpoint=Path(checkpoint) if checkpoint else None,
        preset=m["preset"] if not checkpoint else None,
        num_classes=m["num_classes"],
        tile=m["tile"],
    )
    model, *_ = load_model(opts)
    config = DeployConfig(tuple(m["students"]), m["fusion"], m["tile"], bundle.has_probs)
    deploy = DeployModel(model, config).eval()

    def run(x: np.ndarray):
        with torch.inference_mode():
            out = deploy(torch.from_numpy(x))
        return {"labels": out[0].numpy(), "confidence": out[1].numpy()}

    run.module = deploy  # for benchmarks that time other runners of the same graph (cpu_bench: torch.compile)
    return run, None


def latency_section(
    bundle: Bundle, tiles: np.ndarray, iters: int, warmup: int, checkpoint: str | None, threads: int | None
) -> tuple[list[dict], dict]:
    runners = {}
    for p in bundle.precisions("onnx"):
        be = open_backend(bundle, "ort-cpu", p, threads=threads)
        runners[f"ort-cpu {p}"] = be.run
    eager, why = eager_model(bundle, checkpoint)
    if eager is not None:
        import torch

        torch.set_num_threads(threads or os.cpu_count() or 1)  # the same thread count as onnxruntime
        runners["pytorch eager fp32"] = eager
    else:
        print(f"  PyTorch eager skipped: {why}")
    x1 = [tiles[i : i + 1] for i in range(len(tiles))]
    for name, run in runners.items():
        n = max(warmup, 5) if name.startswith("pytorch") else warmup  # torch's first ~4 calls are seconds slower
        t = time.perf_counter()
        for i in range(n):
            run(x1[i % len(x1)])
        print(f"  warm-up {name}: {n} calls, {(time.perf_counter() - t) / max(1, n):.2f} s/call", flush=True)
    times = {k: [] for k in runners}
    seen: dict[str, dict[int, np.ndarray]] = {k: {} for k in runners}
    for i in range(iters):  # interleaved: every configuration sees the same background load
        for name, run in runners.items():
            t = time.perf_counter()
            out = run(x1[i % len(x1)])
            times[name].append(time.perf_counter() - t)
            seen[name].setdefault(i % len(x1), out["labels"])  # the timed calls double as the agreement run
        print(
            f"  iteration {i + 1}/{iters}: " + ", ".join(f"{k} {v[-1] * 1e3:.0f} ms" for k, v in times.items()),
            flush=True,
        )
    for name, run in runners.items():  # tiles the timed loop did not reach (iters < pool size)
        for j in range(len(x1)):
            if j not in seen[name]:
                seen[name][j] = run(x1[j])["labels"]
    labels = {name: np.concatenate([seen[name][j] for j in range(len(x1))]) for name in runners}
    ref = labels.get("ort-cpu fp32")
    rows = []
    for name, ts in times.items():
        st = stage_stats(ts)
        rows.append(
            {
                "config": name,
                "batch": 1,
                "iters": iters,
                "p50_ms": st["p50_ms"],
                "p90_ms": st["p90_ms"],
                "p99_ms": st["p99_ms"],
                "max_ms": st["max_ms"],
                "mean_ms": st["mean_ms"],
                "agreement_vs_ort_fp32": None if ref is None else float(np.mean(labels[name] == ref)),
            }
        )
    p50 = {r["config"]: r["p50_ms"] for r in rows}
    ratios = {}
    if "pytorch eager fp32" in p50 and "ort-cpu fp32" in p50:
        ratios["ort_fp32_speedup_vs_eager"] = p50["pytorch eager fp32"] / p50["ort-cpu fp32"]
    if "ort-cpu int8" in p50 and "ort-cpu fp32" in p50:
        ratios["int8_speedup_vs_fp32"] = p50["ort-cpu fp32"] / p50["ort-cpu int8"]
        ratios["int8_agreement_vs_fp32"] = next(
            r["agreement_vs_ort_fp32"] for r in rows if r["config"] == "ort-cpu int8"
        )
    if "ort-cpu fp16" in p50 and "ort-cpu fp32" in p50:
        ratios["fp16_speedup_vs_fp32"] = p50["ort-cpu fp32"] / p50["ort-cpu fp16"]
    return rows, ratios


def cpu_seconds() -> float:
    """User + system CPU time of this process (all threads)."""
    t = os.times()
    return t.user + t.system


# --- 3: tiling overhead -------------------------------------------------------------------------------------------


def make_scene(path: Path, side: int, images: list[Path]) -> Path:
    """A side x side RGB GeoTIFF mosaicked from real images (or synthetic scenes), internally tiled."""
    rng = np.random.default_rng(0)
    canvas = np.zeros((side, side, 3), np.uint8)
    y = 0
    srcs = [np.asarray(Image.open(p).convert("RGB")) for p in images[:12]] or [synthetic_tiles(1, 1024)[0]]
    k = 0
    while y < side:
        x, row_h = 0, 0
        while x < side:
            im = srcs[k % len(srcs)]
            k += 1
            h, w = min(im.shape[0], side - y), min(im.shape[1], side - x)
            canvas[y : y + h, x : x + w] = im[:h, :w]
            x, row_h = x + w, max(row_h, h)
        y += row_h
    try:
        import rasterio
        from rasterio.transform import from_origin

        with rasterio.open(
            path,
            "w",
            driver="GTiff",
            width=side,
            height=side,
            count=3,
            dtype="uint8",
            crs="EPSG:32640",
            transform=from_origin(300000, 2800000, 0.5, 0.5),
            tiled=True,
            blockxsize=512,
            blockysize=512,
            compress="deflate",
        ) as ds:
            ds.write(np.moveaxis(canvas, 2, 0))
    except ImportError:
        path = path.with_suffix(".png")
        Image.fromarray(canvas).save(path)
    del rng
    return path


def tiling_section(bundle: Bundle, scene: Path, threads: int | None, work: Path, repeats: int = 1) -> dict:
    """Pipeline vs raw tiles, alternated `repeats` times (medians reported: the machine may be shared)."""
    be = open_backend(bundle, "ort-cpu", "fp32", threads=threads)
    be.warmup(2)
    T = bundle.tile
    overlap = default_overlap(T)
    from co2s.runtime.io import InputOptions, open_source

    src = open_source(scene, InputOptions())
    side = src.height
    grid = TileGrid(side, side, T, overlap)
    tiles = [pad_to_tile(src.read(w.y0, w.x0, w.h, w.w)[0], T) for w in grid]  # raw: already in memory
    src.close()
    pipe_times, raw_times, rep, n = [], [], None, len(tiles)
    pipe_cpu, raw_cpu = [], []
    for r in range(repeats):
        prof = StageProfiler()
        pipe = InferencePipeline(bundle, be, work / f"tiling_out{r}", InferOptions(overlap=overlap), profiler=prof)
        t, c = time.perf_counter(), cpu_seconds()
        summary = pipe.run(collect_inputs([scene])[0])
        pipe_times.append(time.perf_counter() - t)
        pipe_cpu.append(cpu_seconds() - c)
        assert summary.results[0].status == "ok", summary.results[0].message
        assert summary.results[0].tiles == n
        rep = rep or prof.report(
            device=device_stamp(use_gpu=False),
            backend="ort-cpu",
            precision="fp32",
            tile=T,
            batch=pipe.batch,
            warmup_batches=2,
        )
        B = pipe.batch
        t, c = time.perf_counter(), cpu_seconds()
        for i in range(0, n, B):
            be.run(np.stack(tiles[i : i + B]))
        raw_times.append(time.perf_counter() - t)
        raw_cpu.append(cpu_seconds() - c)
        print(
            f"  repeat {r + 1}/{repeats}: pipeline {pipe_times[-1]:.1f} s ({pipe_cpu[-1]:.1f} CPU-s), raw tiles "
            f"{raw_times[-1]:.1f} s ({raw_cpu[-1]:.1f} CPU-s)",
            flush=True,
        )
    pipe_s, raw_s = float(np.median(pipe_times)), float(np.median(raw_times))
    # CPU seconds of this process barely depend on what else the machine runs: the extra work per scene
    cpu_overhead = float(np.median(pipe_cpu)) / float(np.median(raw_cpu)) - 1
    plain = math.ceil(side / T) ** 2
    return {
        "scene": f"{side}x{side}",
        "tile": T,
        "overlap_px": overlap,
        "tiles": n,
        "tiles_without_overlap": plain,
        "repeats": repeats,
        "pipeline_s": pipe_s,
        "raw_tiles_s": raw_s,
        "overhead": pipe_s / raw_s - 1,
        "cpu_overhead": cpu_overhead,
        "pipeline_cpu_s": pipe_cpu,
        "raw_cpu_s": raw_cpu,
        "pipeline_runs_s": pipe_times,
        "raw_runs_s": raw_times,
        "overlap_extra_tiles": n / plain - 1,
        "pipeline_mp_per_s": side * side / 1e6 / pipe_s,
        "peak_host_memory_mb": rep["peak_host_memory_mb"],
        "host_memory_growth_mb": rep["peak_host_memory_mb"] - (rep["host_memory_at_start_mb"] or 0),
        "stages_ms_p50": {k: v["p50_ms"] for k, v in rep["stages"].items()},
    }


# --- reporting ----------------------------------------------------------------------------------------------------


def write_outputs(out: Path, result: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "runtime_bench.json").write_text(json.dumps(result, indent=2, default=str))
    with open(out / "runtime_bench.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["section", "config", "metric", "value"])
        for r in result["latency"]:
            for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms", "agreement_vs_ort_fp32"):
                w.writerow(["latency", r["config"], k, r[k]])
        for k, v in result["ratios"].items():
            w.writerow(["ratio", "", k, v])
        for t in result["tiling"]:
            for k in (
                "tiles",
                "pipeline_s",
                "raw_tiles_s",
                "overhead",
                "cpu_overhead",
                "overlap_extra_tiles",
                "peak_host_memory_mb",
            ):
                w.writerow(["tiling", f"{t['bundle']} {t['scene']}", k, t[k]])
    (out / "runtime_bench.md").write_text(markdown(result))
    chart(result["latency"], out / "runtime_bench.png")


def _pct(v):
    return "—" if v is None else f"{100 * v:.2f} %"


def markdown(r: dict) -> str:
    d = r["device"]
    lines = [
        "# co2s runtime benchmark (CPU)",
        "",
        f"- bundle: `{r['bundle']}` (tile {r['tile']}, {', '.join(r['precisions'])}; untrained: {r['untrained']})",
        f"- device: {d['cpu']} ({d['cpu_cores']} cores), load average at start {r['loadavg']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in r["versions"].items() if v),
        f"- tiles: {r['tiles_source']}; batch 1; {r['iters']} timed calls per configuration, interleaved; "
        f"{r['warmup']} warm-up calls excluded",
        "",
        "## Latency per precision",
        "",
        "| configuration | p50 ms | p90 ms | p99 ms | max ms | label agreement vs ORT FP32 |",
        "|---|---|---|---|---|---|",
    ]
    for x in r["latency"]:
        lines.append(
            f"| {x['config']} | {x['p50_ms']:.1f} | {x['p90_ms']:.1f} | {x['p99_ms']:.1f} | {x['max_ms']:.1f} | "
            f"{_pct(x['agreement_vs_ort_fp32'])} |"
        )
    q = r["ratios"]
    lines += ["", "## Against the issue's targets", "", "| measure | value | target |", "|---|---|---|"]
    if "ort_fp32_speedup_vs_eager" in q:
        lines.append(
            f"| ORT FP32 speed-up over PyTorch eager (p50) | {q['ort_fp32_speedup_vs_eager']:.2f}x | >= 1.3x |"
        )
    if "int8_speedup_vs_fp32" in q:
        lines.append(f"| INT8 speed-up over FP32 (p50) | {q['int8_speedup_vs_fp32']:.2f}x | >= 1.8x |")
        lines.append(f"| INT8 label agreement with FP32 | {_pct(q['int8_agreement_vs_fp32'])} | >= 97 % |")
    if "fp16_speedup_vs_fp32" in q:
        lines.append(f"| FP16 speed-up over FP32 on CPU (p50) | {q['fp16_speedup_vs_fp32']:.2f}x | (GPU format) |")
    for t in r["tiling"]:
        lines.append(
            f"| tiling overhead, {t['scene']} scene, {t['bundle']} ({t['tiles']} tiles): wall / CPU time | "
            f"{100 * t['overhead']:+.1f} % / {100 * t.get('cpu_overhead', float('nan')):+.1f} % | <= 10 % |"
        )
    lines += [
        "",
        "## Tiling",
        "",
        "Median of the alternated runs; raw = the same tiles from memory through the same "
        "backend and batch, back to back.",
        "",
        "| bundle | scene | tiles (no overlap) | pipeline s | raw tiles s | overhead (wall) | overhead (CPU time) | "
        "extra tiles from overlap | scene MP/s | peak host MB (growth during the run) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in r["tiling"]:
        lines.append(
            f"| {t['bundle']} | {t['scene']} | {t['tiles']} ({t['tiles_without_overlap']}) | {t['pipeline_s']:.1f} | "
            f"{t['raw_tiles_s']:.1f} | {100 * t['overhead']:+.1f} % | {100 * t.get('cpu_overhead', float('nan')):+.1f} % | "
            f"{100 * t['overlap_extra_tiles']:.0f} % | "
            f"{t['pipeline_mp_per_s']:.2f} | {t['peak_host_memory_mb']:.0f} ({t['host_memory_growth_mb']:+.0f}) |"
        )
    if r.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in r["notes"]]
    return "\n".join(lines) + "\n"


def chart(rows: list[dict], path: Path) -> None:
    """p50 bars with a p99 tick per configuration (Pillow only)."""
    W, H, pad = 720, 360, 60
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    top = max(r["p99_ms"] for r in rows) * 1.1
    bw = (W - 2 * pad) / max(1, len(rows))
    d.line([(pad, H - pad), (W - pad, H - pad)], fill="black")
    d.line([(pad, pad / 2), (pad, H - pad)], fill="black")
    d.text((pad, 8), "latency per tile, batch 1 (bar: p50, tick: p99), ms", fill="black")
    colours = [(76, 114, 176), (221, 132, 82), (85, 168, 104), (196, 78, 82), (129, 114, 179)]
    for i, r in enumerate(rows):
        x0 = pad + i * bw + bw * 0.2
        x1 = pad + (i + 1) * bw - bw * 0.2
        y = H - pad - (H - 1.5 * pad) * r["p50_ms"] / top
        y99 = H - pad - (H - 1.5 * pad) * r["p99_ms"] / top
        d.rectangle([x0, y, x1, H - pad], fill=colours[i % len(colours)])
        d.line([(x0, y99), (x1, y99)], fill="black", width=2)
        d.text((x0, y - 14), f"{r['p50_ms']:.0f}", fill="black")
        d.text((x0, H - pad + 6), r["config"].replace("ort-cpu ", "ORT "), fill="black")
    img.save(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", required=True, help="full-size bundle (paper preset, 512^2)")
    ap.add_argument("--stress-bundle", help="a cheap bundle (e.g. tiny, 128^2) for a second tiling-overhead run")
    ap.add_argument("--checkpoint", help="checkpoint of a trained bundle, for PyTorch eager")
    ap.add_argument("--images", nargs="*", help="images/folders to cut tiles from (default: Dubai aerial if found)")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument(
        "--warmup",
        type=int,
        default=2,
        help="untimed calls per configuration (at least 5 for torch, whose first few calls are seconds slower)",
    )
    ap.add_argument("--scene", type=int, default=4096, help="side of the tiling-overhead scene")
    ap.add_argument(
        "--full-scene",
        type=int,
        help="scene side for the full-size bundle's tiling run (default "
        "--scene; a 4096^2 scene is ~100 tiles of 512^2, tens of minutes on a small CPU)",
    )
    ap.add_argument("--threads", type=int, help="onnxruntime threads (default: all cores, like torch)")
    ap.add_argument("--repeats", type=int, default=3, help="pipeline/raw alternations for the stress bundle")
    ap.add_argument("--skip-tiling", action="store_true")
    ap.add_argument("--skip-latency", action="store_true", help="keep the latency numbers of the last run in --out")
    ap.add_argument("--skip-full-tiling", action="store_true", help="keep the full-size tiling numbers of the last run")
    ap.add_argument("--quick", action="store_true", help="3 iterations, 1 warm-up, 1024^2 scene")
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--work", help="scratch folder (default: a temporary one)")
    a = ap.parse_args(argv)
    if a.quick:
        a.iters, a.warmup, a.scene, a.repeats = 3, 1, 1024, 1
    work = Path(a.work or tempfile.mkdtemp(prefix="co2s_runtime_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    bundle = load_bundle(a.bundle)
    images = [Path(p) for p in a.images] if a.images else dubai_images()
    n_tiles = max(4, min(8, a.iters // 2))
    tiles = tiles_from_images(images, bundle.tile, n_tiles) if images else synthetic_tiles(n_tiles, bundle.tile)
    m = bundle.data["model"]
    result = {
        "bundle": f"{bundle.root.name} ({m['preset']} preset)",
        "tile": bundle.tile,
        "precisions": bundle.precisions("onnx"),
        "untrained": m.get("untrained"),
        "device": device_stamp(use_gpu=False),
        "versions": library_versions(),
        "loadavg": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "iters": a.iters,
        "warmup": a.warmup,
        "tiles_source": f"{len(tiles)} crops of Dubai aerial images" if images else "synthetic scenes",
        "notes": [],
    }
    try:
        import torch

        result["versions"]["torch"] = torch.__version__
    except ImportError:
        pass
    if m.get("untrained"):
        result["notes"].append(
            "untrained weights: label agreement between precisions is decided by near-uniform "
            "class probabilities and says little about a trained model; latency is unaffected"
        )
    previous = Path(a.out) / "runtime_bench.json"
    if a.skip_latency and previous.exists():  # re-run only the tiling part, keep the earlier latency numbers
        old = json.loads(previous.read_text())
        for k in ("latency", "ratios", "iters", "warmup", "tiles_source", "loadavg"):
            result[k] = old[k]
        keep_tiling = [t for t in old.get("tiling", []) if t["bundle"].startswith("full-size")]
    else:
        print(f"latency: {bundle.root} ({', '.join(result['precisions'])}), {a.iters} iterations", flush=True)
        result["latency"], result["ratios"] = latency_section(bundle, tiles, a.iters, a.warmup, a.checkpoint, a.threads)
        keep_tiling = []
    result["tiling"] = []
    write_outputs(Path(a.out), result)  # latency results survive an interrupted tiling run
    if not a.skip_tiling:
        for name, path, side in (
            ("full-size", a.bundle, a.full_scene or a.scene),
            ("stress", a.stress_bundle, a.scene),
        ):
            if path is None:
                continue
            if name == "full-size" and keep_tiling and a.skip_full_tiling:
                result["tiling"] += keep_tiling
                continue
            scene = work / f"scene{side}.tif"
            if not scene.exists() and not scene.with_suffix(".png").exists():
                scene = make_scene(scene, side, images)
            b = load_bundle(path)
            print(f"tiling overhead: {name} bundle on a {side}^2 scene", flush=True)
            t = tiling_section(
                b,
                scene if scene.exists() else scene.with_suffix(".png"),
                a.threads,
                work / name,
                repeats=1 if name == "full-size" else a.repeats,
            )
            t["bundle"] = f"{name} ({b.data['model']['preset']}, {b.tile}^2)"
            result["tiling"].append(t)
            write_outputs(Path(a.out), result)
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
