"""Latency benchmark of one bundle: per precision and batch size, warm-up excluded, plus label agreement
with FP32 on the same tiles (what INT8/FP16 cost in accuracy, next to what they gain in speed)."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from co2s.bundle import Bundle
from co2s.errors import Co2SInputError

from .backends import Backend, open_backend
from .io import InputOptions, open_source
from .pipeline import collect_inputs
from .profiler import (
    StageProfiler,
    choice_lines,
    cold_start_record,
    device_stamp,
    library_versions,
    process_age_s,
    render_table,
    stage_stats,
)

AGREEMENT_TILES = 8


def synthetic_tiles(n: int, tile: int, seed: int = 0) -> np.ndarray:
    """Smooth random scenes (low-frequency colour fields plus texture) rather than white noise, so a model's
    labels have structure and FP32-vs-INT8 agreement means something even without real images."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:tile, 0:tile].astype(np.float32) / tile
    out = np.empty((n, tile, tile, 3), np.uint8)
    for i in range(n):
        img = np.zeros((tile, tile, 3), np.float32)
        for _ in range(6):
            fx, fy, ph = rng.uniform(0.5, 4, 2).tolist() + [rng.uniform(0, 2 * math.pi)]
            img += np.sin(2 * math.pi * (fx * xx + fy * yy) + ph)[..., None] * rng.uniform(20, 60, 3)
        img += rng.normal(0, 8, img.shape)
        out[i] = np.clip(img + 128, 0, 255).astype(np.uint8)
    return out


