"""The checkpoint file: the one hand-off from training to export.

A dict saved with torch.save, written atomically (temporary name, then rename) so a kill mid-write never leaves a
corrupt file under the final name:

    format        "co2s-checkpoint"
    version       1
    model_config  {"num_classes", "preset", "students", "img_size"}  -> co2s.train.model.co2s_from_state
    dataset       {"name", "classes", "palette"}
    model         Co2S state dict (CLIP prototypes travel inside it)
    ...           anything else the trainer needs to resume (optimizer, iteration, rng, metrics)
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import torch

from co2s.errors import Co2SInputError
from co2s.files import atomic_write

FORMAT, VERSION = "co2s-checkpoint", 1
_REQUIRED = ("model_config", "dataset", "model")


def save_checkpoint(path: str | os.PathLike, payload: dict) -> None:
    atomic_write(
        path,
        lambda f: torch.save({"format": FORMAT, "version": VERSION, **payload}, f),
        what="cannot write the checkpoint",
    )


def load_checkpoint(
    path: str | os.PathLike,
    *,
    num_classes: int | None = None,
    dataset: str | None = None,
    classes: Sequence[str] | None = None,
) -> dict:
    """Read and check a checkpoint; optionally that it was trained for this dataset, class count or classes (names
    compared without case, spaces or underscores: another region with the same classes is scored as is)."""
    path = Path(path)
    if not path.is_file():
        raise Co2SInputError(f"{path}: checkpoint file not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - truncated or not a torch file
        raise Co2SInputError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise Co2SInputError(f"{path}: not a co2s checkpoint (field 'format' should be {FORMAT!r})")
    if ckpt.get("version") != VERSION:
        raise Co2SInputError(f"{path}: checkpoint version {ckpt.get('version')!r}, this co2s reads {VERSION}")
    for key in _REQUIRED:
        if key not in ckpt:
            raise Co2SInputError(f"{path}: checkpoint has no {key!r} field")
    have = ckpt["model_config"]["num_classes"]
    if num_classes is not None and have != num_classes:
        raise Co2SInputError(f"{path}: field model_config.num_classes is {have}, expected {num_classes}")
    if dataset is not None and ckpt["dataset"]["name"] != dataset:
        raise Co2SInputError(f"{path}: field dataset.name is {ckpt['dataset']['name']!r}, expected {dataset!r}")
    have_classes = list(ckpt["dataset"].get("classes") or [])
    if classes is not None and [_class_key(c) for c in have_classes] != [_class_key(c) for c in classes]:
        raise Co2SInputError(
            f"{path}: the checkpoint's classes ({', '.join(have_classes)}) are not the dataset's "
            f"({', '.join(classes)}); a dataset with the same classes in the same order is needed"
        )
    return ckpt


def _class_key(name: str) -> str:
    return re.sub(r"[\s_-]+", " ", str(name).strip().lower())
