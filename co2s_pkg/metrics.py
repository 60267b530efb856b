"""Segmentation scores (numpy only), shared by training evaluation and the export parity report.

mIoU is the mean IoU over the classes *present*: those with a non-empty union, i.e. that occur in the labels or
in the prediction. A class that occurs in neither says nothing about the model, so it is left out instead of
counted as 0 (as the reference, UniMatch's evaluator, does: a deliberate difference). Counted as 0, a split that
lacks a class scores lower for every model alike, and a parity check on a few tiles would mostly measure which
classes those tiles happen to show. With no scored pixel at all the mIoU is NaN (nothing was measured).
Scores are percentages. Label pixels equal to IGNORE_INDEX are not scored.
"""

from __future__ import annotations

import numpy as np

from co2s.bundle.formats import IGNORE_INDEX


def confusion_matrix(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> np.ndarray:
    """int64 [N, N]: rows are label classes, columns predicted classes, over pixels whose label is not ignored.
    Both must be class indices 0..N-1 there (labels may also hold IGNORE_INDEX)."""
    truth, pred = np.asarray(truth).ravel(), np.asarray(pred).ravel()
    if pred.shape != truth.shape:
        raise ValueError(f"the prediction has {pred.size} pixels, the labels {truth.size}")
    keep = truth != IGNORE_INDEX
    t, p = truth[keep].astype(np.int64), pred[keep].astype(np.int64)
    for name, v in (("label", t), ("prediction", p)):
        if v.size and (v.min() < 0 or v.max() >= num_classes):
            raise ValueError(f"{name} values must be 0..{num_classes - 1}, got {v.min()}..{v.max()}")
    return np.bincount(t * num_classes + p, minlength=num_classes**2).reshape(num_classes, num_classes)


def iou_per_class(confusion: np.ndarray) -> np.ndarray:
    """IoU of each class in percent; NaN for a class absent from both labels and prediction."""
    confusion = np.asarray(confusion)
    inter = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, 100.0 * inter / union, np.nan)


def mean_iou(confusion: np.ndarray) -> float:
    """Mean IoU in percent over the classes present (non-empty union); NaN when no pixel was scored."""
    iou = iou_per_class(confusion)
    present = ~np.isnan(iou)
    return float(iou[present].mean()) if present.any() else float("nan")