def tiles_from_images(
    paths: Sequence[str | Path], tile: int, n: int, options: InputOptions = InputOptions(), seed: int = 0
) -> np.ndarray:
    """n tiles cropped at random places from the given images/folders (padded when an image is smaller)."""
    from .tiling import pad_to_tile

    specs, _ = collect_inputs(paths, unique_outputs=False)
    specs = specs[:: max(1, len(specs) // max(1, n))]  # spread over the inputs, not the first few
    if not specs:
        raise Co2SInputError("--images: no image files found")
    rng = np.random.default_rng(seed)
    out = []
    sources = []
    try:
        for s in specs[: max(1, n)]:
            sources.append(open_source(s.input, options))
        for i in range(n):
            src = sources[i % len(sources)]
            h, w = min(tile, src.height), min(tile, src.width)
            y0 = int(rng.integers(0, src.height - h + 1))
            x0 = int(rng.integers(0, src.width - w + 1))
            px, _ = src.read(y0, x0, h, w)
            out.append(pad_to_tile(px, tile))
    finally:
        for s in sources:
            s.close()
    return np.stack(out)


@dataclass
class BenchResult:
    report: dict
    labels: np.ndarray  # labels of the agreement tiles
    first_call_s: float | None = None  # the first warm-up call (a fresh backend's is part of its cold start)


def bench_backend(
    backend: Backend, tiles: np.ndarray, agreement_tiles: np.ndarray, *, batch: int, calls: int, warmup: int
) -> BenchResult:
    """Time `calls` calls of `backend.run` on batches drawn in turn from `tiles`."""
    if batch > backend.batch.max:
        raise Co2SInputError(f"--batch {batch}: this model takes at most {backend.batch.max} tiles per batch")
    if batch < backend.batch.min:
        raise Co2SInputError(f"--batch {batch}: this model takes at least {backend.batch.min} tiles per batch")
    batches = [tiles[(i * batch + np.arange(batch)) % len(tiles)] for i in range(max(1, min(calls, 8)))]
    first_call_s = None
    for i in range(warmup):
        t = time.perf_counter()
        backend.run(batches[i % len(batches)])
        if i == 0:
            first_call_s = time.perf_counter() - t
    prof = StageProfiler()
    latencies = []
    prof.start()
    for i in range(calls):
        x = batches[i % len(batches)]
        t = time.perf_counter()
        backend.run(x, prof)
        latencies.append(time.perf_counter() - t)
        prof.count(tiles=batch, pixels=batch * backend.tile**2, batches=1)
    prof.stop()
    labels = np.concatenate(
        [backend.run(agreement_tiles[i : i + batch])["labels"] for i in range(0, len(agreement_tiles), batch)]
    )
    info = backend.info()
    rep = prof.report(
        device=device_stamp(use_gpu=backend.on_gpu),
        backend=info.name,
        precision=backend.precision,
        tile=backend.tile,
        batch=batch,
        warmup_batches=warmup,
        iterations=calls,  # the report field keeps its name
        latency=stage_stats(latencies, "host-clock"),
        backend_notes=list(info.notes),
        providers=list(info.providers),
    )
    return BenchResult(rep, labels, first_call_s)


def run_bench(
    bundle: Bundle,
    *,
    backend: str = "auto",
    precisions: Sequence[str] = ("auto",),
    batches: Sequence[int] = (1,),
    calls: int = 50,
    warmup: int = 5,
    images: Sequence[str] | None = None,
    input_options: InputOptions = InputOptions(),
    threads: int | None = None,
    cuda_graph: bool = False,
    log=print,
) -> list[dict]:
    """One report per (precision, batch), each with `agreement_vs_fp32` when an FP32 model exists."""
    tile = bundle.tile
    pool_n = max(8, max(batches) * 2)
    if images:
        tiles = tiles_from_images(images, tile, pool_n, input_options)
    else:
        tiles = synthetic_tiles(pool_n, tile)
    agree_tiles = tiles[:AGREEMENT_TILES] if len(tiles) >= AGREEMENT_TILES else tiles
    reports, ref_labels = [], None
    order = sorted(precisions, key=lambda p: p != "fp32")  # FP32 first: it is the reference
    startup_s = process_age_s()  # the first backend's cold start counts the process's start-up
    for prec in order:
        be = open_backend(bundle, backend, prec, threads=threads, cuda_graph=cuda_graph)
        log(be.precision_reason)
        try:
            for i, b in enumerate(batches):
                log(f"benchmarking {be.name} {be.precision} batch {b} ({calls} timed calls, {warmup} warm-up)")
                res = bench_backend(be, tiles, agree_tiles, batch=b, calls=calls, warmup=warmup)
                res.report["precision_choice"] = be.precision_reason
                if i == 0:  # a fresh backend: its opening and first call are a cold start
                    res.report["cold_start"] = cold_start_record(be, startup_s, res.first_call_s)
                    startup_s = None
                if be.precision == "fp32" and ref_labels is None:
                    ref_labels = res.labels
                reports.append((res, be.precision))
        finally:
            be.close()
    if ref_labels is None and "fp32" in bundle.precisions("onnx"):
        ref = open_backend(bundle, "ort-cpu" if backend in ("auto", "ort-cpu") else backend, "fp32", threads=threads)
        try:
            ref_labels = bench_backend(
                ref, tiles, agree_tiles, batch=min(ref.batch.max, max(ref.batch.min, 1)), calls=1, warmup=0
            ).labels
        finally:
            ref.close()
    out = []
    for res, _prec in reports:
        rep = res.report
        if ref_labels is not None and res.labels.shape == ref_labels.shape:
            rep["agreement_vs_fp32"] = float(np.mean(res.labels == ref_labels))
        else:
            rep["agreement_vs_fp32"] = None
        rep["agreement_tiles"] = int(len(agree_tiles))
        rep["tiles_source"] = "images" if images else "synthetic"
        out.append(rep)
    return out


def _f(v, nd=2):
    return "—" if v is None else f"{v:.{nd}f}"


def render_bench_table(reports: list[dict]) -> str:
    head = (
        f"{'backend':<10}{'precision':<10}{'batch':>6}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}{'max ms':>10}"
        f"{'tiles/s':>10}{'MP/s':>9}{'agree':>9}"
    )
    lines = [head, "-" * len(head)]
    for r in reports:
        lat = r["latency"]
        agree = "—" if r.get("agreement_vs_fp32") is None else f"{100 * r['agreement_vs_fp32']:.2f}%"
        lines.append(
            f"{r['backend']:<10}{r['precision']:<10}{r['batch']:>6}{_f(lat['p50_ms']):>10}{_f(lat['p90_ms']):>10}"
            f"{_f(lat['p99_ms']):>10}{_f(lat['max_ms']):>10}{_f(r['tiles_per_s']):>10}"
            f"{_f(r['megapixels_per_s']):>9}{agree:>9}"
        )
    return "\n".join(lines + _choices(reports))


def _choices(reports: list[dict]) -> list[str]:
    """Each backend's precision choice and cold start, once (they are recorded on its first batch size)."""
    out = []
    for r in reports:
        if r.get("cold_start"):
            out += [f"{r['backend']} {r['precision']}: {line}" for line in choice_lines(r)]
    return out


def render_bench_markdown(reports: list[dict]) -> str:
    if not reports:
        return "# co2s-bench\n\n(no results)\n"
    r0 = reports[0]
    from .profiler import _header_lines, render_markdown

    lines = ["# co2s-bench", ""] + [f"- {x}" for x in _header_lines(r0)[:1] + _header_lines(r0)[2:]]
    lines += [
        f"- tiles: {r0.get('tiles_source')}; latency = one backend call (a batch), host clock; warm-up excluded",
        "",
        "| backend | precision | batch | p50 ms | p90 ms | p99 ms | max ms | tiles/s | MP/s | agreement vs FP32 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        lat = r["latency"]
        agree = "—" if r.get("agreement_vs_fp32") is None else f"{100 * r['agreement_vs_fp32']:.2f}%"
        lines.append(
            f"| {r['backend']} | {r['precision']} | {r['batch']} | {_f(lat['p50_ms'])} | {_f(lat['p90_ms'])} | "
            f"{_f(lat['p99_ms'])} | {_f(lat['max_ms'])} | {_f(r['tiles_per_s'])} | {_f(r['megapixels_per_s'])} "
            f"| {agree} |"
        )
    choices = _choices(reports)
    lines += [""] + ([f"- {x}" for x in choices] + [""] if choices else [])
    for r in reports:
        lines.append(f"## {r['backend']} {r['precision']} batch {r['batch']}")
        lines.append("")
        lines.append(render_markdown(r).split("\n", 2)[2])
    return "\n".join(lines)


def render_bench_terminal(reports: list[dict]) -> str:
    parts = [render_bench_table(reports)]
    for r in reports:
        parts.append(f"\n[{r['backend']} {r['precision']} batch {r['batch']}]\n" + render_table(r))
    return "\n".join(parts)


__all__ = [
    "run_bench",
    "bench_backend",
    "synthetic_tiles",
    "tiles_from_images",
    "render_bench_table",
    "render_bench_markdown",
    "render_bench_terminal",
    "library_versions",
]
