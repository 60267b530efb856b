"""Loss terms: the six L_sta cases (docs/method.md §7.2), gradient routing of L_sta, the pixelwise CE and the ramp."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from co2s.train.losses import (
    Targets,
    confidence_weighted_ce,
    stability_loss,
    stability_masks,
    stability_weight,
    supervised_ce,
)
from co2s.train.step import stability_losses

TAU = 0.95

# (c_clip, c_dinov3) -> (CLIP learns, DINOv3 learns), one row per case of the table in docs/method.md §7.2.
SIX_CASES = [
    ((0.97, 0.99), (True, False)),  # both high, c_d > c_c
    ((0.99, 0.97), (False, True)),  # both high, c_c > c_d
    ((0.98, 0.98), (True, True)),  # both high, tie
    ((0.50, 0.96), (True, False)),  # only DINOv3 high
    ((0.96, 0.50), (False, True)),  # only CLIP high
    ((0.90, 0.94), (False, False)),  # both low
]


def test_stability_masks_six_cases_pixelwise():
    conf_clip = torch.tensor([[[c for (c, _), _ in SIX_CASES]]])  # [1, 1, 6]: one pixel per case
    conf_dino = torch.tensor([[[d for (_, d), _ in SIX_CASES]]])
    clip_learns, dino_learns = stability_masks(conf_clip, conf_dino, TAU)
    assert clip_learns.flatten().tolist() == [e[0] for _, e in SIX_CASES]
    assert dino_learns.flatten().tolist() == [e[1] for _, e in SIX_CASES]


def test_stability_masks_threshold_is_inclusive():
    learns_a, learns_b = stability_masks(torch.tensor([0.5]), torch.tensor([TAU]), TAU)
    assert learns_a.item() and not learns_b.item()


def _logits_with_confidence(conf: float, cls: int, n: int = 4) -> torch.Tensor:
    """Logits whose softmax has max probability `conf` on class `cls` (rest spread evenly)."""
    p = torch.full((n,), (1 - conf) / (n - 1))
    p[cls] = conf
    return p.log()


def _pair_maps():
    """Weak-view logits of two students over six pixels, one per case, plus the expected masks."""
    n = 4
    clip = torch.stack([_logits_with_confidence(c, 0, n) for (c, _), _ in SIX_CASES], -1)  # [N, 6]
    dino = torch.stack([_logits_with_confidence(d, 1, n) for (_, d), _ in SIX_CASES], -1)
    return clip.view(1, n, 1, 6), dino.view(1, n, 1, 6)


@pytest.mark.parametrize("sta_grad", [True, False])
def test_stability_losses_value_and_gradient_routing(sta_grad):
    clip, dino = _pair_maps()
    clip.requires_grad_(True)
    dino.requires_grad_(True)
    valid = torch.ones(1, 1, 6, dtype=torch.bool)
    losses = stability_losses({"clip": clip, "dinov3": dino}, valid, TAU, sta_grad)

    p_c, p_d = F.softmax(clip.detach(), 1), F.softmax(dino.detach(), 1)
    sq = (p_c - p_d).pow(2).sum(1)[0, 0]  # [6]
    for name, col in (("clip", 0), ("dinov3", 1)):
        mask = torch.tensor([e[col] for _, e in SIX_CASES])
        expected = sq[mask].sum() / (mask.sum() * 4)
        assert losses[name].item() == pytest.approx(expected.item(), rel=1e-6)

    # L_sta(clip) reaches only CLIP's logits, and only where CLIP learns; never the teacher.
    if sta_grad:
        g_clip, g_dino = torch.autograd.grad(losses["clip"], (clip, dino), allow_unused=True)
        assert g_dino is None
        touched = g_clip.abs().sum(1)[0, 0] > 0
        assert touched.tolist() == [e[0] for _, e in SIX_CASES]
        g_clip, g_dino = torch.autograd.grad(losses["dinov3"], (clip, dino), allow_unused=True)
        assert g_clip is None
        assert ((g_dino.abs().sum(1)[0, 0] > 0).tolist()) == [e[1] for _, e in SIX_CASES]
    else:  # the reference: a detached constant
        assert not losses["clip"].requires_grad and not losses["dinov3"].requires_grad


def test_stability_losses_skip_padding_and_empty_mask_is_zero():
    clip, dino = _pair_maps()
    none_valid = torch.zeros(1, 1, 6, dtype=torch.bool)
    losses = stability_losses({"clip": clip, "dinov3": dino}, none_valid, TAU, True)
    assert losses["clip"].item() == 0 and losses["dinov3"].item() == 0


def test_stability_loss_formula():
    p = torch.tensor([[0.5, 0.5], [1.0, 0.0]]).T.reshape(1, 2, 1, 2)  # pixel 0: (.5,.5), pixel 1: (1,0)
    q = torch.tensor([[1.0, 0.0], [1.0, 0.0]]).T.reshape(1, 2, 1, 2)
    mask = torch.tensor([[[True, True]]])
    # ((0.5)^2 + (0.5)^2 + 0 + 0) / (2 pixels x 2 classes)
    assert stability_loss(p, q, mask, torch.tensor(2.0)).item() == pytest.approx(0.125)


def test_confidence_weighted_ce_denominator_counts_all_unpadded_pixels():
    logits = torch.randn(1, 3, 2, 2)
    pseudo = torch.tensor([[[0, 1], [2, 0]]])
    conf = torch.tensor([[[0.99, 0.5], [0.96, 0.99]]])
    ignore = torch.tensor([[[0, 0], [0, 255]]], dtype=torch.uint8)
    ce = F.cross_entropy(logits, pseudo, reduction="none")[0]
    expected = (ce[0, 0] + ce[1, 0]) / 3  # confident and unpadded: (0,0), (1,0); 3 unpadded pixels
    got = confidence_weighted_ce(logits, Targets(pseudo, conf, ignore), TAU, torch.tensor(3.0))
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


def test_supervised_ce_matches_torch_ignore_index():
    logits = torch.randn(2, 4, 5, 5)
    labels = torch.randint(0, 4, (2, 5, 5))
    labels[0, :2] = 255
    den = (labels != 255).sum().float()
    ref = F.cross_entropy(logits, labels, ignore_index=255)
    assert supervised_ce(logits, labels, den).item() == pytest.approx(ref.item(), rel=1e-6)


def test_stability_weight_ramp():
    total = 100  # ramp over round(0.2 * 100) = 20 iterations
    assert stability_weight(0, total) == 0.0
    assert stability_weight(19, total) == pytest.approx(0.5)
    assert stability_weight(10, total) == pytest.approx(0.25 * (1 - math.cos(math.pi * 10 / 19)))
    assert all(stability_weight(t, total) == 0.5 for t in (20, 50, 99))
    ws = [stability_weight(t, total) for t in range(20)]
    assert ws == sorted(ws)
    assert stability_weight(0, 2) == 0.5  # ramp shorter than one iteration: flat


@pytest.mark.parametrize("total", [3, 4, 5, 6, 7])
def test_stability_weight_one_iteration_ramp_is_at_the_peak_as_in_the_reference(total):
    # round(0.2 T) = 1: the reference's ramp (x = 1 for a one-step ramp) is at the peak from t = 0
    assert stability_weight(0, total) == 0.5
    assert stability_weight(0, 8) == 0.0 and stability_weight(1, 8) == 0.5  # round(1.6) = 2: 0, then the peak
