"""Evaluation (docs/method.md §8): sliding-window logits per student, fused prediction, dataset-level mIoU.

The confusion matrix is summed over the whole split, then scored by `co2s.metrics` (the definition the export
parity report uses too): IoU per class, mIoU over the classes present in labels or predictions; only label
IGNORE_INDEX pixels are excluded. Images are evaluated at their native size (no test-time rescale, unlike the
reference's img_scale, docs/method.md §10.1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from co2s.bundle.formats import default_overlap
from co2s.cli import progress_bar
from co2s.metrics import confusion_matrix, iou_per_class, mean_iou

from .model import Co2S, fuse_probabilities

FUSED = "fused"


class IoUAccumulator:
    """Dataset-level confusion matrix (int64, so large splits do not lose counts)."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.confusion = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        self.confusion += confusion_matrix(pred.cpu().numpy(), target.cpu().numpy(), self.num_classes)

    def all_reduce(self) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            counts = torch.from_numpy(self.confusion)
            torch.distributed.all_reduce(counts)
            self.confusion = counts.numpy()

    def iou(self) -> np.ndarray:
        """Per-class IoU in percent (NaN for a class absent from labels and predictions)."""
        return iou_per_class(self.confusion)

    def miou(self) -> float:
        return mean_iou(self.confusion)


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Window origins along one axis; the last one is shifted to end at the border (mmseg slide inference)."""
    n = max(size - window + stride - 1, 0) // stride + 1
    return sorted({max(min(i * stride, size - window), 0) for i in range(n)})


@torch.no_grad()
def sliding_window_logits(
    model: Co2S, image: torch.Tensor, window: int, stride: int | None = None, window_batch: int = 8
) -> dict[str, torch.Tensor]:
    """Averaged logits [1, N, H, W] of every student for one image [1, 3, H, W] in [0, 1].

    Images smaller than the window are zero-padded right/bottom and the logits cropped back.
    """
    stride = stride or window - default_overlap(window)
    _, _, h, w = image.shape
    padded = F.pad(image, (0, max(window - w, 0), 0, max(window - h, 0)))
    ph, pw = padded.shape[-2:]
    origins = [(y, x) for y in window_starts(ph, window, stride) for x in window_starts(pw, window, stride)]
    sums: dict[str, torch.Tensor] = {}
    count = torch.zeros(1, 1, ph, pw, device=image.device)
    for i in range(0, len(origins), window_batch):
        chunk = origins[i : i + window_batch]
        crops = torch.cat([padded[..., y : y + window, x : x + window] for y, x in chunk])
        for name, logits in model(crops).items():
            acc = sums.setdefault(name, torch.zeros(1, logits.shape[1], ph, pw, device=image.device))
            for (y, x), lg in zip(chunk, logits.float()):
                acc[0, :, y : y + window, x : x + window] += lg
        for y, x in chunk:
            count[..., y : y + window, x : x + window] += 1
    return {name: (s / count)[..., :h, :w] for name, s in sums.items()}


@dataclass
class EvalResult:
    classes: tuple[str, ...]
    confusion: dict[str, np.ndarray]  # prediction name (each student, "fused") -> confusion matrix over the split

    @property
    def iou(self) -> dict[str, np.ndarray]:
        """Per-class IoU in percent; NaN for a class absent from labels and that prediction."""
        return {name: iou_per_class(c) for name, c in self.confusion.items()}

    @property
    def miou(self) -> dict[str, float]:
        return {name: mean_iou(c) for name, c in self.confusion.items()}

    def table(self) -> str:
        """Per-class IoU table, one column per prediction, last row mIoU; '-' marks a class that was absent."""
        iou, names = self.iou, list(self.confusion)
        width = max([len(c) for c in self.classes] + [4])
        lines = [f"{'class':<{width}}  " + "  ".join(f"{n:>9}" for n in names)]
        for k, cls in enumerate(self.classes):
            cells = ("        -" if np.isnan(iou[n][k]) else f"{iou[n][k]:9.2f}" for n in names)
            lines.append(f"{cls:<{width}}  " + "  ".join(cells))
        lines.append(f"{'mIoU':<{width}}  " + "  ".join(f"{self.miou[n]:9.2f}" for n in names))
        return "\n".join(lines)


@torch.no_grad()
def evaluate(
    model: Co2S,
    dataset,
    *,
    window: int,
    fusion: str = "mean",
    device: str | torch.device = "cpu",
    rank: int = 0,
    world: int = 1,
    progress: bool = False,
    amp_dtype: torch.dtype | None = None,
) -> EvalResult:
    """mIoU of every student and of the fused prediction over `dataset` (items (image uint8 HxWx3, label HxW)).

    Under torchrun each rank takes every world-th image (no padding duplicates) and the counts are all-reduced.
    """
    classes = tuple(dataset.info.classes)
    was_training = model.training
    model.eval()
    meters: dict[str, IoUAccumulator] = {}
    indices = range(rank, len(dataset), world)
    for i in progress_bar(indices, desc="evaluate", enabled=progress):
        image, label = dataset[i]
        img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].to(device).float() / 255
        target = torch.from_numpy(np.asarray(label))
        with torch.autocast(torch.device(device).type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = sliding_window_logits(model, img, window)
        if tuple(target.shape) != tuple(img.shape[-2:]):  # predictions are scored at label resolution
            logits = {
                n: F.interpolate(v, size=tuple(target.shape), mode="bilinear", align_corners=True)
                for n, v in logits.items()
            }
        preds = {n: v.argmax(1)[0] for n, v in logits.items()}
        preds[FUSED] = fuse_probabilities(list(logits.values()), fusion).argmax(1)[0]  # one student: itself
        for name, pred in preds.items():
            meters.setdefault(name, IoUAccumulator(len(classes))).update(pred, target)
    if not meters:  # this rank had no image; keep the all-reduce collective matched
        meters = {n: IoUAccumulator(len(classes)) for n in [*model.students, FUSED]}
    for m in meters.values():
        m.all_reduce()
    model.train(was_training)
    return EvalResult(classes, {name: m.confusion for name, m in meters.items()})
