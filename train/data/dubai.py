"""The public Dubai aerial set (CC0; 8 tiles x 9 images, colour-coded masks) as co2s datasets.

Layout (see shared/data/dubai_aerial/README.txt): <root>/Tile_N/images/<stem>.jpg and
<root>/Tile_N/masks/<stem>.png, images of different sizes. Images are cut into patch x patch windows;
splits are made by tile because neighbouring parts of a tile overlap in content.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from co2s.errors import Co2SInputError

from .base import Sample, SegmentationDataset, check_all
from .io import image_size, image_to_array, label_to_array, open_image, read_pair
from .registry import IGNORE_INDEX, get_dataset_info

ROOT_ENV = "CO2S_DUBAI_ROOT"
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")


def default_dubai_root() -> Path:
    """$CO2S_DUBAI_ROOT, else the shared/data/dubai_aerial folder next to the repository."""
    if os.environ.get(ROOT_ENV):
        root = Path(os.environ[ROOT_ENV])
        if not root.is_dir():
            raise Co2SInputError(f"{ROOT_ENV}={root} is not a folder")
        return root
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "shared" / "data" / "dubai_aerial"
        if candidate.is_dir():
            return candidate
    raise Co2SInputError(
        "Dubai aerial data not found: put the Tile_1..Tile_8 folders in shared/data/dubai_aerial next to the "
        f"co2s repository, set {ROOT_ENV}=/path/to/dubai_aerial, or pass the root explicitly"
    )


def _tile_name(tile: int | str) -> str:
    return f"Tile_{tile}" if isinstance(tile, int) else str(tile)


def _find_pairs(root: Path, tiles: Iterable[int | str]) -> list[tuple[str, Path, Path]]:
    """(tile, image, mask) for every image of the given tiles, matched by file stem."""
    available = sorted(p.name for p in root.glob("Tile_*") if p.is_dir()) if root.is_dir() else []
    pairs = []
    for tile in map(_tile_name, tiles):
        if tile not in available:
            raise Co2SInputError(
                f"Dubai tile {tile!r} not found in {root}; available: {', '.join(available) or 'none'}"
            )
        images = sorted(p for p in (root / tile / "images").iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
        if not images:
            raise Co2SInputError(f"{root / tile / 'images'}: no images found")
        for image in images:
            mask = root / tile / "masks" / f"{image.stem}.png"
            if not mask.is_file():
                raise Co2SInputError(f"image {image} has no mask {mask}")
            pairs.append((tile, image, mask))
    return pairs


def _starts(length: int, patch: int, stride: int) -> list[int]:
    """Window starts covering 0..length; the last window is shifted back to end at the border."""
    if length <= patch:
        return [0]
    return [*range(0, length - patch, stride), length - patch]


class DubaiPatches(SegmentationDataset):
    """Every image of `tiles` (numbers or "Tile_N" names) cut into patch x patch windows with `stride`
    (default: patch). Images smaller than a patch are padded (image 0, label 255). `patch=None` gives
    whole images, e.g. for sliding-window validation."""

    def __init__(
        self,
        root: str | Path,
        tiles: Iterable[int | str],
        patch: int | None = 256,
        stride: int | None = None,
        with_labels: bool = True,
    ):
        self.root = Path(root)
        self.info = get_dataset_info("dubai")
        self.patch, self.with_labels = patch, with_labels
        self.pairs = _find_pairs(self.root, tiles)
        if not self.pairs:
            raise Co2SInputError("no Dubai tiles selected")
        self.source = f"{self.root} ({', '.join(self.tiles)})"
        if patch is not None and (patch < 1 or (stride is not None and stride < 1)):
            raise Co2SInputError(f"patch and stride must be positive, got patch={patch}, stride={stride}")
        self.sizes = []
        for _, image, mask in self.pairs:  # headers only: no pixels are decoded here
            size = image_size(image)
            if image_size(mask) != size:
                raise Co2SInputError(f"image {image} and mask {mask} differ in size")
            self.sizes.append(size)
        # (pair index, top, left) of every window
        self.windows = [
            (k, top, left)
            for k, (height, width) in enumerate(self.sizes)
            for top in (_starts(height, patch, stride or patch) if patch else [0])
            for left in (_starts(width, patch, stride or patch) if patch else [0])
        ]

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> Sample:
        k, top, left = self.windows[index]
        _, image_path, mask_path = self.pairs[k]
        height, width = self.sizes[k]
        box = None
        if self.patch:
            box = (left, top, min(left + self.patch, width), min(top + self.patch, height))
        with open_image(image_path) as im:
            image = image_to_array(im, image_path, box)
        label = None
        if self.with_labels:
            with open_image(mask_path) as im:
                label = label_to_array(im, self.info, mask_path, box)
        if self.patch and image.shape[:2] != (self.patch, self.patch):
            pad = ((0, self.patch - image.shape[0]), (0, self.patch - image.shape[1]))
            image = np.pad(image, (*pad, (0, 0)))
            label = None if label is None else np.pad(label, pad, constant_values=IGNORE_INDEX)
        return image, label

    @property
    def names(self) -> list[str]:
        return [f"{self.pairs[k][0]}/{self.pairs[k][1].stem}_y{top}_x{left}" for k, top, left in self.windows]

    @property
    def tiles(self) -> list[str]:
        return sorted({tile for tile, _, _ in self.pairs})

    def subset(self, indices: Sequence[int], with_labels: bool | None = None) -> DubaiPatches:
        """The same images restricted to some windows (optionally without labels), without re-reading headers."""
        sub = copy.copy(self)
        sub.windows = [self.windows[i] for i in indices]
        if with_labels is not None:
            sub.with_labels = with_labels
        return sub

    def validate(self, progress: bool = True) -> None:
        """Decode every image/mask pair once (not once per window)."""
        pairs = sorted({self.pairs[k] for k, _, _ in self.windows})
        check_all(pairs, lambda pair: read_pair(pair[1], pair[2], self.info), progress, self.source)


# Tile_3 (Land 46 %, Water 37 %, some Road/Veg/Building/Unlabeled) + Tile_4 (Building 40 %, Land 29 %, Road 13 %,
# Water 11 %, Veg 7 %) give a val set with every class well represented and only ~12 % of all pixels.
# Tile_8, the other natural candidate, alone holds ~29 % of the pixels and nearly all the unannotated
# (black) area, so it is kept for training. Tile_4 also exercises the palette-mode masks in validation.
DEFAULT_VAL_TILES = (3, 4)


def dubai_splits(
    root: str | Path | None = None,
    val_tiles: Iterable[int | str] = DEFAULT_VAL_TILES,
    labeled_fraction: float = 1 / 8,
    patch: int = 256,
    seed: int = 0,
) -> dict[str, DubaiPatches]:
    """labeled / unlabeled / val sets split by tile: val = whole images of `val_tiles` (no tile is in both
    train and val); the other tiles' patches are divided into labeled (`labeled_fraction`, chosen from
    `seed`) and unlabeled (returned without labels)."""
    root = Path(root) if root is not None else default_dubai_root()
    if not 0 < labeled_fraction <= 1:
        raise Co2SInputError(f"labeled_fraction must be in (0, 1], got {labeled_fraction}")
    val_tiles = {_tile_name(t) for t in val_tiles}
    all_tiles = sorted(p.name for p in root.glob("Tile_*") if p.is_dir())
    unknown = sorted(val_tiles - set(all_tiles))
    if unknown:
        raise Co2SInputError(f"Dubai val tile(s) {unknown} not found in {root}; available: {', '.join(all_tiles)}")
    train_tiles = [t for t in all_tiles if t not in val_tiles]
    if not train_tiles:
        raise Co2SInputError(f"no Dubai tiles left for training after taking val tiles {sorted(val_tiles)}")

    train = DubaiPatches(root, train_tiles, patch)
    order = np.random.default_rng(seed).permutation(len(train))
    num_labeled = max(1, round(labeled_fraction * len(train)))
    return {
        "labeled": train.subset(sorted(order[:num_labeled])),
        "unlabeled": train.subset(sorted(order[num_labeled:]), with_labels=False),
        "val": DubaiPatches(root, sorted(val_tiles), patch=None),
    }
