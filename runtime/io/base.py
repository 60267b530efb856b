"""Input sources and their options: what every format's reader shares.

A source turns whatever is on disk into what the model takes, uint8 RGB (HWC), one window at a time, plus a
validity mask where the input has nodata. The options (band choice, 16-bit stretch, nodata, the pixel limit for
whole-image decodes) are parsed and applied here, so every format reads them the same way. The formats
(`pillow.py`, `geotiff.py`) build on this module, never the other way round.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from co2s.errors import Co2SInputError

# Pillow's own warning threshold (about 89.5 MP): above it a whole-image decode is refused unless asked for.
DEFAULT_MAX_PIXELS = int(Image.MAX_IMAGE_PIXELS or 89_478_485)


@dataclass(frozen=True)
class Stretch:
    """Map each band's [lo, hi] to [0, 255]: fixed (`range`), data min/max, or per-band percentiles."""

    kind: str  # "range" | "minmax" | "percentile"
    lo: float = 0.0
    hi: float = 0.0

    def __str__(self) -> str:
        return self.kind if self.kind == "minmax" else f"{self.kind}:{self.lo:g},{self.hi:g}"


def parse_stretch(text: str | None) -> Stretch | None:
    """`percentile:2,98`, `minmax`, `range:0,10000`, or None/`none`."""
    if text is None or text.strip().lower() in ("", "none"):
        return None
    kind, _, args = text.strip().lower().partition(":")
    usage = "expected percentile:LO,HI (e.g. percentile:2,98), minmax, or range:MIN,MAX (e.g. range:0,10000)"
    if kind == "minmax" and not args:
        return Stretch("minmax")
    if kind in ("percentile", "range"):
        try:
            lo, hi = (float(v) for v in args.split(","))
        except ValueError:
            raise Co2SInputError(f"--stretch {text!r}: {usage}") from None
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo >= hi:
            raise Co2SInputError(f"--stretch {text!r}: LO must be below HI")
        if kind == "percentile" and not (0 <= lo and hi <= 100):
            raise Co2SInputError(f"--stretch {text!r}: percentiles are between 0 and 100")
        return Stretch(kind, lo, hi)
    raise Co2SInputError(f"--stretch {text!r}: {usage}")


def parse_bands(text: str | None) -> tuple[int, ...] | None:
    """`3,2,1` (1-based, GDAL order) or a single band `1` (grey, repeated to RGB)."""
    if text is None or not text.strip():
        return None
    try:
        bands = tuple(int(b) for b in text.split(","))
    except ValueError:
        raise Co2SInputError(f"--bands {text!r}: expected 1-based band numbers like 3,2,1") from None
    if len(bands) not in (1, 3) or min(bands) < 1:
        raise Co2SInputError(f"--bands {text!r}: give three band numbers (R,G,B) or one (grey), counting from 1")
    return bands


@dataclass(frozen=True)
class InputOptions:
    bands: tuple[int, ...] | None = None
    stretch: Stretch | None = None
    nodata: float | None = None  # overrides the file's nodata value
    max_pixels: int = DEFAULT_MAX_PIXELS


def select_bands(count: int, options: InputOptions, path: Path, what: str = "", dtype=np.uint8) -> tuple[int, ...]:
    """0-based indices of three bands to read, or a clear error when the choice is not obvious."""
    if options.bands is not None:
        bad = [b for b in options.bands if b > count]
        if bad:
            raise Co2SInputError(
                f"{path}: --bands {','.join(map(str, options.bands))} asks for band {bad[0]}, "
                f"but the image has {count} band(s)"
            )
        bands = options.bands * 3 if len(options.bands) == 1 else options.bands
        return tuple(b - 1 for b in bands)
    if count == 3:
        return (0, 1, 2)
    hint = {1: "pass --bands 1 to use it as grey", 2: "pass --bands 1 to use the first band as grey"}.get(
        count, "pass --bands R,G,B (e.g. --bands 1,2,3; for multispectral data often 3,2,1 or 4,3,2)"
    )
    if np.dtype(dtype) != np.uint8 and options.stretch is None:
        hint += " and --stretch percentile:2,98 (the data is not 8-bit)"
    raise Co2SInputError(f"{path}: {count}-band {what}image, the model expects RGB; {hint}")


