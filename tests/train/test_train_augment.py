"""Augmentations: CutMix pixel-exact, the strong photometric ops against torchvision, geometric crops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF

from co2s.train import augment as A
from co2s.train.losses import Targets
from co2s.train.sampling import IterationBatches, photometric_params, stream_index
from co2s.train.step import cutmix_targets


def _box(b: int, h: int, w: int) -> torch.Tensor:
    box = torch.zeros(b, h, w, dtype=torch.bool)
    box[0, 1:3, 2:5] = True  # sample 0: a 2x3 box; sample 1: no box
    return box


def test_cutmix_images_labels_confidences_pixel_exact():
    b, h, w = 2, 4, 6
    box = _box(b, h, w)
    base_img, other_img = torch.rand(b, 3, h, w), torch.rand(b, 3, h, w)
    mixed = A.cutmix(base_img, other_img, box)
    for i in range(b):
        for y in range(h):
            for x in range(w):
                src = other_img if box[i, y, x] else base_img
                assert torch.equal(mixed[i, :, y, x], src[i, :, y, x])

    label_w, label_o = torch.zeros(b, h, w, dtype=torch.long), torch.ones(b, h, w, dtype=torch.long)
    conf_w, conf_o = torch.full((b, h, w), 0.3), torch.full((b, h, w), 0.9)
    ign_w, ign_o = torch.zeros(b, h, w, dtype=torch.uint8), torch.full((b, h, w), 255, dtype=torch.uint8)
    label, conf, ignore = cutmix_targets(Targets(label_w, conf_w, ign_w), Targets(label_o, conf_o, ign_o), box)
    assert torch.equal(label, box.long())
    assert torch.equal(ignore, torch.where(box, 255, 0).to(torch.uint8))
    assert torch.equal(conf, torch.where(box, 0.9, 0.3))
    assert label[0].sum() == 6 and label[1].sum() == 0


def test_cutmix_box_geometry():
    size, rng = 64, np.random.default_rng(0)
    boxes = [A.cutmix_box(size, rng) for _ in range(400)]
    nonempty = [b for b in boxes if b.any()]
    assert 0.4 < len(nonempty) / len(boxes) < 0.6  # p = 0.5
    for b in nonempty:
        ys, xs = np.nonzero(b)
        h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
        assert b.sum() == h * w  # one solid rectangle, inside the crop by construction
        assert 0.02 * size**2 * 0.8 <= h * w <= 0.4 * size**2 * 1.01  # int() truncation shaves a little


def test_jitter_ops_match_torchvision():
    x = torch.rand(3, 3, 16, 20)
    f = torch.full((3,), 1.3)
    assert torch.allclose(A._brightness(x, f), TF.adjust_brightness(x, 1.3), atol=1e-6)
    assert torch.allclose(A._contrast(x, f), TF.adjust_contrast(x, 1.3), atol=1e-4)
    assert torch.allclose(A._saturation(x, f), TF.adjust_saturation(x, 1.3), atol=1e-4)
    for hue in (-0.25, 0.1):
        assert torch.allclose(A._hue(x, torch.full((3,), hue)), TF.adjust_hue(x, hue), atol=1e-5)
    blurred = A.gaussian_blur(x, torch.full((3,), 1.0))
    ref = TF.gaussian_blur(x, [2 * A.BLUR_RADIUS + 1] * 2, [1.0, 1.0])
    inner = (..., slice(A.BLUR_RADIUS, -A.BLUR_RADIUS), slice(A.BLUR_RADIUS, -A.BLUR_RADIUS))
    assert torch.allclose(blurred[inner], ref[inner], atol=1e-5)  # borders differ: replicate vs reflect


def _params(seeds: list[int]) -> dict[str, torch.Tensor]:
    drawn = [A.sample_photometric(np.random.default_rng(s)) for s in seeds]
    return {k: torch.as_tensor(np.stack([d[k] for d in drawn])) for k in drawn[0]}


def test_strong_photometric_is_per_sample_and_in_range():
    x = torch.rand(6, 3, 16, 16)
    params = _params(list(range(6)))
    batched = A.strong_photometric(x, params)
    assert batched.shape == x.shape and batched.min() >= 0 and batched.max() <= 1
    for i in range(6):  # a sample's result does not depend on its batch mates (DDP shards batches)
        single = A.strong_photometric(x[i : i + 1], {k: v[i : i + 1] for k, v in params.items()})
        assert torch.allclose(single, batched[i : i + 1], atol=1e-6)
    off = {
        **params,
        "jitter": torch.zeros(6, dtype=torch.bool),
        "gray": torch.zeros(6, dtype=torch.bool),
        "blur": torch.zeros(6, dtype=torch.bool),
    }
    assert torch.equal(A.strong_photometric(x, off), x)


def test_scale_crop_flip_pads_with_ignore_and_keeps_classes():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)
    label = rng.integers(0, 4, (20, 30), dtype=np.uint8)
    for seed in range(10):
        img, lab = A.scale_crop_flip(image, label, 48, np.random.default_rng(seed))
        assert img.shape == (48, 48, 3) and lab.shape == (48, 48)
        assert set(np.unique(lab)) <= {0, 1, 2, 3, 255}
        assert (lab == 255).any()  # 20x30 at <= x2 cannot fill 48x48
        assert (img[lab == 255] == 0).all()  # padding is black
    _, pad = A.scale_crop_flip(image, None, 48, np.random.default_rng(0))
    assert set(np.unique(pad)) == {0, 255}


class _Toy:
    """Dataset stand-in whose image encodes its index."""

    def __init__(self, n: int, labels: bool = True):
        self.n, self.labels = n, labels

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        image = np.full((32, 32, 3), i, np.uint8)
        return image, (np.full((32, 32), i % 3, np.uint8) if self.labels else None)


def test_batches_are_a_function_of_seed_and_iteration_and_shard_like_one_process():
    kw = dict(crop=32, seed=3, total=10)
    one = IterationBatches(_Toy(5), _Toy(7, False), batch_size=4, **kw)
    ranks = [IterationBatches(_Toy(5), _Toy(7, False), batch_size=2, rank=r, world=2, **kw) for r in range(2)]
    for it in (0, 4):
        whole = one[it]
        assert set(whole) >= {"x", "y", "u", "u_ignore", "o", "o_ignore", "box1", "box2", "fp_seed"}
        assert photometric_params(whole, "s1").keys() == {"jitter", "order", "factors", "gray", "blur", "sigma"}
        parts = [r[it] for r in ranks]
        for k, v in whole.items():
            assert torch.equal(v, torch.cat([p[k] for p in parts])), k
        again = one[it]
        assert all(torch.equal(v, again[k]) for k, v in whole.items())


def test_streams_cover_every_item_each_epoch_and_partner_differs():
    n = 9
    labelled = [stream_index(0, "labeled", p, n) for p in range(n)]
    assert sorted(labelled) == list(range(n))
    main = [stream_index(0, "unlabeled", p, n) for p in range(2 * n)]
    partner = [stream_index(0, "partner", p, n) for p in range(2 * n)]
    assert sorted(main[:n]) == sorted(main[n:]) == list(range(n))
    assert main != partner
    assert sum(a == b for a, b in zip(main, partner)) < n // 2


@pytest.mark.parametrize("semi", [True, False])
def test_supervised_batches_carry_only_labelled_data(semi):
    ds = IterationBatches(_Toy(3), _Toy(3, False), crop=32, batch_size=2, seed=0, total=1, semi=semi)
    assert ("u" in ds[0]) == semi
