"""The runtime's source/sink layer: inputs become uint8 RGB windows, labels and confidence become files.

One way only, each module importing only those above it:

    base.py     sources and input options (RasterSource, InputOptions, bands, stretch, nodata, max-pixels)
    sinks.py    sinks and output files (Sink, OutputPaths, overlay and palette helpers, commit into place)
    pillow.py   PNG/JPEG/BMP/WebP/simple TIFF through Pillow: whole-image reader, PNG sink
    geotiff.py  GeoTIFF and other GDAL rasters through rasterio: windowed reader and writer, georeferencing kept
    frames.py   frame sources for the streaming loop: Frame, FrameSource, the address string (parse_address)
    video.py    PyAV video files, streams and V4L2 cameras, GStreamer via OpenCV, the fragmented-MP4 overlay video
    stills.py   image sequences and watched folders as frames (decoded by open_source)
    here        open_source / open_sink / open_frame_source, which know every format and pick one

A source serves windows of one image or scene (`RasterSource.read`); a sink takes labels and confidence in row
strips and commits them (`Sink.write_strip`, `Sink.commit`). A new kind of input or output (video frames, say)
is one more module beside pillow.py and geotiff.py that implements these two, and one more branch here.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from .base import DEFAULT_MAX_PIXELS, InputOptions, RasterSource, Stretch, parse_bands, parse_stretch
from .frames import Address, Frame, FrameSource, parse_address
from .geotiff import GeoTiffSink, GeoTiffSource
from .pillow import PngSink, open_pillow
from .sinks import OutputPaths, Sink, output_paths

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "Address",
    "Frame",
    "FrameSource",
    "IMAGE_EXTENSIONS",
    "InputOptions",
    "OutputPaths",
    "RasterSource",
    "Sink",
    "Stretch",
    "open_frame_source",
    "open_sink",
    "open_source",
    "parse_address",
    "parse_bands",
    "parse_stretch",
]

log = logging.getLogger("co2s.runtime")
# Extensions picked up when a folder is given (explicit file arguments are tried whatever their name).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".jp2", ".vrt", ".img")
RASTERIO_EXTENSIONS = (".tif", ".tiff", ".jp2", ".vrt", ".img")


def use_rasterio_for(path: Path) -> bool:
    """TIFF and other GDAL rasters go through rasterio (windowed, georeferenced) when it is installed."""
    if path.suffix.lower() not in RASTERIO_EXTENSIONS:
        return False
    try:
        import rasterio  # noqa: F401
    except ImportError:
        return False
    return True


def open_source(path: str | os.PathLike, options: InputOptions) -> RasterSource:
    path = Path(path)
    if use_rasterio_for(path):
        return GeoTiffSource(path, options)
    src = open_pillow(path, options)
    if path.suffix.lower() in (".tif", ".tiff"):
        log.warning(
            "%s: read with Pillow because rasterio is not installed; any georeferencing is dropped "
            "(pip install 'co2s[geo]')",
            path,
        )
    return src


def open_sink(
    source: RasterSource,
    out_dir: str | os.PathLike,
    rel_stem: Path,
    *,
    palette: np.ndarray,
    classes: list[str],
    overlay: bool = True,
    confidence: bool = True,
    overviews: bool = True,
    cog: bool = False,
) -> Sink:
    """The sink for `source`'s outputs under `<out_dir>/<rel_stem>.*`: GeoTIFFs (georeferenced like the scene) for a
    windowed source, PNGs for an image decoded whole."""
    paths = output_paths(Path(out_dir), rel_stem, geo=source.windowed, overlay=overlay, confidence=confidence)
    if source.windowed:
        return GeoTiffSink(source, paths, palette, classes, overviews=overviews, cog=cog)
    return PngSink(source, paths, palette, classes)


def open_frame_source(
    address: str | Address,
    *,
    watch: bool = False,
    fps: float | None = None,
    scale: float | None = None,
    options: InputOptions | None = None,
    idle_exit_s: float | None = None,
) -> FrameSource:
    """The frame source behind one address string (see frames.KNOWN_FORMS), opened: what is wrong with it is
    reported here, before any model loads. Video and streams need PyAV (the [video] extra), imported only here."""
    a = address if isinstance(address, Address) else parse_address(address, watch=watch)
    options = options or InputOptions()

    def read(path: Path) -> np.ndarray:
        src = open_source(path, options)
        try:
            rgb, _ = src.read(0, 0, src.height, src.width)
            return np.ascontiguousarray(rgb)
        finally:
            src.close()

    if a.kind in ("images", "watch"):
        from .stills import ImageSequence, WatchedFolder

        if a.kind == "images":
            return ImageSequence(a, read, fps=fps, scale=scale)
        return WatchedFolder(a, read, scale=scale, idle_exit_s=idle_exit_s)
    if a.kind == "gst":
        from .video import GstSource

        return GstSource(a, scale=scale)
    from .video import AvSource

    src = AvSource(a, scale=scale)
    if not a.live:
        src.check_first_frame()  # zero-frame and truncated files fail here, not after the model loaded
    return src
