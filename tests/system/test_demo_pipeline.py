"""The main job end to end at a small size: train -> export -> infer -> bench -> report, through the real CLIs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from conftest import REPO_ROOT
from PIL import Image


def test_demo_chain_produces_every_artefact(tmp_path):
    out = tmp_path / "demo"
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "ITERS": "20",
        "SCENE": "384x512",
        "BENCH_ITERS": "2",
        # 20 iterations leave near-uniform probabilities, where INT8 label flips are noise; the parity gate
        # itself is tested in test_export_bundle.py.
        "EXPORT_EXTRA": "--allow-degraded",
    }
    r = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts/demo.sh"), str(out)], env=env, capture_output=True, text=True, timeout=1200
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for name in (
        "run/best.pt",
        "bundle/co2s.json",
        "bundle/model.int8.onnx",
        "scene.labels.png",
        "scene.overlay.png",
        "scene.confidence.png",
        "bench.json",
        "training_curve.png",
        "report.md",
    ):
        assert (out / name).is_file(), name
    labels = np.asarray(Image.open(out / "scene.labels.png"))
    assert labels.shape == (384, 512) and labels.max() < 5
    manifest = json.loads((out / "bundle/co2s.json").read_text())
    assert manifest["parity"]["fp32"]["passed"]
    report = (out / "report.md").read_text()
    for needle in ("mIoU fused", "pixel agreement", "p50", "Machine:"):
        assert needle in report, needle
