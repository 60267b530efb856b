"""Small dataset folders for the training tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def folder_dataset(root: Path, *, n: int = 3, label_value: int = 1, label_size=(32, 32), labeled_lines=None):
    """A 'mer' (9 classes, index labels) folder in the reference layout with n labelled/unlabelled/val items."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    lines = []
    for i in range(n):
        Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(root / "images" / f"{i}.png")
        Image.fromarray(np.full(label_size, label_value if i == n - 1 else 0, np.uint8)).save(
            root / "labels" / f"{i}.png"
        )
        lines.append(f"images/{i}.png labels/{i}.png")
    split = root / "splits" / "mer" / "1_8"
    split.mkdir(parents=True)
    (split / "labeled.txt").write_text("\n".join(lines if labeled_lines is None else labeled_lines) + "\n")
    (split / "unlabeled.txt").write_text("\n".join(lines) + "\n")
    (root / "splits" / "mer" / "val.txt").write_text("\n".join(lines) + "\n")
    return root


# two tiny students on 64 px synthetic scenes, one image per batch (~1 s per iteration on a 2-core CPU)
TINY_TRAIN = [
    "--dataset",
    "synthetic",
    "--preset",
    "tiny",
    "--crop",
    "64",
    "--image-size",
    "64",
    "--num-labeled",
    "2",
    "--num-unlabeled",
    "2",
    "--num-val",
    "1",
    "--batch-size",
    "1",
    "--workers",
    "0",
    "--device",
    "cpu",
]