def stretch_limits(
    samples: np.ndarray, stretch: Stretch, valid: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-band (lo, hi) from `samples` [C, ...]; `valid` (same trailing shape) excludes nodata pixels."""
    c = samples.shape[0]
    flat = samples.reshape(c, -1).astype(np.float64)
    if valid is not None:
        flat = flat[:, valid.reshape(-1)]
    if stretch.kind == "range":
        return np.full(c, stretch.lo), np.full(c, stretch.hi)
    if flat.shape[1] == 0:
        return np.zeros(c), np.ones(c)
    if stretch.kind == "minmax":
        lo, hi = flat.min(axis=1), flat.max(axis=1)
    else:
        lo, hi = np.percentile(flat, [stretch.lo, stretch.hi], axis=1)
    hi = np.where(hi > lo, hi, lo + 1)  # a flat band maps to 0, not to a division by zero
    return lo, hi


def apply_stretch(pixels: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(h, w, C) any dtype -> uint8 with band c's [lo_c, hi_c] -> [0, 255]."""
    x = (pixels.astype(np.float32) - lo.astype(np.float32)) * (255.0 / (hi - lo)).astype(np.float32)
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


def needs_stretch_error(path: Path, dtype: np.dtype) -> Co2SInputError:
    bits = f"{np.dtype(dtype).itemsize * 8}-bit {np.dtype(dtype).name}"
    return Co2SInputError(
        f"{path}: {bits} data, the model takes 8-bit; pass --stretch percentile:2,98 (per band), "
        f"--stretch minmax, or a fixed --stretch range:MIN,MAX (e.g. range:0,10000)"
    )


class RasterSource(ABC):
    """An opened input image or scene that serves uint8 RGB windows (one frame; a video source yields these)."""

    path: Path
    height: int
    width: int
    windowed: bool = False  # True: read window by window (rasterio), outputs are GeoTIFFs

    @abstractmethod
    def read(self, y0: int, x0: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray | None]:
        """(h, w, 3) uint8 RGB and a (h, w) bool valid mask, or None when every pixel is valid."""

    def preview(self, max_side: int) -> np.ndarray:
        """A decimated uint8 RGB view for the overlay (whole image for in-memory sources)."""
        rgb, _ = self.read(0, 0, self.height, self.width)
        step = max(1, math.ceil(max(self.height, self.width) / max_side))
        return rgb[::step, ::step]

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


class ArraySource(RasterSource):
    """A decoded image in memory: uint8 RGB plus an optional valid mask."""

    def __init__(self, path: Path, rgb: np.ndarray, valid: np.ndarray | None = None):
        self.path = Path(path)
        self.rgb = rgb
        self.valid = valid
        self.height, self.width = rgb.shape[:2]

    def read(self, y0: int, x0: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray | None]:
        v = None if self.valid is None else self.valid[y0 : y0 + h, x0 : x0 + w]
        return self.rgb[y0 : y0 + h, x0 : x0 + w], v


def array_to_source(
    path: Path, arr: np.ndarray, options: InputOptions, what: str = "", valid: np.ndarray | None = None
) -> ArraySource:
    """[H, W, C] array of any dtype -> RGB uint8 source, applying band choice, nodata and stretch; `valid` (from an
    alpha channel) marks the pixels that hold data, and --nodata narrows it further."""
    h, w, c = arr.shape
    if h == 0 or w == 0:
        raise Co2SInputError(f"{path}: empty image ({w}x{h} pixels)")
    idx = select_bands(c, options, path, what, arr.dtype)
    sel = arr if (c == 3 and idx == (0, 1, 2)) else arr[:, :, list(idx)]
    if options.nodata is not None:
        has_data = ~np.all(sel == np.asarray(options.nodata, dtype=sel.dtype), axis=2)
        valid = has_data if valid is None else valid & has_data
    if sel.dtype != np.uint8 or options.stretch is not None:
        if options.stretch is None:
            raise needs_stretch_error(path, sel.dtype)
        lo, hi = stretch_limits(np.moveaxis(sel, 2, 0), options.stretch, valid)
        sel = apply_stretch(sel, lo, hi)
    return ArraySource(path, np.ascontiguousarray(sel), valid)
