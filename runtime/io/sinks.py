"""Output files of one input: class-index raster, colour overlay, optional confidence raster.

Every file is written under a hidden temporary name next to its destination (co2s.files.temp_name) and renamed
only when the whole input succeeded, so a failure (bad tile, full disk, Ctrl-C, a kill) never leaves a partial
output that looks finished. The labels file is renamed last: it is what `--skip-existing` looks for, so an input
counts as done only once all its files are in place. A write that fails (disk full, no permission, read-only file
system) is reported as a Co2SOutputError naming the output file. The formats (`pillow.py`, `geotiff.py`)
implement `Sink`; this module knows none of them.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from co2s.errors import output_error
from co2s.files import commit_files, remove_quietly, remove_stale_temps, temp_name

from ..tiling import NODATA_LABEL

OVERLAY_ALPHA = 0.5
PREVIEW_MAX_SIDE = 2048  # overlay of a GeoTIFF scene is a decimated quick-look, not a full-size copy


@dataclass(frozen=True)
class OutputPaths:
    labels: Path
    overlay: Path | None
    confidence: Path | None

    def all(self) -> list[Path]:
        return [p for p in (self.labels, self.overlay, self.confidence) if p is not None]


def output_base(out_dir: Path, rel_stem: Path) -> Path:
    """`<out>/<rel_stem>`: every output of the input is this plus `.labels.png`, `.areas.csv`, ..."""
    return Path(out_dir) / rel_stem


def output_paths(out_dir: Path, rel_stem: Path, *, geo: bool, overlay: bool, confidence: bool) -> OutputPaths:
    """`<out>/<rel_stem>.labels.png|tif`, `.overlay.png`, `.confidence.png|tif`."""
    ext = ".tif" if geo else ".png"
    base = Path(out_dir) / rel_stem
    return OutputPaths(
        base.with_name(base.name + ".labels" + ext),
        base.with_name(base.name + ".overlay.png") if overlay else None,
        base.with_name(base.name + ".confidence" + ext) if confidence else None,
    )


class Sink(ABC):
    """Where the labels (uint8 class indices, NODATA_LABEL where there was no data) and confidence (float32, 0-1)
    of one input go, as row strips in order; `commit` moves every file into place at once, `abort` drops them."""

    def __init__(self, paths: OutputPaths):
        self.paths = paths
        self._temps: list[Path] = []
        # products made from the finished rasters at commit (class areas, polygons): each is called with this sink
        # once its rasters are complete and returns (temporary, final) pairs, committed with the rasters
        self.products: list[Callable[[Sink], list[tuple[Path, Path]]]] = []

    height: int
    width: int

    def finished_rows(self, y0: int, y1: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Rows y0:y1 of the labels (uint8) and confidence (float32 0-1, or None) once every strip is written, for
        the products that read them back (polygons, strip by strip)."""
        raise NotImplementedError(f"{type(self).__name__} cannot give its results back")

    def georeference(self):
        """(crs, transform) of the outputs; (None, None) for plain images."""
        src = getattr(self, "source", None)
        return getattr(src, "crs", None), getattr(src, "transform", None)

    @abstractmethod
    def write_strip(self, y0: int, y1: int, labels: np.ndarray, confidence: np.ndarray | None) -> None: ...

    @abstractmethod
    def commit(self) -> list[Path]:
        """Finish every file and move it into place; returns the final paths."""

    def abort(self) -> None:
        """Drop every temporary file."""
        remove_quietly(self._temps)

    def _temp(self, final: Path) -> Path:
        """The temporary name `final` is written under; what a killed earlier run left for it (its process is
        gone) is removed on the way."""
        final.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(final.parent, final.name)
        tmp = temp_name(final)
        self._temps.append(tmp)
        return tmp

    def _move_into_place(self, pairs: list[tuple[Path, Path]]) -> list[Path]:
        """Rename each (temporary, final) pair, the labels file last (see the module docstring)."""
        final = self.paths.labels
        try:
            for product in self.products:
                pairs = pairs + product(self)
        except OSError as e:
            self.abort()
            raise output_error(e.filename or final, e) from None
        except BaseException:
            self.abort()
            raise
        ordered = sorted(pairs, key=lambda pair: pair[1] == self.paths.labels)  # stable: the others keep their order
        try:
            commit_files(ordered)
        except OSError as e:
            raise output_error(e.filename, e) from None
        return [f for _, f in pairs]


def palette_lut(palette: np.ndarray) -> np.ndarray:
    """256 x 3 colour table: class colours, black for the nodata label and unused indices."""
    lut = np.zeros((256, 3), np.uint8)
    n = min(len(palette), NODATA_LABEL)
    lut[:n] = np.asarray(palette, np.uint8)[:n]
    return lut


