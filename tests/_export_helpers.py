"""Shared, process-cached artefacts for the export tests: one briefly trained tiny checkpoint and one bundle.

A random-weight model has near-uniform class probabilities, so FP16/INT8 label agreement would be decided by
noise-level margins; a few dozen steps on synthetic scenes give the decisive predictions a trained model has.
Cached with functools.cache so several test modules reuse one export (the whole export test set stays short).
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np

NUM_CLASSES = 5  # the "synthetic" dataset
TILE = 128


@functools.cache
def workdir() -> Path:
    d = Path(tempfile.mkdtemp(prefix="co2s-export-tests-"))
    atexit.register(shutil.rmtree, d, ignore_errors=True)
    return d


@functools.cache
def trained_tiny_checkpoint() -> Path:
    import torch

    from co2s.train.checkpoint import save_checkpoint
    from co2s.train.data import get_dataset_info, make_scene
    from co2s.train.model import build_co2s

    info = get_dataset_info("synthetic")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        protos = np.random.default_rng(0).standard_normal((NUM_CLASSES, 64)).astype(np.float32)
        model = build_co2s(NUM_CLASSES, preset="tiny", prototypes=protos, img_size=TILE)
        scenes = [make_scene(10_000 + i, TILE) for i in range(24)]  # not the calibration seeds
        x = torch.tensor(np.stack([s[0] for s in scenes])).permute(0, 3, 1, 2).float() / 255
        y = torch.tensor(np.stack([s[1] for s in scenes])).long()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
        g = torch.Generator().manual_seed(0)
        for _ in range(60):
            idx = torch.randint(0, len(x), (4,), generator=g)
            loss = sum(torch.nn.functional.cross_entropy(o, y[idx], ignore_index=255) for o in model(x[idx]).values())
            opt.zero_grad()
            loss.backward()
            opt.step()
    path = workdir() / "tiny.pt"
    save_checkpoint(
        path,
        {
            "model_config": {
                "num_classes": NUM_CLASSES,
                "preset": "tiny",
                "students": ["clip", "dinov3"],
                "img_size": TILE,
            },
            "dataset": {"name": info.name, "classes": list(info.classes), "palette": [list(c) for c in info.palette]},
            "model": model.eval().state_dict(),
        },
    )
    return path


@functools.cache
def tiny_bundle() -> Path:
    """fp32 + fp16 + int8 ONNX bundle of the trained tiny pair, with the probs output."""
    from co2s.export.options import ExportOptions
    from co2s.export.pipeline import export_bundle

    out = workdir() / "bundle"
    export_bundle(
        ExportOptions(out=out, checkpoint=trained_tiny_checkpoint(), calib_count=12, probs=True, log=lambda *_: None)
    )
    return out
