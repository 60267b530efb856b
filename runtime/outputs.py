"""Output files of one input: class-index raster, colour overlay, optional confidence raster.

Every file is written under a hidden temporary name next to its destination and renamed only when the whole
input succeeded, so a failure (bad tile, full disk, Ctrl-C, a kill) never leaves a partial output that looks
finished. The labels file is renamed last: it is what `--skip-existing` looks for, so an input counts as done only
once all its files are in place. A write that fails (disk full, no permission, read-only file system) is reported
as a Co2SOutputError naming the output file.
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from co2s.errors import output_error

from .imageio import RasterSource
from .tiling import NODATA_LABEL

OVERLAY_ALPHA = 0.5
PREVIEW_MAX_SIDE = 2048  # overlay of a GeoTIFF scene is a decimated quick-look, not a full-size copy


@dataclass(frozen=True)
class OutputPaths:
    labels: Path
    overlay: Path | None
    confidence: Path | None

    def all(self) -> list[Path]:
        return [p for p in (self.labels, self.overlay, self.confidence) if p is not None]


def output_paths(out_dir: Path, rel_stem: Path, *, geo: bool, overlay: bool, confidence: bool) -> OutputPaths:
    """`<out>/<rel_stem>.labels.png|tif`, `.overlay.png`, `.confidence.png|tif`."""
    ext = ".tif" if geo else ".png"
    base = Path(out_dir) / rel_stem
    return OutputPaths(
        base.with_name(base.name + ".labels" + ext),
        base.with_name(base.name + ".overlay.png") if overlay else None,
        base.with_name(base.name + ".confidence" + ext) if confidence else None,
    )


def temp_path(final: Path) -> Path:
    """Hidden sibling of `final` (same filesystem, so the rename is atomic); leftovers of a killed earlier run
    (their process is gone) are removed on the way."""
    for old in final.parent.glob(f".{final.name}.partial-*"):
        pid = old.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            remove_quietly([old])
    return final.with_name(f".{final.name}.partial-{os.getpid()}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, not ours
        return True
    return True


def commit_files(pairs: list[tuple[Path, Path]]) -> None:
    """Rename each temporary file to its final name, the labels file last (see the module docstring). If a rename
    fails, the temporary files not yet renamed are removed and the error names the output."""
    ordered = sorted(pairs, key=lambda pair: ".labels." in pair[1].name)  # stable: the others keep their order
    for i, (tmp, final) in enumerate(ordered):
        try:
            os.replace(tmp, final)
        except OSError as e:
            remove_quietly([t for t, _ in ordered[i:]])
            raise output_error(final, e) from None


def remove_quietly(paths) -> None:
    for p in paths:
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass
        except OSError:
            pass


def palette_lut(palette: np.ndarray) -> np.ndarray:
    """256 x 3 colour table: class colours, black for the nodata label and unused indices."""
    lut = np.zeros((256, 3), np.uint8)
    n = min(len(palette), NODATA_LABEL)
    lut[:n] = np.asarray(palette, np.uint8)[:n]
    return lut


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


def save_labels_png(path: Path, labels: np.ndarray, palette: np.ndarray) -> None:
    """Palette PNG: pixel values are class indices (np.asarray(Image.open(p)) gives them back), viewers show colours."""
    img = Image.fromarray(labels)
    img.putpalette(palette_lut(palette).reshape(-1).tolist())
    img.save(path, format="PNG", compress_level=3)  # zlib's default 6 is much slower for little gain


def save_confidence_png(path: Path, confidence: np.ndarray) -> None:
    """8-bit grey: value = round(255 * confidence)."""
    q = np.clip(np.nan_to_num(confidence) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    Image.fromarray(q).save(path, format="PNG", compress_level=3)


class Sink(ABC):
    """Where the stitcher's row strips go for one input."""

    paths: OutputPaths

    @abstractmethod
    def write_strip(self, y0: int, y1: int, labels: np.ndarray, confidence: np.ndarray | None) -> None: ...

    @abstractmethod
    def commit(self) -> list[Path]:
        """Finish every file and move it into place; returns the final paths."""

    @abstractmethod
    def abort(self) -> None:
        """Drop every temporary file."""


class PngSink(Sink):
    """Whole-image arrays for inputs Pillow decoded (they are in memory anyway), PNG files at commit."""

    def __init__(self, source: RasterSource, paths: OutputPaths, palette: np.ndarray):
        self.source, self.paths, self.palette = source, paths, palette
        self.labels = np.full((source.height, source.width), NODATA_LABEL, np.uint8)
        self.confidence = np.zeros((source.height, source.width), np.float32) if paths.confidence else None
        self._temps: list[Path] = []

    def write_strip(self, y0, y1, labels, confidence) -> None:
        self.labels[y0:y1] = labels
        if self.confidence is not None and confidence is not None:
            self.confidence[y0:y1] = confidence

    def commit(self) -> list[Path]:
        pairs = []
        try:
            for final in self.paths.all():
                final.parent.mkdir(parents=True, exist_ok=True)
                tmp = temp_path(final)
                self._temps.append(tmp)
                if final == self.paths.labels:
                    save_labels_png(tmp, self.labels, self.palette)
                elif final == self.paths.overlay:
                    rgb, _ = self.source.read(0, 0, self.source.height, self.source.width)
                    Image.fromarray(overlay_image(rgb, self.labels, self.palette)).save(
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
        commit_files(pairs)
        return [f for _, f in pairs]

    def abort(self) -> None:
        remove_quietly(self._temps)


def preview_step(height: int, width: int, max_side: int = PREVIEW_MAX_SIDE) -> int:
    return max(1, math.ceil(max(height, width) / max_side))
