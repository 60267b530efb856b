"""`co2s-stream BUNDLE SOURCE --out DIR`: the onboard loop (runtime/stream.py) with its outputs on disk.

Outputs in --out:
    frames.jsonl      one line per processed frame, flushed per line (a killed run keeps every line but the one
                      being written)
    summary.json/.md  at the end (also after SIGINT/SIGTERM), written atomically (co2s.files)
    overlay.mp4       classes over the frames, fragmented MP4 (plays up to its last fragment after a kill)
    footprints.gpkg   with --telemetry, or stills with EXIF GPS: one polygon per placed frame (written at the end,
                      also after a signal)
    frames/NNNNNN.*   with --save-every N: labels/confidence rasters of every Nth processed frame (the runtime's
                      sinks: committed atomically one frame at a time): GeoTIFFs in the frame's UTM zone when it
                      has a footprint, PNGs otherwise

SIGINT and SIGTERM set a flag: the frame in flight is finished and written, the video closed, the summary
written, and the exit status is 130 ("interrupted"), as for every co2s tool.
"""

from __future__ import annotations

import json
import logging
import signal
import time
from pathlib import Path

import click

from co2s.cli import EXIT_INTERRUPTED, EXIT_OK, EXIT_TERMINATED, log_options, remove_if_failed, run
from co2s.errors import Co2SInputError, ensure_writable_dir, output_error
from co2s.files import atomic_write_text

from .cli import CONTEXT, _pick_precision, backend_options
from .io.base import ArraySource

log = logging.getLogger("co2s.runtime")


class JsonLines:
    """frames.jsonl: each record one write() and a flush, so a kill leaves whole lines only."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.f = open(path, "w", encoding="utf-8", buffering=1)
        except OSError as e:
            raise output_error(path, e) from None

    def write(self, record: dict) -> None:
        try:
            self.f.write(json.dumps(record, separators=(",", ":")) + "\n")
            self.f.flush()
        except OSError as e:
            raise output_error(self.path, e) from None

    def close(self) -> None:
        self.f.close()


class PlacedFrame(ArraySource):
    """A processed frame with a ground footprint, as a georeferenced source: open_sink writes its rasters as
    GeoTIFFs with the footprint's affine transform in its UTM zone."""

    windowed = True

    def __init__(self, path: Path, rgb, fp):
        from rasterio.crs import CRS
        from rasterio.transform import Affine

        super().__init__(path, rgb)
        self.crs, self.transform = CRS.from_epsg(fp.epsg), Affine(*fp.transform)


class SaveEvery:
    """--save-every N: labels/confidence rasters of every Nth processed frame through the runtime's sinks:
    GeoTIFFs for a frame with a footprint (rasterio, the [geo] extra), PNGs otherwise (said once)."""

    def __init__(self, out: Path, n: int, palette, classes):
        self.out, self.n, self.palette, self.classes = out, n, palette, classes
        self._said = False

    def _source(self, r, stem: Path) -> ArraySource:
        why = None
        if r.footprint is not None:
            try:
                return PlacedFrame(self.out / stem, r.rgb, r.footprint)
            except ImportError:
                why = "georeferenced GeoTIFFs need rasterio (pip install 'co2s[geo]'); saving PNGs"
        elif r.pose is not None or r.unplaced is not None:  # geotagging, but this frame has no footprint
            why = f"frame {r.index} has no ground footprint ({r.unplaced or 'no pose'}): PNGs for frames like it"
        if why and not self._said:
            self._said = True
            log.warning("--save-every: %s", why)
        return ArraySource(self.out / stem, r.rgb)

    def __call__(self, r) -> None:
        if not self.n or r.seq % self.n:
            return
        from .io import open_sink

        stem = Path("frames") / f"{r.index:06d}"
        src = self._source(r, stem)
        sink = open_sink(src, self.out, stem, palette=self.palette, classes=self.classes, overlay=False)
        try:
            sink.write_strip(0, r.labels.shape[0], r.labels, r.confidence)
            sink.commit()
        except BaseException:
            sink.abort()
            raise


