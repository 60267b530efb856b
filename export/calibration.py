"""Calibration / parity images: tiles from `--calib-data DIR`, or the synthetic scene set.

The same tiles calibrate INT8 and measure parity (PyTorch vs ONNX FP32, FP16/INT8 vs FP32). Tiles are
taken on a regular grid over each image, round-robin across images, so a few large scenes still give
`count` distinct tiles; images smaller than the tile are refused (upsampling would calibrate on pixels
the model never sees at that scale).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from co2s.errors import Co2SInputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")


@dataclass
class CalibrationSet:
    images: np.ndarray  # uint8 [N, T, T, 3]
    labels: np.ndarray | None  # uint8 [N, T, T] (255 = ignore) when known
    source: dict  # for the manifest
    label_classes: tuple[str, ...] = ()  # what the label indices mean

    def truth_for(self, classes) -> np.ndarray | None:
        """Ground truth usable for a model with these classes (the synthetic labels only fit the synthetic set)."""
        return self.labels if self.labels is not None and tuple(classes) == self.label_classes else None

    def __len__(self) -> int:
        return len(self.images)


def list_images(folder: Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise Co2SInputError(f"--calib-data {folder}: not a folder")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise Co2SInputError(
            f"--calib-data {folder}: no images found (looked for {', '.join(IMAGE_SUFFIXES)}, recursively)"
        )
    return files


def _grid_tiles(h: int, w: int, tile: int) -> list[tuple[int, int]]:
    ys = list(range(0, h - tile + 1, tile)) or [0]
    xs = list(range(0, w - tile + 1, tile)) or [0]
    return [(y, x) for y in ys for x in xs]


def from_folder(folder: Path, count: int, tile: int) -> CalibrationSet:
    from co2s.train.data import read_image

    files = list_images(folder)
    images = [read_image(f) for f in files]  # Co2SInputError names a bad file
    for f, im in zip(files, images):
        if im.shape[0] < tile or im.shape[1] < tile:
            raise Co2SInputError(
                f"--calib-data: {f} is {im.shape[1]}x{im.shape[0]} pixels, smaller than the {tile}x{tile} tile"
            )
    grids = [_grid_tiles(im.shape[0], im.shape[1], tile) for im in images]
    out: list[np.ndarray] = []
    k = 0
    while len(out) < count and k < max(len(g) for g in grids):
        for im, g in zip(images, grids):
            if k < len(g) and len(out) < count:
                y, x = g[k]
                out.append(im[y : y + tile, x : x + tile])
        k += 1
    arr = np.stack(out).astype(np.uint8)
    return CalibrationSet(
        arr,
        None,
        {
            "kind": "folder",
            "path": str(Path(folder).resolve()),
            "files": len(files),
            "count": len(arr),
            "sha256": _digest(arr),
        },
    )


def synthetic(count: int, tile: int, seed: int = 0) -> CalibrationSet:
    from co2s.train.data import get_dataset_info, make_scene

    pairs = [make_scene(seed * 1_000_003 + i, tile) for i in range(count)]
    images = np.stack([p[0] for p in pairs]).astype(np.uint8)
    labels = np.stack([p[1] for p in pairs]).astype(np.uint8)
    return CalibrationSet(
        images,
        labels,
        {"kind": "synthetic", "seed": seed, "count": count, "sha256": _digest(images)},
        tuple(get_dataset_info("synthetic").classes),
    )


def load_calibration(folder: str | Path | None, count: int, tile: int) -> CalibrationSet:
    if count < 1:
        raise Co2SInputError(f"--calib-count must be at least 1, got {count}")
    return from_folder(Path(folder), count, tile) if folder else synthetic(count, tile)


def _digest(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()
