"""Evaluation: mIoU against a hand-computed confusion matrix, sliding-window geometry and averaging."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from co2s.train.evaluate import FUSED, IoUAccumulator, evaluate, sliding_window_logits, window_starts


def test_miou_matches_hand_computed_confusion_matrix():
    n = 4  # class 3 appears in neither ground truth nor prediction: no IoU, left out of the mean (co2s.metrics)
    target = torch.tensor([[0, 0, 1, 1, 2, 255], [0, 2, 2, 1, 255, 255]])
    pred = torch.tensor([[0, 1, 1, 1, 2, 0], [2, 2, 0, 1, 3, 1]])
    # Confusion over non-ignored pixels (rows = target, cols = prediction):
    cm = np.zeros((n, n), int)
    for t, p in zip(target.flatten().tolist(), pred.flatten().tolist()):
        if t != 255:
            cm[t, p] += 1
    inter = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - inter
    assert union[3] == 0
    expected = inter[:3] / union[:3] * 100

    acc = IoUAccumulator(n)
    acc.update(pred[:1], target[:1])  # dataset-level: sums over images, not a mean of per-image IoUs
    acc.update(pred[1:], target[1:])
    np.testing.assert_allclose(acc.iou()[:3], expected, rtol=1e-9)
    assert np.isnan(acc.iou()[3])
    assert acc.miou() == pytest.approx(expected.mean())
    # spot value, class 0: I = 1, U = 2 predicted (the 0 predicted on an ignored pixel does not count) + 3 - 1
    assert acc.iou()[0] == pytest.approx(25.0)


def test_window_starts_shift_last_window_to_border():
    assert window_starts(512, 512, 426) == [0]
    assert window_starts(1024, 512, 426) == [0, 426, 512]
    assert window_starts(600, 256, 213) == [0, 213, 344]
    assert window_starts(100, 128, 106) == [0]


class _PixelModel(nn.Module):
    """A per-pixel model (1x1 conv), so sliding-window logits must equal whole-image logits."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        torch.manual_seed(0)
        self.students = nn.ModuleDict({"a": nn.Conv2d(3, num_classes, 1), "b": nn.Conv2d(3, num_classes, 1)})
        self.calls: list[tuple[int, ...]] = []

    def forward(self, x):
        self.calls.append(tuple(x.shape))
        return {k: m(x) for k, m in self.students.items()}


@pytest.mark.parametrize("hw", [(100, 90), (40, 70), (64, 64)])
def test_sliding_window_equals_whole_image_for_a_pixelwise_model(hw):
    model = _PixelModel()
    image = torch.rand(1, 3, *hw)
    out = sliding_window_logits(model, image, window=64, stride=53)
    for name, m in model.students.items():
        assert out[name].shape == (1, 3, *hw)
        assert torch.allclose(out[name], m(image), atol=1e-5)
    assert all(c[-2:] == (64, 64) for c in model.calls)  # small images are padded to the window


class _ToyVal:
    class info:
        classes = ("c0", "c1", "c2")

    def __init__(self):
        rng = np.random.default_rng(0)
        self.items = [
            (rng.integers(0, 255, (70, 90, 3), dtype=np.uint8), rng.integers(0, 3, (70, 90), dtype=np.uint8))
            for _ in range(3)
        ]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_evaluate_reports_each_student_and_fused():
    model, data = _PixelModel(), _ToyVal()
    result = evaluate(model, data, window=64)
    assert set(result.iou) == {"a", "b", FUSED}
    # recompute student "a" by hand on whole images
    acc = IoUAccumulator(3)
    with torch.no_grad():
        for image, label in data.items:
            x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
            acc.update(model.students["a"](x).argmax(1)[0], torch.from_numpy(label))
    np.testing.assert_allclose(result.iou["a"], acc.iou(), atol=1e-9)
    table = result.table()
    assert "mIoU" in table and "c2" in table and "fused" in table
