"""VLG head: shapes, parameter counts against the reference, the (batch x class) folding done right, and the two
choices aligned with the reference (docs/method.md §4, §10.2): the FFN width and non-finite class vectors."""

from __future__ import annotations

import pytest
import torch

from co2s.train.model import VLGHead, fuse_probabilities


def _feats(b: int, h: int, w: int, chans=(768, 768, 512)) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(b, c, h, w, generator=g) for c in chans]


def _head(text_in: int = 512) -> VLGHead:
    torch.manual_seed(0)
    return VLGHead(512 if text_in == 512 else 768, (768, 768), text_in).eval()


@pytest.mark.parametrize("n", [6, 7, 9, 15])
def test_output_shape_per_class_count(n):
    head = _head()
    with torch.no_grad():
        out = head(_feats(2, 16, 16), torch.randn(n, 512), (256, 256))
    assert out.shape == (2, n, 256, 256)
    assert torch.isfinite(out).all()


def test_output_size_follows_the_caller_not_the_crop():
    head = _head()
    with torch.no_grad():
        out = head(_feats(1, 8, 12), torch.randn(6, 512), (128, 192))
    assert out.shape == (1, 6, 128, 192)


def test_parameter_counts_match_the_reference():
    # The reference's head: 2,217,185 parameters for CLIP (text 512 -> 128) and 2,249,953 for DINOv3 (768 -> 128)
    assert sum(p.numel() for p in _head(512).parameters()) == 2_217_185
    assert sum(p.numel() for p in _head(768).parameters()) == 2_249_953


def test_ffn_width_is_four_times_the_visual_width_whatever_the_text_width():
    head = VLGHead(64, (32,), 48, channels=32, text_channels=16, up_channels=(16,), skip_channels=(8,), num_heads=2)
    for layer in head.layers:
        first, last = layer.transformer.ffn[0], layer.transformer.ffn[-1]
        assert (first.in_features, first.out_features, last.out_features) == (48, 128, 48)  # 32 + 16 -> 4 x 32


def test_non_finite_class_vectors_clamp_like_the_reference():
    head = _head()
    text = torch.randn(3, 512)
    text[0, 5], text[1, 7], text[2, 9] = float("inf"), float("-inf"), float("nan")
    clamped = text.clone()
    clamped[0, 5], clamped[1, 7], clamped[2, 9] = 1e4, -1e4, 0.0
    folded, expected = head.fold_text(text)[0], head.fold_text(clamped)[0]
    assert torch.isfinite(folded).all()
    torch.testing.assert_close(folded, expected, rtol=0, atol=0)
    assert folded[0, 5] > 0.99 and folded[1, 7] < -0.99  # the overflowing entry sets the direction


def test_batch_items_do_not_mix():
    # Classes are folded into the batch inside the head; a wrong reshape would leak between images.
    head, feats, text = _head(), _feats(3, 8, 8), torch.randn(6, 512)
    with torch.no_grad():
        together = head(feats, text, (64, 64))
        alone = torch.cat([head([f[i : i + 1] for f in feats], text, (64, 64)) for i in range(3)])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-4)


def test_permuting_classes_permutes_logits():
    # The head is class-agnostic (shared convs, attention across classes): reordering classes only reorders outputs.
    head, feats, text = _head(), _feats(2, 8, 8), torch.randn(7, 512)
    perm = torch.tensor([3, 0, 6, 1, 5, 2, 4])
    with torch.no_grad():
        out = head(feats, text, (32, 32))
        out_perm = head(feats, text[perm], (32, 32))
    torch.testing.assert_close(out_perm, out[:, perm], rtol=1e-4, atol=1e-4)


def test_fusion_invariants():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(2, 5, 4, 4, generator=g) * 3, torch.randn(2, 5, 4, 4, generator=g) * 3
    for mode in ("mean", "max-confidence"):
        p = fuse_probabilities([a, b], mode)
        torch.testing.assert_close(p.sum(1), torch.ones(2, 4, 4))
    # one student, or two identical ones: fusion is that student's softmax
    torch.testing.assert_close(fuse_probabilities([a, a], "mean"), torch.softmax(a, 1))
    torch.testing.assert_close(fuse_probabilities([a], "max-confidence"), torch.softmax(a, 1))
    # max-confidence picks, per pixel, the whole distribution of the more confident student
    pa, pb, fused = torch.softmax(a, 1), torch.softmax(b, 1), fuse_probabilities([a, b], "max-confidence")
    pick_a = (pa.amax(1) >= pb.amax(1)).unsqueeze(1)
    torch.testing.assert_close(fused, torch.where(pick_a, pa, pb))
    assert torch.equal(fused.amax(1), torch.maximum(pa.amax(1), pb.amax(1)))
    # mean fusion's confidence never exceeds the more confident student
    assert (fuse_probabilities([a, b], "mean").amax(1) <= torch.maximum(pa.amax(1), pb.amax(1)) + 1e-6).all()
    with pytest.raises(ValueError):
        fuse_probabilities([a, b], "vote")
