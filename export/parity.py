"""Parity metrics between the PyTorch model and each ONNX precision (numpy + onnxruntime only).

* FP32 ONNX vs PyTorch: max abs difference of the fused top probability (`confidence`), of all fused
  probabilities when the graph has a `probs` output, and label (pixel) agreement.
* FP16 / INT8 vs FP32 ONNX: pixel agreement and the mIoU delta. With ground-truth labels (the training set's val
  tiles, or the synthetic set) the delta is mIoU(precision) - mIoU(fp32) against the truth; without, the FP32
  labels are the reference and the delta is mIoU(precision vs fp32) - 100. Only classes that hold at least
  MIN_CLASS_SHARE of the reference pixels are scored: on a few tiles a class of a few hundred pixels swings the
  mean by 100/k points on a handful of flipped pixels (FP16 read -25 mIoU at 99.95 % agreement), which is noise,
  not a precision loss. With no such class the delta is not reported (None).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from co2s.bundle.formats import IGNORE_INDEX
from co2s.metrics import confusion_matrix, iou_per_class

THRESHOLDS = {"fp32": 0.9999, "fp16": 0.995, "int8": 0.97, "int8-cpu": 0.97}
MIN_CLASS_SHARE = 0.005  # of the scored reference pixels: rarer classes are left out of the parity mIoU


def run_onnx(path: Path, images: np.ndarray, *, batch: int = 1, threads: int | None = None) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # ORT's constant-folding chatter about fp16 kernels is not actionable here
    if threads:
        opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    outs = [o.name for o in sess.get_outputs()]
    chunks = []
    for i in range(0, len(images), batch):
        x = images[i : i + batch]
        short = batch - len(x)
        if short:  # a static batch dim: pad the last chunk, drop the padding from the results
            x = np.concatenate([x, np.repeat(x[-1:], short, axis=0)])
        chunks.append([o[: batch - short] for o in sess.run(None, {name: x})])
    return {n: np.concatenate([c[k] for c in chunks]) for k, n in enumerate(outs)}


def pixel_agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a == b).mean())


def fp32_vs_pytorch(onnx_out: dict, ref: dict) -> dict:
    out = {
        "reference": "pytorch",
        "pixel_agreement": pixel_agreement(onnx_out["labels"], ref["labels"]),
        "max_abs_confidence_diff": float(np.abs(onnx_out["confidence"] - ref["confidence"]).max()),
        "max_abs_prob_diff": None,
    }
    if "probs" in onnx_out:
        out["max_abs_prob_diff"] = float(np.abs(onnx_out["probs"].astype(np.float32) - ref["probs"]).max())
    return out


def _scored_miou(pred: np.ndarray, ref: np.ndarray, num_classes: int, classes: np.ndarray) -> float:
    iou = iou_per_class(confusion_matrix(pred, ref, num_classes))[classes]
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


def vs_fp32(out: dict, fp32: dict, truth: np.ndarray | None, num_classes: int) -> dict:
    res = {
        "reference": "onnx-fp32",
        "pixel_agreement": pixel_agreement(out["labels"], fp32["labels"]),
        "max_abs_confidence_diff": float(np.abs(out["confidence"] - fp32["confidence"]).max()),
    }
    ref = truth if truth is not None else fp32["labels"]
    counts = np.bincount(ref[ref != IGNORE_INDEX].ravel().astype(np.int64), minlength=num_classes)[:num_classes]
    classes = np.flatnonzero(counts >= MIN_CLASS_SHARE * max(1, counts.sum()))
    res["miou_reference"] = "ground-truth" if truth is not None else "fp32-predictions"
    res["miou_classes"] = [int(c) for c in classes]
    res["miou"] = res["miou_delta"] = None
    if len(classes):
        res["miou"] = _scored_miou(out["labels"], ref, num_classes, classes)
        base = _scored_miou(fp32["labels"], ref, num_classes, classes) if truth is not None else 100.0
        res["miou_delta"] = res["miou"] - base
    return res


def judge(precision: str, result: dict) -> dict:
    threshold = THRESHOLDS[precision]
    result["threshold"] = threshold
    result["passed"] = result["pixel_agreement"] >= threshold
    return result
