"""One entry point for training and evaluation code: labeled / unlabeled / val sets for any dataset."""

from __future__ import annotations

import re
from pathlib import Path

from co2s.errors import Co2SInputError

from .base import SegmentationDataset
from .dubai import dubai_splits
from .folder import open_split
from .registry import get_dataset_info
from .synthetic import synthetic_splits


def labeled_fraction(split: str) -> float:
    """Labelled fraction from a split name as the reference writes it: "1_8" -> 0.125."""
    match = re.fullmatch(r"(\d+)_(\d+)", split)
    if not match or not 0 < int(match[1]) <= int(match[2]):
        raise Co2SInputError(f"split {split!r}: expected a fraction written like '1_8'")
    return int(match[1]) / int(match[2])


def build_splits(
    dataset: str,
    root: str | Path | None,
    split: str = "1_8",
    *,
    seed: int = 0,
    size: int | None = None,
    num_labeled: int = 32,
    num_unlabeled: int = 224,
    num_val: int = 32,
    parts: tuple[str, ...] = ("labeled", "unlabeled", "val"),
) -> dict[str, SegmentationDataset]:
    """The `parts` of {"labeled", "unlabeled", "val"} (each with `.info`; unlabeled items carry no label); a
    folder dataset opens only their split files (scoring val needs no labelled split file).

    * whdld, loveda, potsdam, gid, mer, msl, or a dataset .yaml: the reference folder layout under `root`
      (required), split files splits/<name>/<split>/{labeled,unlabeled}.txt and splits/<name>/val.txt.
    * dubai: `root` optional (default_dubai_root()); split by tile, `split` gives the labeled fraction of
      the training patches, chosen with `seed`; `size` is the patch size (default 256).
    * synthetic: `root` is ignored; num_labeled/num_unlabeled/num_val scenes of `size` (default 128)
      pixels from `seed`.
    `seed`, `size` and the num_* counts only affect dubai and synthetic.
    """
    name = str(dataset).lower()
    if name == "synthetic":
        size = size or get_dataset_info(name).crop_size
        made = synthetic_splits(num_labeled, num_unlabeled, num_val, size=size, seed=seed)
        return {part: made[part] for part in parts}
    if name == "dubai":
        size = size or get_dataset_info(name).crop_size
        made = dubai_splits(root, labeled_fraction=labeled_fraction(split), patch=size, seed=seed)
        return {part: made[part] for part in parts}
    info = get_dataset_info(dataset)
    if root is None:
        raise Co2SInputError(
            f"dataset {info.name!r} needs a data root: the folder holding images/, labels/ and splits/{info.name}/"
        )
    return {part: open_split(info, root, split, part) for part in parts}
