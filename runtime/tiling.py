"""Overlapping tile grid over a scene and the stitcher that turns tile outputs back into full-width row strips.

Two stitching rules:
- *central* (labels-only bundles): every output pixel is taken from the tile in which it lies most centrally. Along
  each axis the tile centres split the scene at the midpoints between neighbouring centres, so each tile keeps a
  disjoint "keep" box and the boxes tile the scene exactly. No averaging, hence no seams and exact equality with a
  single-tile run whenever the model's output at a pixel does not depend on the tile position.
- *blend* (bundles with `probs`): class probabilities are accumulated with a smooth weight that falls towards the
  tile edges (where context is cut), then arg-maxed.

The stitcher holds one band of rows (about a tile high) at a time, so a 20 000-pixel-high scene never sits in
memory whole; it emits finished row strips in order through a callback.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from co2s.bundle.formats import IGNORE_INDEX, default_overlap
from co2s.errors import Co2SInputError

NODATA_LABEL = IGNORE_INDEX  # label written where the input is nodata


def parse_overlap(value: str | float | int | None, tile: int) -> int:
    """Overlap in pixels from a fraction of the tile (< 1, e.g. 0.25) or a whole pixel count (>= 1, e.g. 64).

    At most half the tile: tiles then advance by at least half a tile, so a scene costs at most about 4x the
    tiles of a grid without overlap (127 px on a 128 tile would cost 16384x: every pixel run by every tile over it).
    """
    if value is None or value == "":
        return default_overlap(tile)
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise Co2SInputError(
            f"--tile-overlap {value!r}: expected a fraction of the tile (0.25) or pixels (64)"
        ) from None
    if not math.isfinite(v) or v < 0:
        raise Co2SInputError(f"--tile-overlap {value!r}: must be >= 0")
    if v >= 1 and v != int(v):
        raise Co2SInputError(
            f"--tile-overlap {value!r}: values of 1 and more are pixels and must be whole (a fraction is below 1)"
        )
    px = int(round(v * tile)) if v < 1 else int(v)
    if px > tile // 2:
        raise Co2SInputError(
            f"--tile-overlap {value!r} = {px} px on a {tile}-pixel tile: the overlap can be at most half the tile "
            f"({tile // 2} px, or a fraction up to 0.5)"
        )
    return px


def axis_starts(length: int, tile: int, stride: int) -> list[int]:
    """Tile origins along one axis: evenly spaced, first at 0, last flush with the end, spacing <= stride."""
    if length <= tile:
        return [0]
    n = math.ceil((length - tile) / stride) + 1
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def axis_keep_bounds(starts: list[int], tile: int, length: int) -> list[tuple[int, int]]:
    """[lo, hi) image range each tile keeps: split at the midpoints between neighbouring tile centres."""
    cuts = [0] + [(a + b + tile) // 2 for a, b in zip(starts[:-1], starts[1:])] + [length]
    return list(zip(cuts[:-1], cuts[1:]))


@dataclass(frozen=True)
class TileWindow:
    """One tile: origin (y0, x0) in the image, valid extent (h, w) <= tile, and the box it keeps."""

    index: int
    row: int
    col: int
    y0: int
    x0: int
    h: int
    w: int
    keep_y: tuple[int, int]
    keep_x: tuple[int, int]


class TileGrid:
    """Row-major grid of overlapping tiles covering a height x width scene."""

    def __init__(self, height: int, width: int, tile: int, overlap: int):
        if height <= 0 or width <= 0:
            raise Co2SInputError(f"cannot tile an empty image ({width}x{height})")
        if not 0 <= overlap < tile:
            raise Co2SInputError(f"overlap {overlap} must be in [0, {tile})")
        self.height, self.width, self.tile, self.overlap = height, width, tile, overlap
        self.stride = tile - overlap
        self.ys = axis_starts(height, tile, self.stride)
        self.xs = axis_starts(width, tile, self.stride)
        self.keep_ys = axis_keep_bounds(self.ys, tile, height)
        self.keep_xs = axis_keep_bounds(self.xs, tile, width)

    @property
    def rows(self) -> int:
        return len(self.ys)

    @property
    def cols(self) -> int:
        return len(self.xs)

    def __len__(self) -> int:
        return self.rows * self.cols

    def __iter__(self) -> Iterator[TileWindow]:
        t = self.tile
        for r, (y0, ky) in enumerate(zip(self.ys, self.keep_ys)):
            for c, (x0, kx) in enumerate(zip(self.xs, self.keep_xs)):
                yield TileWindow(
                    r * self.cols + c, r, c, y0, x0, min(t, self.height - y0), min(t, self.width - x0), ky, kx
                )

    def row_band(self, row: int) -> tuple[int, int]:
        """Image rows a grid row covers."""
        y0 = self.ys[row]
        return y0, min(y0 + self.tile, self.height)


def pad_to_tile(pixels: np.ndarray, tile: int) -> np.ndarray:
    """Pad an (h, w, C) window at the bottom/right to (tile, tile, C) by mirroring, so edge tiles see image-like
    content rather than a black band; a 1-pixel axis cannot mirror and is repeated instead."""
    h, w = pixels.shape[:2]
    if h == tile and w == tile:
        return pixels
    pad = ((0, tile - h), (0, tile - w)) + ((0, 0),) * (pixels.ndim - 2)
    mode = "reflect" if h > 1 and w > 1 else "edge"
    return np.pad(pixels, pad, mode=mode)


def blend_weights(tile: int, floor: float = 1e-3) -> np.ndarray:
    """Separable tent weight, highest at the tile centre; a small floor keeps scene borders (one tile) defined."""
    ramp = np.minimum(np.arange(tile) + 0.5, tile - np.arange(tile) - 0.5) / (tile / 2.0)
    w1 = np.maximum(ramp, floor).astype(np.float32)
    return np.outer(w1, w1)


def vote_probs(labels: np.ndarray, confidence: np.ndarray, num_classes: int) -> np.ndarray:
    """A class distribution for a bundle without the probs output, from what every bundle gives: the winning class
    gets its confidence, the others share the rest evenly (the most even distribution with that argmax and that
    maximum). Blending these across tile overlaps removes seams the most-central rule leaves (see
    benchmarks/seams.py) without re-exporting the bundle; true probabilities blend a little better."""
    k = num_classes
    conf = np.clip(confidence.astype(np.float32), 0.0, 1.0)
    rest = (1.0 - conf) / max(1, k - 1)
    out = np.broadcast_to(rest, (k, *labels.shape)).copy()
    np.put_along_axis(out, labels[None].astype(np.intp), conf[None], axis=0)
    return out


StripCallback = Callable[[int, int, np.ndarray, "np.ndarray | None"], None]


class Stitcher:
    """Collects tile outputs (in grid order) and emits finished full-width row strips via `emit(y0, y1, labels,
    confidence)`. `valid` tile masks (False = nodata) turn pixels into NODATA_LABEL / confidence 0."""

    def __init__(
        self,
        grid: TileGrid,
        emit: StripCallback,
        *,
        blend: bool = False,
        num_classes: int | None = None,
        with_confidence: bool = True,
    ):
        if blend and not num_classes:
            raise ValueError("blend stitching needs num_classes")
        self.grid, self.emit, self.blend = grid, emit, blend
        self.num_classes = num_classes
        self.with_confidence = with_confidence
        self._next = 0  # index of the next expected tile
        self._row = -1
        self._weights = blend_weights(grid.tile) if blend else None
        self._band_y0 = 0
        self._band: dict[str, np.ndarray] = {}

    # Strip of the current grid row (central) or accumulation band (blend).
    def _open_row(self, row: int) -> None:
        W, g = self.grid.width, self.grid
        if not self.blend:
            ky0, ky1 = g.keep_ys[row]
            self._band_y0 = ky0
            h = ky1 - ky0
            self._band = {"labels": np.full((h, W), NODATA_LABEL, np.uint8), "valid": np.ones((h, W), bool)}
            if self.with_confidence:
                self._band["confidence"] = np.zeros((h, W), np.float32)
            return
        y0, y1 = g.row_band(row)
        h = y1 - y0
        new = {
            "probs": np.zeros((self.num_classes, h, W), np.float32),
            "weight": np.zeros((h, W), np.float32),
            "confidence": np.zeros((h, W), np.float32),
            "valid": np.ones((h, W), bool),
        }
        if self._band:  # carry the rows the previous band shares with this one
            old_y0 = self._band_y0
            shared = old_y0 + self._band["weight"].shape[0] - y0
            if shared > 0:
                off = y0 - old_y0
                for k, arr in self._band.items():
                    new[k][..., :shared, :] = arr[..., off : off + shared, :]
        self._band, self._band_y0 = new, y0

    def _flush_blend(self, y_end: int) -> None:
        """Emit band rows [band_y0, y_end): no later tile row reaches above y_end."""
        n = y_end - self._band_y0
        if n <= 0:
            return
        b = self._band
        w = b["weight"][:n]
        covered = w > 0
        safe = np.where(covered, w, 1.0)
        labels = np.argmax(b["probs"][:, :n] / safe, axis=0).astype(np.uint8)
        valid = b["valid"][:n] & covered
        labels[~valid] = NODATA_LABEL
        conf = None
        if self.with_confidence:
            conf = np.where(valid, b["confidence"][:n] / safe, 0.0).astype(np.float32)
        self.emit(self._band_y0, y_end, labels, conf)

    def add(
        self,
        win: TileWindow,
        labels: np.ndarray | None,
        confidence: np.ndarray | None = None,
        probs: np.ndarray | None = None,
        valid: np.ndarray | None = None,
    ) -> None:
        """Outputs of one tile, each cropped or not to (h, w); `labels is None` marks a skipped all-nodata tile."""
        if win.index != self._next:
            raise RuntimeError(f"stitcher got tile {win.index}, expected {self._next} (tiles must arrive in order)")
        self._next += 1
        if win.row != self._row:
            if self._row >= 0 and self.blend:
                self._flush_blend(self.grid.ys[win.row])
            self._row = win.row
            self._open_row(win.row)
        h, w = win.h, win.w
        b, by0 = self._band, self._band_y0
        if self.blend:
            ys, xs = slice(win.y0 - by0, win.y0 - by0 + h), slice(win.x0, win.x0 + w)
            if labels is not None:
                wt = self._weights[:h, :w]
                if probs is None:  # a bundle without probs: blend votes (vote_probs)
                    probs = vote_probs(labels[:h, :w], confidence[:h, :w], self.num_classes)
                if valid is not None:
                    wt = wt * valid[:h, :w]
                b["probs"][:, ys, xs] += probs[:, :h, :w].astype(np.float32) * wt
                b["weight"][ys, xs] += wt
                if self.with_confidence and confidence is not None:
                    b["confidence"][ys, xs] += confidence[:h, :w].astype(np.float32) * wt
            # Validity is a property of the input pixel, so the tile that keeps it centrally decides.
            (ky0, ky1), (kx0, kx1) = win.keep_y, win.keep_x
            kv = b["valid"][ky0 - by0 : ky1 - by0, kx0:kx1]
            if labels is None:
                kv[:] = False
            elif valid is not None:
                kv[:] = valid[ky0 - win.y0 : ky1 - win.y0, kx0 - win.x0 : kx1 - win.x0]
        else:
            (ky0, ky1), (kx0, kx1) = win.keep_y, win.keep_x
            dst = (slice(ky0 - by0, ky1 - by0), slice(kx0, kx1))
            src = (slice(ky0 - win.y0, ky1 - win.y0), slice(kx0 - win.x0, kx1 - win.x0))
            if labels is None:
                b["valid"][dst] = False
            else:
                b["labels"][dst] = labels[src]
                if self.with_confidence and confidence is not None:
                    b["confidence"][dst] = confidence[src]
                if valid is not None:
                    b["valid"][dst] = valid[src]
        if win.col == self.grid.cols - 1:
            self._finish_row(win.row)

    def _finish_row(self, row: int) -> None:
        if self.blend:
            if row == self.grid.rows - 1:
                self._flush_blend(self.grid.height)
            return
        b = self._band
        labels, valid = b["labels"], b["valid"]
        labels[~valid] = NODATA_LABEL
        conf = None
        if self.with_confidence:
            conf = b["confidence"]
            conf[~valid] = 0.0
        y0 = self._band_y0
        self.emit(y0, y0 + labels.shape[0], labels, conf)

    @property
    def done(self) -> bool:
        return self._next == len(self.grid)
