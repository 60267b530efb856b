"""`co2s-infer` (segment files, folders and GeoTIFF scenes) and `co2s-bench` (latency per precision and batch).

Exit status and messages follow co2s.cli: user-fixable problems (bad bundle, bad input, missing backend, an
output folder that cannot be written) print `error: <message>` and exit 1 without a traceback, as does a run in
which an input failed; usage errors exit 2; Ctrl-C exits 130 after removing partial outputs.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from pathlib import Path

import click

from co2s.bundle import Bundle
from co2s.bundle.formats import PRECISIONS
from co2s.cli import (
    EXIT_FAILED,
    EXIT_OK,
    ListParam,
    is_verbose,
    log_options,
    progress_bar,
    remove_if_failed,
    renamed_option,
    run,
)
from co2s.errors import Co2SInputError, ensure_writable_dir, output_error

from .backends import BACKENDS
from .io import DEFAULT_MAX_PIXELS, InputOptions, parse_bands, parse_stretch

log = logging.getLogger("co2s.runtime")
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}


def _input_options(bands, stretch, nodata, max_pixels) -> InputOptions:
    opts = InputOptions(
        bands=parse_bands(bands),
        stretch=parse_stretch(stretch),
        nodata=nodata,
        max_pixels=max_pixels or DEFAULT_MAX_PIXELS,
    )
    if max_pixels:
        from PIL import Image

        # Pillow refuses images above 2x its own limit before we can apply ours: lift it to the user's choice.
        if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
            Image.MAX_IMAGE_PIXELS = max_pixels
    return opts


_common_input = [
    click.option(
        "--bands",
        help="1-based bands to use as R,G,B (e.g. 3,2,1), or one band as grey; needed for 1-, 2- and 4+-band images",
    ),
    click.option(
        "--stretch", help="8-bit conversion for 16-bit/float data: percentile:2,98 (per band), minmax, or range:MIN,MAX"
    ),
    click.option(
        "--nodata",
        type=float,
        help="input value marking nodata (overrides the file's); such pixels get "
        "label 255 and tiles made only of them are not run",
    ),
    click.option(
        "--max-pixels",
        type=click.IntRange(min=1),
        help=f"largest image decoded whole in memory (PNG/JPEG; default "
        f"{DEFAULT_MAX_PIXELS}): a decompression-bomb guard",
    ),
]


def _apply(options):
    def deco(f):
        for o in reversed(options):
            f = o(f)
        return f

    return deco


def _pick_precision(bundle: Bundle, backend: str, wanted: tuple[str, ...]) -> str:
    """--precision is a preference list: the first precision the bundle has for this backend (auto: any)."""
    if len(wanted) == 1:
        return wanted[0]  # auto, or one precision: open_backend says what is missing
    kinds = {"auto": ("engine", "onnx"), "tensorrt": ("engine",)}.get(backend, ("onnx",))
    have = {p for kind in kinds for p in bundle.precisions(kind)}
    for p in wanted:
        if p in have:
            return p
    raise Co2SInputError(
        f"--precision {','.join(wanted)}: bundle {bundle.root} has none of these for --backend {backend} "
        f"(it has {', '.join(p for p in PRECISIONS if p in have) or 'none'})"
    )


class _TqdmProgress:
    def __init__(self):
        self._lock = threading.Lock()
        self.bar = progress_bar(total=0, unit="tile")

    def add_total(self, tiles: int) -> None:
        with self._lock:
            self.bar.total += tiles
            self.bar.refresh()

    def update(self, tiles: int) -> None:
        with self._lock:
            self.bar.update(tiles)

    def job_done(self, result) -> None:
        if result.status == "failed" and not self.bar.disable:  # live, as it happens; the summary lists it again
            with self._lock:
                self.bar.write(f"error: {result.message}", file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


def backend_options(f):
    """--backend and --precision, meaning the same in every runtime tool that runs one model."""
    f = click.option(
        "--precision",
        type=ListParam(PRECISIONS, keywords=("auto",)),
        default="auto",
        show_default=True,
        help="auto: on a GPU fp16 first; on the CPU the fastest measured on this machine (once, cached); never one "
        "that failed parity. Or precisions in order of preference: the first the bundle has",
    )(f)
    return click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True)(f)


@click.command(name="co2s-infer", context_settings=CONTEXT)
@log_options
@click.argument("bundle", type=click.Path())
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--out", "-o", "out_dir", required=True, type=click.Path(file_okay=False), help="output folder")
@backend_options
@click.option(
    "--tile-overlap",
    help="overlap of neighbouring tiles: a fraction of the tile (0.25) or whole pixels (64), at most half the "
    "tile; default 1/6 of the tile (stride 5/6)",
)
@click.option(
    "--blend/--no-blend",
    default=None,
    help="blend tiles across their overlaps (default): class probabilities when the bundle outputs probs, else "
    "each tile's label and confidence as a vote; --no-blend takes each pixel from the tile where it is most central",
)
@click.option("--confidence/--no-confidence", default=True, show_default=True, help="write the confidence raster")
@click.option("--overlay/--no-overlay", default=True, show_default=True, help="write the colour overlay PNG")
@click.option(
    "--overviews/--no-overviews",
    default=True,
    show_default=True,
    help="internal overviews in GeoTIFF outputs (fast zoomed-out display in GIS tools)",
)
@click.option(
    "--cog",
    is_flag=True,
    help="write GeoTIFF outputs (labels, confidence) as Cloud-Optimized GeoTIFFs: tiled, overviews (nearest for "
    "labels), palette kept; plain images still give PNGs",
)
@click.option(
    "--vector",
    type=click.Choice(["gpkg", "geojson"]),
    help="also write the labels as polygons, NAME.polygons.gpkg|geojson: one feature per connected region with "
    "class_index, class_name, pixels, area_m2 (projected rasters), mean_confidence",
)
@click.option(
    "--min-area",
    help="with --vector: leave out regions smaller than this; a number is m² on a projected raster and pixels "
    "otherwise, or say which: 500m2, 20px",
)
@click.option("--simplify", type=float, help="with --vector: simplification tolerance in map units (default: none)")
@_apply(_common_input)
@click.option("--batch", type=click.IntRange(min=1), help="tiles per batch (default: the model's preferred batch)")
@click.option("--readers", type=click.IntRange(min=1), default=2, show_default=True, help="decode/read threads")
@click.option("--threads", type=click.IntRange(min=1), help="onnxruntime CPU threads")
@click.option("--cuda-graph", is_flag=True, help="native TensorRT: replay the enqueue as a CUDA graph")
@click.option("--skip-existing", is_flag=True, help="skip inputs whose labels output already exists")
@click.option("--fail-fast", is_flag=True, help="stop at the first bad input (default: report it and go on)")
@click.option("--profile", is_flag=True, help="print per-stage timings and write profile.json/.md to --out")
@click.option("--warmup", type=click.IntRange(min=0), default=2, show_default=True, help="untimed backend calls first")
def infer_command(
    bundle,
    inputs,
    out_dir,
    backend,
    precision,
    tile_overlap,
    blend,
    confidence,
    overlay,
    overviews,
    cog,
    vector,
    min_area,
    simplify,
    bands,
    stretch,
    nodata,
    max_pixels,
    batch,
    readers,
    threads,
    cuda_graph,
    skip_existing,
    fail_fast,
    profile,
    warmup,
):
    """Segment images, folders of images and GeoTIFF scenes with a co2s bundle.

    Writes, per input, NAME.labels.png|tif (class index per pixel, 255 = nodata, palette attached),
    NAME.overlay.png (classes over the image) and NAME.confidence.png|tif (8-bit: PNG = 255 x p; GeoTIFF =
    254 x p with band scale 1/254, 255 = nodata). GeoTIFFs (and other rasters rasterio reads) are read and
    written in windows with their CRS and transform; other formats are decoded whole. A bad input is
    reported and skipped; the exit status is 1 if any input failed.
    """
    from co2s.bundle import load_bundle

    from .backends import open_backend
    from .io.vector import check_simplify, check_vector_format, parse_min_area
    from .pipeline import InferencePipeline, InferOptions, collect_inputs
    from .profiler import StageProfiler, cold_start_record, device_stamp, process_age_s, render_table, write_reports
    from .tiling import parse_overlap

    in_opts = _input_options(bands, stretch, nodata, max_pixels)
    min_area_opt = parse_min_area(min_area)
    simplify = check_simplify(simplify)
    if vector:
        check_vector_format(vector)  # before any work: the installed GDAL may lack the driver
    elif min_area is not None or simplify is not None:
        raise Co2SInputError(
            f"{'--min-area' if min_area is not None else '--simplify'} applies to polygons: add --vector gpkg or --vector geojson"
        )
    specs, ignored = collect_inputs(inputs)
    if not any(not s.refused for s in specs):
        raise Co2SInputError("no image files found in " + ", ".join(inputs))
    b = load_bundle(bundle)
    overlap = parse_overlap(tile_overlap, b.tile)
    options = InferOptions(
        overlap=overlap,
        blend=blend,
        confidence=confidence,
        overlay=overlay,
        input=in_opts,
        skip_existing=skip_existing,
        fail_fast=fail_fast,
        batch=batch,
        readers=readers,
        overviews=overviews,
        cog=cog,
        vector=vector,
        min_area=min_area_opt,
        simplify=simplify,
    )
    remove_if_failed(out_dir)
    out = ensure_writable_dir(out_dir, f"--out {out_dir}: cannot write to this folder")  # before the backend loads
    startup_s = process_age_s()
    be = open_backend(b, backend, _pick_precision(b, backend, precision), cuda_graph=cuda_graph, threads=threads)
    progress = None
    try:
        info = be.info()
        log.debug(
            "backend %s, precision %s, tile %d, overlap %d px, batch %s",
            info.name,
            be.precision,
            b.tile,
            overlap,
            be.batch,
        )
        log.debug("%s", be.precision_reason)
        first_call_s = None
        if warmup:  # the first warm-up call is the cold start's first result
            t = time.perf_counter()
            be.warmup(1)
            first_call_s = time.perf_counter() - t
            be.warmup(warmup - 1)
        prof = StageProfiler(enabled=profile)
        progress = _TqdmProgress()
        pipe = InferencePipeline(b, be, out, options, profiler=prof, progress=progress)
        summary = pipe.run(specs, ignored)
    finally:
        if progress is not None:
            progress.close()
        be.close()
    counts = summary.counts()
    tiles = sum(r.tiles for r in summary.results if r.status == "ok")
    mp = sum(r.size[0] * r.size[1] for r in summary.results if r.status == "ok" and r.size) / 1e6
    rate = f", {mp / summary.wall_s:.2f} MP/s" if summary.wall_s > 0 and mp else ""
    click.echo(
        f"done: {counts['ok']} ok, {counts['failed']} failed, {counts['skipped']} skipped in "
        f"{summary.wall_s:.1f} s ({tiles} tiles, {mp:.2f} MP{rate}) with {info.name} {be.precision}; "
        f"outputs in {out}",
        err=True,
    )
    if ignored:
        click.echo(f"ignored {len(ignored)} file(s) without an image extension (e.g. {ignored[0]})", err=True)
    if summary.stopped:
        click.echo(
            f"stopped {summary.stopped}: {counts['skipped']} input(s) not processed; fix that and rerun "
            f"with --skip-existing to finish them",
            err=True,
        )
    if summary.failed:
        click.echo("failed:", err=True)
        for r in summary.failed:
            click.echo(f"  {r.message}", err=True)
    if profile:
        rep = prof.report(
            device=device_stamp(use_gpu=be.on_gpu),
            backend=info.name,
            precision=be.precision,
            tile=b.tile,
            batch=pipe.batch,
            warmup_batches=warmup,
            overlap=overlap,
            blend=pipe.blend,
            inputs=len(specs),
            precision_choice=be.precision_reason,
            cold_start=cold_start_record(be, startup_s, first_call_s),
        )
        click.echo(render_table(rep), err=True)
        paths = write_reports(rep, str(out / "profile"))  # atomic; a failure is the one-line output error
        click.echo(f"profile: {', '.join(paths)}", err=True)
    return EXIT_FAILED if summary.failed else EXIT_OK


@click.command(name="co2s-bench", context_settings=CONTEXT)
@log_options
@click.argument("bundle", type=click.Path(), required=False, metavar="BUNDLE")
@click.option(
    "--doctor",
    is_flag=True,
    help="print what this machine can run (each backend: ready, or why not and the next step) and exit; "
    "with BUNDLE, also which of its artefacts each backend would take",
)
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True)
@click.option(
    "--precision",
    type=ListParam(PRECISIONS, keywords=("auto", "all")),
    default="auto",
    show_default=True,
    help="precisions to benchmark, comma separated; auto: the one co2s-infer would pick; all: every one the bundle has",
)
@click.option("--batch", "batches", type=ListParam(), default="1", show_default=True, help="batch sizes, e.g. 1,4")
@click.option(
    "--calls",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="timed backend calls (one batch each) per configuration",
)
@click.option("--warmup", type=click.IntRange(min=0), default=5, show_default=True, help="untimed backend calls first")
@renamed_option("--iters", "--calls", "co2s-train's --iters counts training iterations")
@click.option(
    "--images", multiple=True, type=click.Path(), help="images/folders to cut tiles from (default: synthetic scenes)"
)
@_apply(_common_input)
@click.option("--threads", type=click.IntRange(min=1), help="onnxruntime CPU threads")
@click.option("--cuda-graph", is_flag=True, help="native TensorRT: replay the enqueue as a CUDA graph")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="write all reports as JSON")
@click.option(
    "--markdown",
    "md_path",
    type=click.Path(dir_okay=False),
    help="write a Markdown report",
)
def bench_command(
    bundle,
    backend,
    precision,
    batches,
    calls,
    warmup,
    images,
    bands,
    stretch,
    nodata,
    max_pixels,
    threads,
    cuda_graph,
    json_path,
    md_path,
    doctor,
):
    """Latency (p50/p90/p99/max per batch), throughput and agreement with FP32 for each precision and batch.

    -v also prints the per-stage table of each configuration. --doctor: what this machine can run.
    """
    from co2s.bundle import load_bundle

    if doctor:
        from .doctor import doctor as run_doctor
        from .doctor import render

        click.echo(render(*run_doctor(load_bundle(bundle) if bundle else None)))
        return EXIT_OK
    if bundle is None:
        ctx = click.get_current_context()
        raise click.MissingParameter(ctx=ctx, param=next(p for p in ctx.command.params if p.name == "bundle"))
    from .bench import render_bench_markdown, render_bench_table, render_bench_terminal, run_bench

    b = load_bundle(bundle)
    precs = list(b.precisions("engine" if backend == "tensorrt" else "onnx")) if precision == ("all",) else precision
    for option, path in (("--json", json_path), ("--markdown", md_path)):
        if path:  # before the benchmark runs, not after
            folder = Path(path).parent
            remove_if_failed(folder)
            ensure_writable_dir(folder, f"{option} {path}: cannot write to {folder}")
    reports = run_bench(
        b,
        backend=backend,
        precisions=precs,
        batches=list(batches),
        calls=calls,
        warmup=warmup,
        images=list(images) or None,
        input_options=_input_options(bands, stretch, nodata, max_pixels),
        threads=threads,
        cuda_graph=cuda_graph,
        log=log.info,
    )
    click.echo(render_bench_terminal(reports) if is_verbose() else render_bench_table(reports))
    if json_path:
        _write_report(json_path, json.dumps({"bundle": str(b.root), "reports": reports}, indent=2, default=str))
    if md_path:
        _write_report(md_path, render_bench_markdown(reports))
    return EXIT_OK


def _write_report(path: str, text: str) -> None:
    try:
        Path(path).write_text(text)
    except OSError as e:
        raise output_error(path, e) from None


def infer_main(argv: list[str] | None = None) -> None:
    run(infer_command, argv, prog="co2s-infer")


def bench_main(argv: list[str] | None = None) -> None:
    run(bench_command, argv, prog="co2s-bench")


if __name__ == "__main__":  # python -m co2s.runtime.cli infer|bench ...
    args = sys.argv[1:]
    (bench_main if args[:1] == ["bench"] else infer_main)(args[1:] if args[:1] in (["bench"], ["infer"]) else args)
