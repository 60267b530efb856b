"""Class prototypes for the CLIP student (docs/method.md §3.1): one unit vector per class from CLIP's text tower.

For class k with concepts C_k (the first is the class name itself), prototype_k = normalise(mean over
c in C_k of text_embedding("a photo of a {c}")), the mean taken over the UN-normalised embeddings, as the
reference's `conceptavg` files. The reference ran the text tower in fp16 on CUDA and stored float16;
we run it in fp32 and store float32.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from co2s.cli import progress_bar
from co2s.errors import Co2SInputError
from co2s.files import atomic_write, atomic_write_text

__all__ = ["load_prototypes", "save_prototypes", "text_prototypes"]


def text_prototypes(
    concepts: Sequence[Sequence[str]],
    *,
    clip: str = "clip_vitb16",
    weights: str | os.PathLike | None = None,
    template: str = "a photo of a {}",
    seed: int = 0,
    batch_size: int = 64,
) -> np.ndarray:
    """Encode `template.format(c)` for every concept of every class -> float32 [N, D] unit rows.

    `clip` picks the CLIP variant (text tower shape); `weights` is the CLIP checkpoint file (OpenAI
    TorchScript archive or open_clip state dict). Without weights the tower is randomly initialised from
    `seed`: only meaningful for tests and demos.
    """
    import open_clip

    from co2s.train.backbones.clip import build_text_tower

    if not concepts:
        raise Co2SInputError("no classes given")
    for k, cls in enumerate(concepts):
        if isinstance(cls, str) or not cls or not all(isinstance(c, str) and c for c in cls):
            raise Co2SInputError(f"class {k}: expected a non-empty list of concept strings, got {cls!r}")
    if batch_size < 1:
        raise Co2SInputError(f"batch_size must be >= 1, got {batch_size}")

    tower = build_text_tower(clip, weights, seed=seed)
    tokenizer = open_clip.get_tokenizer("ViT-B-16")  # bundled BPE vocabulary, no network
    prompts = [template.format(c) for cls in concepts for c in cls]
    starts = range(0, len(prompts), batch_size)
    chunks = []
    with torch.no_grad():
        for s in progress_bar(starts, desc="text prototypes", unit="batch", enabled=len(starts) > 1):
            chunks.append(tower(tokenizer(prompts[s : s + batch_size])).float())
    emb = torch.cat(chunks)

    protos, i = [], 0
    for cls in concepts:
        protos.append(emb[i : i + len(cls)].mean(dim=0))  # mean of UN-normalised embeddings (docs/method.md §3.1)
        i += len(cls)
    return torch.nn.functional.normalize(torch.stack(protos), dim=-1).numpy().astype(np.float32)


def _paths(path: str | os.PathLike) -> tuple[Path, Path]:
    p = Path(path)
    npy = p if p.suffix == ".npy" else p.with_name(p.name + ".npy")
    return npy, npy.with_name(npy.stem + ".classes.txt")


def save_prototypes(path: str | os.PathLike, prototypes: np.ndarray, class_names: Sequence[str]) -> Path:
    """Write `<path>.npy` (float32 [N, D]) and the class names, one per line, to `<stem>.classes.txt`
    beside it; each file atomically. Returns the .npy path."""
    arr = np.asarray(prototypes, dtype=np.float32)
    names = list(class_names)
    if arr.ndim != 2 or arr.shape[0] != len(names):
        raise Co2SInputError(f"prototypes of shape {arr.shape} do not match {len(names)} class names")
    bad = [n for n in names if not isinstance(n, str) or not n.strip() or "\n" in n or "\r" in n]
    if bad:
        raise Co2SInputError(f"class names must be non-empty single-line strings, got {bad[0]!r}")
    npy, sidecar = _paths(path)
    npy.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(sidecar, "".join(n + "\n" for n in names))
    atomic_write(npy, lambda f: np.save(f, arr, allow_pickle=False))
    return npy


def load_prototypes(path: str | os.PathLike, class_names: Sequence[str] | None = None) -> np.ndarray:
    """Read prototypes written by `save_prototypes`, or a reference `<ds>_conceptavg*_single.npy`
    (float16 [N, 512], no names file). Returns float32 [N, D] with unit rows (NaN/Inf zeroed first).

    With `class_names`, the row count and the names file (when there is one) must match them.
    """
    npy, sidecar = _paths(path)
    if not npy.is_file():
        raise Co2SInputError(f"{npy}: prototype file not found")
    try:
        arr = np.load(npy, allow_pickle=False)
    except Exception as e:
        raise Co2SInputError(f"{npy}: cannot read prototypes ({type(e).__name__}: {e})") from e
    if arr.ndim != 2 or arr.shape[0] == 0 or not np.issubdtype(arr.dtype, np.floating):
        raise Co2SInputError(f"{npy}: expected a float [num_classes, dim] array, found {arr.dtype} {arr.shape}")
    arr = np.nan_to_num(arr.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)

    stored = sidecar.read_text(encoding="utf-8").splitlines() if sidecar.is_file() else None
    if stored is not None and len(stored) != arr.shape[0]:
        raise Co2SInputError(f"{sidecar}: {len(stored)} class names for {arr.shape[0]} prototype rows in {npy}")
    if class_names is not None:
        names = list(class_names)
        if len(names) != arr.shape[0]:
            raise Co2SInputError(f"{npy}: {arr.shape[0]} prototype rows, but {len(names)} classes expected")
        if stored is not None and stored != names:
            k = next(i for i, (a, b) in enumerate(zip(stored, names)) if a != b)
            raise Co2SInputError(f"{npy}: class {k} is {stored[k]!r} in {sidecar.name}, expected {names[k]!r}")

    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    if not np.all(norms > 0):
        raise Co2SInputError(f"{npy}: prototype row {int(np.argmin(norms[:, 0]))} is all zero (or NaN)")
    return arr / norms