@click.command(name="co2s-stream", context_settings=CONTEXT)
@log_options
@click.argument("bundle", type=click.Path())
@click.argument("source", required=False)
@click.option("--out", "-o", "out_dir", required=True, type=click.Path(file_okay=False), help="output folder")
@click.option("--watch", "watch_dir", type=click.Path(), help="process new stills written into this folder")
@backend_options
@click.option(
    "--drop",
    type=click.Choice(("latest", "none")),
    help="latest: always process the newest frame, drop (and count) older ones; none: every frame. "
    "Default: latest for live sources, none for files, image sequences and --watch",
)
@click.option("--stride", type=click.IntRange(min=1), default=1, show_default=True, help="process every Nth frame")
@click.option("--realtime", is_flag=True, help="files: pace decoding at the file's frame rate, like a live camera")
@click.option("--fps", type=click.FloatRange(min=0, min_open=True), help="image sequences: their frame rate")
@click.option(
    "--frame-scale", type=click.FloatRange(0, 4, min_open=True), help="scale frames before tiling (0.5: half size)"
)
@click.option("--tile-overlap", help="overlap of neighbouring tiles: a fraction of the tile or pixels (default 1/6)")
@click.option("--batch", type=click.IntRange(min=1), help="tiles per backend call (default: the model's largest)")
@click.option("--threads", type=click.IntRange(min=1), help="onnxruntime CPU threads")
@click.option("--save-every", type=click.IntRange(min=0), default=0, help="save label/confidence rasters every N")
@click.option("--overlay/--no-overlay", default=True, show_default=True, help="write overlay.mp4")
@click.option("--reconnect", type=click.IntRange(min=0), default=0, show_default=True, help="live: reopen N times")
@click.option("--max-frames", type=click.IntRange(min=1), help="stop after this many processed frames")
@click.option("--idle-exit", type=click.FloatRange(min=0), help="--watch: stop after this many seconds without a still")
@click.option(
    "--telemetry",
    type=click.Path(),
    help="DJI .SRT sidecar or CSV (time,lat,lon,alt_agl,yaw[,pitch,roll]): a pose and ground footprint per frame "
    "(stills without it: their own EXIF GPS and XMP pose)",
)
@click.option(
    "--camera-hfov",
    type=float,
    help="camera's horizontal field of view in degrees (needed with --telemetry; stills: else from EXIF)",
)
@click.option("--warmup", type=click.IntRange(min=0), default=1, show_default=True, help="untimed backend calls first")
def stream_command(
    bundle,
    source,
    out_dir,
    watch_dir,
    backend,
    precision,
    drop,
    stride,
    realtime,
    fps,
    frame_scale,
    tile_overlap,
    batch,
    threads,
    save_every,
    overlay,
    reconnect,
    max_frames,
    idle_exit,
    telemetry,
    camera_hfov,
    warmup,
):
    """Segment a live camera, stream, video file or folder of stills frame by frame, counting every dropped frame.

    SOURCE: a video file (.mp4 .mkv .mov .ts .avi), rtsp:// rtp:// udp:// http(s):// stream, a V4L2 camera
    (/dev/video0, v4l2:///dev/video0), gst:PIPELINE (OpenCV with GStreamer), an image folder or glob; or
    --watch DIR instead. Writes frames.jsonl, summary.json, summary.md and overlay.mp4 into --out.
    """
    from co2s.bundle import load_bundle

    from .io import parse_address
    from .stream_report import render_markdown
    from .streaming import FrameStream, StreamOptions
    from .tiling import parse_overlap

    if (source is None) == (watch_dir is None):
        raise click.UsageError("give a SOURCE or --watch DIR (one of them)")
    address = parse_address(watch_dir or source, watch=watch_dir is not None)
    if idle_exit is not None and address.kind != "watch":
        raise Co2SInputError("--idle-exit applies to --watch only")
    remove_if_failed(out_dir)
    out = ensure_writable_dir(out_dir, f"--out {out_dir}: cannot write to this folder")
    b = load_bundle(bundle)
    options = StreamOptions(
        drop=drop,
        stride=stride,
        realtime=realtime,
        fps=fps,
        frame_scale=frame_scale,
        overlap=parse_overlap(tile_overlap, b.tile) if tile_overlap else None,
        batch=batch,
        reconnect=reconnect,
        max_frames=max_frames,
        idle_exit_s=idle_exit,
        telemetry=telemetry,
        camera_hfov=camera_hfov,
    )
    stills = address.kind in ("images", "watch")
    if telemetry or stills:
        try:
            import pyogrio  # noqa: F401 - footprints.gpkg: a missing [geo] extra is named before the model loads
        except ImportError:
            if telemetry:
                raise
            stills = False
            log.warning("stills' EXIF positions give no footprints.gpkg: it needs pip install 'co2s[geo]'")
    # the source opens (and is checked) inside FrameStream before the backend
    fs = FrameStream(
        b,
        address.target if address.kind != "gst" else str(address),
        options,
        backend=backend,
        precision=_pick_precision(b, backend, precision),
        watch=address.kind == "watch",
        warmup=warmup,
        threads=threads,
    )
    signalled: list[int] = []

    def on_signal(signum, frame):
        signalled.append(signum)
        fs.stop()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    lines = JsonLines(out / "frames.jsonl")
    save = SaveEvery(out, save_every, b.palette, list(b.classes))
    video = None
    footprints = None
    if telemetry or stills:
        from .footprint import FootprintLayer

        footprints = FootprintLayer(out / "footprints.gpkg", list(b.classes))
    n = 0
    try:
        log.info(
            "co2s-stream: %s (%s), drop %s, stride %d%s; outputs in %s",
            address,
            "live" if address.live else "recorded",
            fs.drop,
            stride,
            ", realtime" if realtime else "",
            out,
        )
        for r in fs:
            t0 = time.perf_counter()
            if overlay:
                if video is None:
                    from .io.sinks import overlay_image
                    from .io.video import OverlayVideo

                    video = OverlayVideo(out / "overlay.mp4", *r.rgb.shape[:2], fs.source.fps or options.fps)
                video.write(overlay_image(r.rgb, r.labels, b.palette), r.capture_t if r.pts_s is None else r.pts_s)
            save(r)
            write_s = time.perf_counter() - t0
            fs.add_stage("write", write_s)
            rec = r.record()
            rec["stages_ms"]["write"] = round(write_s * 1e3, 3)
            if footprints is not None and r.footprint is not None:
                footprints.add(r.footprint, r.pose, r.index, r.pts_s, rec["class_fractions"], rec["mean_confidence"])
            elif footprints is not None and r.unplaced is not None:
                footprints.skip(r.unplaced)
            lines.write(rec)
            n += 1
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        lines.close()
        if video is not None:
            video.close()
        fs.close()
        summary = fs.summary()
        placed = footprints.write() if footprints is not None else None
        summary["outputs"] = {
            "frames_jsonl": "frames.jsonl",
            "overlay": "overlay.mp4" if video else None,
            "footprints": placed.name if placed else None,
        }
        if footprints is not None:
            summary["footprints"] = {
                "placed": len(footprints.rows),
                "epsg": footprints.epsg,
                "unplaced": footprints.unplaced,
            }
        summary["interrupted"] = bool(signalled)
        try:
            atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, default=str))
            atomic_write_text(out / "summary.md", render_markdown(summary))
        except OSError as e:
            raise output_error(out / "summary.json", e) from None
    f, lat = summary["frames"], summary["latency_ms"]
    drops = ", ".join(f"{k} {v}" for k, v in f["dropped"].items() if v) or "none"
    p = lambda v: "—" if v is None else f"{v:.0f}"  # noqa: E731
    click.echo(
        f"done: {f['processed']} of {f['decoded']} frames processed (dropped: {drops}) in {summary['wall_s']:.1f} s, "
        f"{summary['achieved_fps']:.1f} fps; latency p50 {p(lat['p50_ms'])} ms, p99 {p(lat['p99_ms'])} ms; "
        f"outputs in {out}",
        err=True,
    )
    if signalled:
        click.echo(f"interrupted ({signal.Signals(signalled[0]).name}): the summary covers the frames so far", err=True)
        return EXIT_TERMINATED if signalled[0] == signal.SIGTERM else EXIT_INTERRUPTED
    return EXIT_OK


def stream_main(argv: list[str] | None = None) -> None:
    run(stream_command, argv, prog="co2s-stream", extra="video")
