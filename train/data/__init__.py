"""Datasets for co2s training and evaluation.

Every dataset is a map-style sequence: `ds[i] -> (image uint8 [H, W, 3], label uint8 [H, W] or None)`
with class indices 0..N-1 and 255 = ignore, plus `.info` (DatasetInfo), `.names` and `.validate()`.
`build_splits(dataset, root, split)` returns {"labeled", "unlabeled", "val"} for any supported dataset.
"""

from .base import SegmentationDataset
from .dubai import DubaiPatches, default_dubai_root, dubai_splits
from .folder import SplitDataset, open_split
from .io import read_image, read_label
from .registry import IGNORE_INDEX, DatasetInfo, get_dataset_info, list_datasets, load_dataset_yaml
from .splits import build_splits
from .synthetic import SyntheticDataset, make_large_scene, make_scene, synthetic_splits

__all__ = [
    "IGNORE_INDEX",
    "DatasetInfo",
    "DubaiPatches",
    "SegmentationDataset",
    "SplitDataset",
    "SyntheticDataset",
    "build_splits",
    "default_dubai_root",
    "dubai_splits",
    "get_dataset_info",
    "list_datasets",
    "load_dataset_yaml",
    "make_large_scene",
    "make_scene",
    "open_split",
    "read_image",
    "read_label",
    "synthetic_splits",
]
