"""Reading scenes as uint8 RGB windows: band choice, 16-bit stretch, nodata, and the Pillow reader.

A source turns whatever is on disk into what the model takes (uint8 RGB, HWC) one window at a time, plus a
validity mask where the input has nodata. Formats Pillow decodes (PNG, JPEG, BMP, WebP, simple TIFF) are
decoded whole, so they get a pixel-count limit against decompression bombs; GeoTIFF and other GDAL rasters go
through `geotiff.py` (rasterio) with windowed reads and need no such limit.
"""

from __future__ import annotations

import logging
import math
import os
import struct
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from co2s.errors import Co2SInputError

# Extensions picked up when a folder is given (explicit file arguments are tried whatever their name).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".jp2", ".vrt", ".img")
log = logging.getLogger("co2s.runtime")
RASTERIO_EXTENSIONS = (".tif", ".tiff", ".jp2", ".vrt", ".img")
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
    """An opened input scene that serves uint8 RGB windows."""

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


def _pillow_bands(img: Image.Image) -> tuple[Image.Image, np.ndarray]:
    """Pillow image -> (image, array [H, W, C]); colour models other than RGB are converted (their
    channels are not separate measurements), numeric channels (L, LA, RGBA, I;16, F) are kept as they are."""
    mode = img.mode
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        img = img.convert("RGB")
    elif mode == "1":
        img = img.convert("L")
    elif mode == "PA":
        img = img.convert("RGBA")
    arr = np.asarray(img)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return img, arr


def open_pillow(path: Path, options: InputOptions) -> ArraySource:
    """Decode a whole image with Pillow, with every failure turned into a message that names the file."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise Co2SInputError(f"{path}: cannot read ({e.strerror or e})") from None
    if path.is_dir():
        raise Co2SInputError(f"{path}: is a folder, not an image")
    if size == 0:
        raise Co2SInputError(f"{path}: empty file (0 bytes)")
    try:
        img = Image.open(path)
    except Image.DecompressionBombError as e:
        raise Co2SInputError(
            f"{path}: refused as a decompression bomb ({e}); if the file is trusted pass a larger "
            f"--max-pixels, or convert it to a tiled GeoTIFF (processed in windows)"
        ) from None
    except UnidentifiedImageError:
        raise Co2SInputError(f"{path}: {_unidentified_reason(path)}") from None
    except OSError as e:
        raise Co2SInputError(f"{path}: cannot read ({e.strerror or e})") from None
    except _DECODE_ERRORS as e:  # a recognised format whose header Pillow's parser rejects
        raise Co2SInputError(f"{path}: corrupt image header ({_describe(e)})") from None
    with img:
        w, h = img.size
        if w == 0 or h == 0:
            raise Co2SInputError(f"{path}: empty image ({w}x{h} pixels)")
        if w * h > options.max_pixels:
            raise Co2SInputError(
                f"{path}: header declares {w}x{h} = {w * h / 1e6:.0f} MP, above the {options.max_pixels / 1e6:.0f} MP "
                f"limit for images decoded whole (decompression-bomb guard); if the file is trusted pass "
                f"--max-pixels {w * h}, or convert it to a tiled GeoTIFF to process it in windows"
            )
        try:
            img.load()
            img, arr = _pillow_bands(img)
        except Image.DecompressionBombError as e:
            raise Co2SInputError(f"{path}: refused as a decompression bomb ({e})") from None
        except _DECODE_ERRORS as e:  # truncated streams, corrupt chunks, bad CRCs
            raise Co2SInputError(f"{path}: truncated or corrupt image data ({_describe(e)})") from None
    return array_to_source(path, arr, options)


# Pillow's format plugins parse untrusted bytes in Python, so a malformed file surfaces as whichever exception the
# broken field trips: the ones Pillow's own format sniffing treats as "not this format" (SyntaxError, IndexError,
# TypeError, struct.error) plus ValueError (a TIFF header, found by benchmarks/fuzz) and their arithmetic/lookup
# cousins. For the user each means the same thing: this file is damaged.
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    TypeError,
    IndexError,
    KeyError,
    EOFError,
    ZeroDivisionError,
    OverflowError,
    struct.error,
)


def _describe(e: BaseException) -> str:
    text = str(e).strip()
    if isinstance(e, (OSError, SyntaxError, ValueError)) and text:
        return text[:200]
    return f"{type(e).__name__}: {text[:200]}" if text else type(e).__name__


_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"BM", "BMP"),
    (b"GIF8", "GIF"),
    (b"RIFF", "WebP"),
)


def _unidentified_reason(path: Path) -> str:
    """Why Pillow gave up: a known signature with a broken header, an empty PNG, or not an image at all."""
    try:
        with open(path, "rb") as f:
            head = f.read(32)
    except OSError as e:
        return f"cannot read ({e.strerror or e})"
    for sig, name in _SIGNATURES:
        if head.startswith(sig):
            if name == "PNG" and head[12:16] == b"IHDR":
                w, h = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
                if w == 0 or h == 0:
                    return f"empty image ({w}x{h} pixels)"
            return f"{name} signature but an unreadable header (corrupt or truncated file)"
    return "not an image format this runtime reads (Pillow cannot identify it)"


def array_to_source(path: Path, arr: np.ndarray, options: InputOptions, what: str = "") -> ArraySource:
    """[H, W, C] array of any dtype -> RGB uint8 source, applying band choice, nodata and stretch."""
    h, w, c = arr.shape
    if h == 0 or w == 0:
        raise Co2SInputError(f"{path}: empty image ({w}x{h} pixels)")
    idx = select_bands(c, options, path, what, arr.dtype)
    sel = arr if (c == 3 and idx == (0, 1, 2)) else arr[:, :, list(idx)]
    valid = None
    if options.nodata is not None:
        valid = ~np.all(sel == np.asarray(options.nodata, dtype=sel.dtype), axis=2)
    if sel.dtype != np.uint8 or options.stretch is not None:
        if options.stretch is None:
            raise needs_stretch_error(path, sel.dtype)
        lo, hi = stretch_limits(np.moveaxis(sel, 2, 0), options.stretch, valid)
        sel = apply_stretch(sel, lo, hi)
    return ArraySource(path, np.ascontiguousarray(sel), valid)


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
        from .geotiff import open_geotiff

        return open_geotiff(path, options)
    src = open_pillow(path, options)
    if path.suffix.lower() in (".tif", ".tiff"):
        log.warning(
            "%s: read with Pillow because rasterio is not installed; any georeferencing is dropped "
            "(pip install 'co2s[geo]')",
            path,
        )
    return src
