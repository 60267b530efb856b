"""One frame in, labels and confidence out: the runtime's tiler and stitcher with each stage timed.

`predict_array` (pipeline.py) does the same tiling and stitching for one image (tests check the two agree); this
keeps the tile grid from frame to frame (frames of a stream share a size), sends all the tiles of a frame to the
backend together (batches of up to the model's largest batch, not its preferred one: latency of one frame is what
counts) and returns the preprocess / compute / postprocess times the streaming loop reports. Outputs are new
arrays per frame: they are handed to the caller, who may keep them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .backends import Backend
from .tiling import Stitcher, TileGrid, pad_to_tile


@dataclass
class FrameOutputs:
    labels: np.ndarray  # (h, w) uint8
    confidence: np.ndarray  # (h, w) float32
    preprocess_s: float
    compute_s: float
    postprocess_s: float
    tiles: int
    batches: int


class FrameSegmenter:
    def __init__(
        self,
        backend: Backend,
        *,
        overlap: int | None = None,
        blend: bool = False,
        num_classes: int | None = None,
        batch: int | None = None,
    ):
        self.backend = backend
        self.tile = backend.tile
        self.overlap = round(self.tile / 6) if overlap is None else overlap
        self.blend = blend and "probs" in backend.outputs
        self.num_classes = num_classes
        self.batch = max(1, min(batch or backend.batch.max, backend.batch.max))
        self.wanted = frozenset({"labels", "confidence"} | ({"probs"} if self.blend else set()))
        self._grid: TileGrid | None = None

    def grid(self, h: int, w: int) -> TileGrid:
        if self._grid is None or (self._grid.height, self._grid.width) != (h, w):
            self._grid = TileGrid(h, w, self.tile, self.overlap)
        return self._grid

    def __call__(self, rgb: np.ndarray) -> FrameOutputs:
        t0 = time.perf_counter()
        h, w = rgb.shape[:2]
        grid = self.grid(h, w)
        wins = list(grid)
        T = self.tile
        tiles = np.stack([pad_to_tile(rgb[v.y0 : v.y0 + v.h, v.x0 : v.x0 + v.w], T) for v in wins])
        t1 = time.perf_counter()
        outs: dict[str, list[np.ndarray]] = {}
        batches = 0
        for i in range(0, len(wins), self.batch):
            got = self.backend.run(tiles[i : i + self.batch], outputs=self.wanted)
            batches += 1
            for k, v in got.items():
                outs.setdefault(k, []).append(v)
        merged = {k: np.concatenate(v) for k, v in outs.items()}
        t2 = time.perf_counter()
        labels = np.empty((h, w), np.uint8)
        confidence = np.zeros((h, w), np.float32)

        def emit(y0, y1, lab, conf):
            labels[y0:y1] = lab
            if conf is not None:
                confidence[y0:y1] = conf

        stitcher = Stitcher(grid, emit, blend=self.blend, num_classes=self.num_classes)
        probs = merged.get("probs") if self.blend else None
        conf = merged.get("confidence")
        for j, win in enumerate(wins):
            stitcher.add(
                win, merged["labels"][j], None if conf is None else conf[j], None if probs is None else probs[j]
            )
        t3 = time.perf_counter()
        return FrameOutputs(labels, confidence, t1 - t0, t2 - t1, t3 - t2, len(wins), batches)
