"""Formats Pillow decodes and writes: PNG, JPEG, BMP, WebP and simple TIFF in, palette/grey PNG out.

These images are decoded whole (they are in memory anyway), so a reader refuses headers above a pixel-count limit
(a decompression-bomb guard), and the sink keeps the whole label image until it writes its PNGs at commit.
Every decoding failure becomes a Co2SInputError that names the file.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from co2s.errors import Co2SInputError, output_error

from ..tiling import NODATA_LABEL
from .base import ArraySource, InputOptions, RasterSource, array_to_source
from .sinks import OutputPaths, Sink, palette_lut, quicklook


# ------------------------------------------------------------------------------------------------- reading
def _pillow_bands(img: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """Pillow image -> (array [H, W, C], valid mask from alpha or None). Colour models other than RGB are converted
    (their channels are not separate measurements: a palette's indices, CMYK inks); an alpha channel (RGBA, LA, a
    palette's transparency) is not a band but the nodata mask: alpha 0 = no data. Numeric channels (L, I;16, F)
    are kept as they are."""
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif img.mode == "PA":
        img = img.convert("RGBA")
    elif img.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        img = img.convert("RGB")  # Pillow undoes Adobe's inverted CMYK JPEGs while decoding
    elif img.mode == "1":
        img = img.convert("L")
    elif img.mode == "RGBa":  # premultiplied alpha
        img = img.convert("RGBA")
    elif img.mode == "La":
        img = img.convert("LA")
    valid = None
    if img.mode in ("RGBA", "LA"):
        alpha = np.asarray(img.getchannel("A"))
        valid = alpha > 0 if not alpha.all() else None
        img = img.convert("RGB" if img.mode == "RGBA" else "L")
    arr = np.asarray(img)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return arr, valid


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
            # the orientation a viewer shows (phones and drones store sensor rows plus an EXIF Orientation tag):
            # labels must line up with the image as users see it
            img = ImageOps.exif_transpose(img)
            arr, alpha_valid = _pillow_bands(img)
        except Image.DecompressionBombError as e:
            raise Co2SInputError(f"{path}: refused as a decompression bomb ({e})") from None
        except _DECODE_ERRORS as e:  # truncated streams, corrupt chunks, bad CRCs
            raise Co2SInputError(f"{path}: truncated or corrupt image data ({_describe(e)})") from None
    return array_to_source(path, arr, options, valid=alpha_valid)


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


# ------------------------------------------------------------------------------------------------- writing
def save_labels_png(path: Path, labels: np.ndarray, palette: np.ndarray) -> None:
    """Palette PNG: pixel values are class indices (np.asarray(Image.open(p)) gives them back), viewers show colours."""
    img = Image.fromarray(labels)
    img.putpalette(palette_lut(palette).reshape(-1).tolist())
    img.save(path, format="PNG", compress_level=3)  # zlib 6 is 4x slower for a few % smaller files


def save_confidence_png(path: Path, confidence: np.ndarray) -> None:
    """8-bit grey: value = round(255 * confidence)."""
    q = np.clip(np.nan_to_num(confidence) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    Image.fromarray(q).save(path, format="PNG", compress_level=3)


class PngSink(Sink):
    """Whole-image arrays for inputs Pillow decoded (they are in memory anyway), PNG files at commit."""

    def __init__(self, source: RasterSource, paths: OutputPaths, palette: np.ndarray, classes: list[str] | None = None):
        super().__init__(paths)
        self.source, self.palette, self.classes = source, palette, classes
        self.height, self.width = source.height, source.width
        self.labels = np.full((source.height, source.width), NODATA_LABEL, np.uint8)
        self.confidence = np.zeros((source.height, source.width), np.float32) if paths.confidence else None

    def write_strip(self, y0, y1, labels, confidence) -> None:
        self.labels[y0:y1] = labels
        if self.confidence is not None and confidence is not None:
            self.confidence[y0:y1] = confidence

    def finished_rows(self, y0: int, y1: int) -> tuple[np.ndarray, np.ndarray | None]:
        return self.labels[y0:y1], None if self.confidence is None else self.confidence[y0:y1]

    def commit(self) -> list[Path]:
        pairs = []
        try:
            for final in self.paths.all():
                tmp = self._temp(final)
                if final == self.paths.labels:
                    save_labels_png(tmp, self.labels, self.palette)
                elif final == self.paths.overlay:
                    rgb, _ = self.source.read(0, 0, self.source.height, self.source.width)
                    Image.fromarray(quicklook(rgb, self.labels, self.palette, self.classes)).save(
                        tmp, format="PNG", compress_level=1
                    )
                else:
                    save_confidence_png(tmp, self.confidence)
                pairs.append((tmp, final))
        except OSError as e:
            self.abort()
            raise output_error(final, e) from None
        except BaseException:
            self.abort()
            raise
        return self._move_into_place(pairs)