# Quick-look colours (the Okabe-Ito set, chosen to stay apart for colour-blind viewers too) used in place of a
# bundle colour that is too close to an earlier one: the labels raster keeps the bundle's palette, the overlay and
# its legend show the quick-look colours.
QUICKLOOK_COLOURS = np.array(
    [
        [230, 159, 0],
        [86, 180, 233],
        [0, 158, 115],
        [240, 228, 66],
        [0, 114, 178],
        [213, 94, 0],
        [204, 121, 167],
        [120, 60, 20],
        [0, 90, 50],
        [170, 0, 80],
    ],
    np.uint8,
)
MIN_DELTA_E = 40.0  # CIE76 distance under which two class colours blur together at a 50 % overlay


def _lab(colours: np.ndarray) -> np.ndarray:
    """sRGB uint8 [N, 3] -> CIE L*a*b* float [N, 3], through Pillow's colour management (LittleCMS)."""
    from PIL import Image, ImageCms

    to_lab = ImageCms.buildTransformFromOpenProfiles(
        ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), "RGB", "LAB"
    )
    raw = np.asarray(ImageCms.applyTransform(Image.fromarray(np.asarray(colours, np.uint8)[None]), to_lab))[0]
    raw = raw.astype(np.int16)
    ab = np.where(raw[:, 1:] > 127, raw[:, 1:] - 256, raw[:, 1:])  # Pillow stores a*, b* as signed bytes
    return np.c_[raw[:, 0] * (100.0 / 255.0), ab].astype(np.float64)


def quicklook_palette(palette: np.ndarray, min_delta_e: float = MIN_DELTA_E) -> np.ndarray:
    """The bundle's colours, except that a colour closer than `min_delta_e` to an earlier class's is replaced by
    the quick-look colour farthest from all the colours kept so far."""
    pal = np.asarray(palette, np.uint8)[:NODATA_LABEL].copy()
    if len(pal) < 2:
        return pal
    lab, cand = _lab(pal), _lab(QUICKLOOK_COLOURS)
    for i in range(1, len(pal)):
        kept = lab[:i]
        if np.sqrt(((kept - lab[i]) ** 2).sum(1)).min() >= min_delta_e:
            continue
        dist = np.sqrt(((cand[:, None] - np.r_[kept, lab[i + 1 :]][None]) ** 2).sum(-1)).min(1)
        k = int(dist.argmax())
        pal[i], lab[i] = QUICKLOOK_COLOURS[k], cand[k]
    return pal


def draw_legend(image: np.ndarray, colours: np.ndarray, classes: list[str]) -> np.ndarray:
    """A legend box (swatch and name per class) in the lower-left corner, drawn with Pillow; left out when it
    would cover more than half the image either way (a tiny image: its labels file and the areas table say it)."""
    from PIL import Image, ImageDraw, ImageFont

    if not classes:
        return image
    font = ImageFont.load_default()
    pad, sw = 4, 10
    line = max(sw, font.getbbox("Ag")[3]) + 3
    text_w = max(font.getlength(str(c)) for c in classes)
    box_w, box_h = int(pad * 3 + sw + text_w), pad * 2 + line * len(classes)
    h, w = image.shape[:2]
    if box_w > w // 2 or box_h > h // 2:
        return image
    img = Image.fromarray(image)
    d = ImageDraw.Draw(img)
    x0, y0 = pad, h - box_h - pad
    d.rectangle([x0, y0, x0 + box_w, y0 + box_h], fill=(255, 255, 255), outline=(0, 0, 0))
    for k, name in enumerate(classes):
        y = y0 + pad + k * line
        d.rectangle([x0 + pad, y, x0 + pad + sw, y + sw], fill=tuple(int(v) for v in colours[k]), outline=(0, 0, 0))
        d.text((x0 + 2 * pad + sw, y - 1), str(name), fill=(0, 0, 0), font=font)
    return np.asarray(img)


def quicklook(rgb: np.ndarray, labels: np.ndarray, palette: np.ndarray, classes: list[str] | None) -> np.ndarray:
    """The overlay PNG's pixels: quick-look colours over the image, with a legend."""
    colours = quicklook_palette(palette)
    out = overlay_image(rgb, labels, colours)
    return draw_legend(out, colours, list(classes or [])[: len(colours)])


def overlay_image(
    rgb: np.ndarray, labels: np.ndarray, palette: np.ndarray, alpha: float = OVERLAY_ALPHA, rows: int = 512
) -> np.ndarray:
    """Blend class colours over the image (8-bit fixed point, in row chunks so a large quick-look needs no
    float copies of the whole image); nodata pixels keep the image."""
    lut = palette_lut(palette).astype(np.uint16)
    a = int(round(alpha * 256))
    out = np.empty_like(rgb)
    for y in range(0, rgb.shape[0], rows):
        lab = labels[y : y + rows]
        px = rgb[y : y + rows].astype(np.uint16)
        blend = ((px * (256 - a) + lut[lab] * a + 128) >> 8).astype(np.uint8)
        nod = lab == NODATA_LABEL
        blend[nod] = rgb[y : y + rows][nod]
        out[y : y + rows] = blend
    return out


def preview_step(height: int, width: int, max_side: int = PREVIEW_MAX_SIDE) -> int:
    return max(1, math.ceil(max(height, width) / max_side))
