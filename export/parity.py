"""Parity metrics between the PyTorch model and each ONNX precision (numpy + onnxruntime only).

* FP32 ONNX vs PyTorch: max abs difference of the fused top probability (`confidence`), of all fused
  probabilities when the graph has a `probs` output, and label (pixel) agreement.
* FP16 / INT8 vs FP32 ONNX: pixel agreement and the mIoU delta. With ground-truth labels (the synthetic set)
  the delta is mIoU(precision) - mIoU(fp32) against the truth; without, the FP32 labels are the reference and
  the delta is mIoU(precision vs fp32) - 100.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from co2s.metrics import confusion_matrix, mean_iou

THRESHOLDS = {"fp32": 0.9999, "fp16": 0.995, "int8": 0.97}


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


def vs_fp32(out: dict, fp32: dict, truth: np.ndarray | None, num_classes: int) -> dict:
    res = {
        "reference": "onnx-fp32",
        "pixel_agreement": pixel_agreement(out["labels"], fp32["labels"]),
        "max_abs_confidence_diff": float(np.abs(out["confidence"] - fp32["confidence"]).max()),
    }
    if truth is not None:
        res["miou_reference"] = "ground-truth"
        res["miou"] = mean_iou(confusion_matrix(out["labels"], truth, num_classes))
        res["miou_delta"] = res["miou"] - mean_iou(confusion_matrix(fp32["labels"], truth, num_classes))
    else:
        res["miou_reference"] = "fp32-predictions"
        res["miou"] = mean_iou(confusion_matrix(out["labels"], fp32["labels"], num_classes))
        res["miou_delta"] = res["miou"] - 100.0
    return res


def judge(precision: str, result: dict) -> dict:
    threshold = THRESHOLDS[precision]
    result["threshold"] = threshold
    result["passed"] = result["pixel_agreement"] >= threshold
    return result
