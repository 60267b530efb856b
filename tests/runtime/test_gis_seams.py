"""Seamless by default: with default options, label changes on the tile cut lines are not much more frequent than
elsewhere, on a synthetic scene labelled by the tests' trained tiny model, and on Dubai scenes when
the shared Dubai set is present: below 1.5x for a bundle with probs (measured 0.88-1.00x), below 2x for
one without, whose tiles' votes are blended (measured 1.09-1.69x; the most-central rule: 7-12x).
The ratio is benchmarks/seams.py's; its results table gives the numbers and the costs of each mode."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from co2s.train.data import default_dubai_root

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
from seams import seam_ratio  # noqa: E402

from co2s.runtime.pipeline import predict_array  # noqa: E402
from co2s.runtime.tiling import TileGrid  # noqa: E402

pytest.importorskip("torch", reason="the seam test labels with the trained tiny model (training needs torch)")
pytestmark = pytest.mark.timeout(900)
BOUND = 1.5  # blended probabilities
VOTE_BOUND = 2.0  # blended votes (a bundle exported without --probs)
DUBAI = default_dubai_root()


@pytest.fixture(scope="module")
def backend():
    from _export_helpers import tiny_bundle

    from co2s.bundle import load_bundle
    from co2s.runtime.backends import open_backend

    be = open_backend(load_bundle(tiny_bundle()), "ort-cpu", "fp32")
    yield be
    be.close()


def ratio(backend, image, **kw) -> float:
    from _export_helpers import NUM_CLASSES

    grid = TileGrid(*image.shape[:2], backend.tile, round(backend.tile / 6))
    return seam_ratio(predict_array(backend, image, num_classes=NUM_CLASSES, **kw)["labels"], grid)["ratio"]


def test_default_blending_has_no_seams_on_a_synthetic_scene(backend):
    from co2s.train.data import make_scene

    image, _ = make_scene(20_000, 640)
    central = ratio(backend, image, blend=False)
    probs = ratio(backend, image, blend=True)
    votes = ratio(backend, image, blend=True, use_probs=False)
    assert probs < BOUND and votes < VOTE_BOUND, (central, probs, votes)
    assert central > probs  # the measure sees the seams the most-central rule leaves


def test_default_blending_has_no_seams_on_dubai(backend):
    images = sorted(p for p in DUBAI.rglob("*") if p.suffix.lower() in (".jpg", ".png")) if DUBAI.exists() else []
    images = [p for p in images if "mask" not in p.name.lower() and "mask" not in p.parent.name.lower()]
    if not images:
        pytest.skip(f"no Dubai images under {DUBAI} (the synthetic scene test covers the default)")
    from PIL import Image

    image = np.asarray(Image.open(images[0]).convert("RGB"))[:640, :640]
    assert ratio(backend, image, blend=True) < BOUND
    assert ratio(backend, image, blend=True, use_probs=False) < VOTE_BOUND
