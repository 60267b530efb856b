"""INT8 for onnxruntime's CPU kernels (`model.int8-cpu.onnx`), beside the TensorRT-shaped `model.int8.onnx`.

The TensorRT INT8 graph (precision.py: symmetric Q/DQ over an FP16 graph) is what TensorRT needs and what the
CPU runs slowest: onnxruntime's CPU EP has no fast FP16 kernels and fuses only the U8 activation / S8 weight
patterns. This file is built from the FP32 graph with onnxruntime's own tools, in one of three forms
(export/README.md "Precisions"; numbers in benchmarks/results/cpu_int8.md):

  dynamic    quantize_dynamic: weight-bearing MatMuls get S8 weights, activations are quantised per call
             (DynamicQuantizeLinear -> MatMulInteger, fused by ORT into DynamicQuantizeMatMul). No calibration.
  qoperator  quantize_static, QOperator (QLinearMatMul / QLinearConv), U8 activations, S8 weights, calibrated.
  qdq        quantize_static, QDQ U8/S8, calibrated; ORT fuses the Q/DQ pairs into the same integer kernels.

What is quantised: the weight-bearing MatMuls (attention projections, MLPs: export/onnx_export.py keeps them
unfused from their bias for this) and, in the static forms, Gemm and the head's convolutions; the FP32 islands of
precision.py (attention scores, the cosine similarity, norms) stay FP32. Dynamic leaves Conv in FP32:
ConvInteger has no fast CPU kernel.

Weights are 7-bit (reduce_range): on x86 CPUs without VNNI (AVX2, most AVX-512 before Cascade Lake) onnxruntime's
U8S8 kernels use VPMADDUBSW, whose 16-bit pair sums saturate with full-range weights (onnxruntime's own guidance
for these CPUs). Measured on a tiny pair trained on Dubai, 32 val tiles: label agreement with FP32 96.6 % with
8-bit weights, 99.7 % with 7-bit; the bundle does not know the CPU it will run on, so it takes the safe one.
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx

from co2s.bundle.formats import CPU_INT8_FORMS

from .calibration import calibrated_ranges, calibration_reader
from .onnx_export import check_onnx, needs_external_data, save_onnx
from .precision import _no_root_warnings, quantizable_nodes

# Chosen by benchmarks/cpu_int8.py on the paper preset (this project's 2-core AVX2 machine): see its results
DEFAULT_CPU_INT8_FORM = "dynamic"


def quantize_int8_cpu(
    fp32_path: Path,
    out_path: Path,
    calib: np.ndarray,
    *,
    form: str = DEFAULT_CPU_INT8_FORM,
    input_name: str = "images",
    batch: int = 1,
) -> dict:
    """Write `out_path` in `form` (CPU_INT8_FORMS); returns its record for the manifest's "precisions"."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    if form not in CPU_INT8_FORMS:
        raise ValueError(f"unknown CPU INT8 form {form!r}; expected one of {CPU_INT8_FORMS}")
    model = onnx.load(str(fp32_path), load_external_data=False)
    take, skip = quantizable_nodes(model)
    ops = {n.name: n.op_type for n in model.graph.node}
    del model
    reader = calibration_reader(calib, input_name, batch)
    if form == "dynamic":  # onnxruntime's dynamic quantiser has integer kernels for MatMul only (no Gemm, Conv)
        skip = skip + [n for n in take if ops[n] != "MatMul"]
        take = [n for n in take if ops[n] == "MatMul"]
    external = needs_external_data(fp32_path)
    with tempfile.TemporaryDirectory() as tmp, _no_root_warnings():
        q = Path(tmp) / "q.onnx"
        if form == "dynamic":
            quantize_dynamic(
                str(fp32_path),
                str(q),
                op_types_to_quantize=["MatMul"],
                weight_type=QuantType.QInt8,
                reduce_range=True,
                nodes_to_quantize=take,
                use_external_data_format=external,
                extra_options={"MatMulConstBOnly": True},
            )
        else:
            ops_static = ["MatMul", "Gemm", "Conv"]
            ranges = calibrated_ranges(fp32_path, reader, CalibrationMethod.MinMax, ops_static, Path(tmp) / "r.json")
            quantize_static(
                str(fp32_path),
                str(q),
                None,  # the ranges come from the cache
                quant_format=QuantFormat.QOperator if form == "qoperator" else QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                reduce_range=True,
                calibrate_method=CalibrationMethod.MinMax,
                nodes_to_quantize=take,
                op_types_to_quantize=ops_static,
                use_external_data_format=external,
                calibration_cache_path=str(ranges),
            )
        model = onnx.load(str(q))

    save_onnx(model, out_path)
    check_onnx(out_path)
    counts: dict[str, int] = defaultdict(int)
    for n in model.graph.node:
        counts[n.op_type] += 1
    integer_ops = {
        k: v
        for k, v in sorted(counts.items())
        if k in ("MatMulInteger", "DynamicQuantizeLinear", "QLinearMatMul", "QLinearConv", "QuantizeLinear")
        or k == "DequantizeLinear"
    }
    return {
        "method": f"ort-{form}",
        "format": {"dynamic": "dynamic", "qoperator": "QOperator", "qdq": "QDQ"}[form],
        "activations": "uint8, scale per call" if form == "dynamic" else "uint8 (asymmetric), calibrated min/max",
        "weights": "int8 (symmetric, per tensor, 7-bit range: no U8S8 saturation on CPUs without VNNI)",
        "calibrated": form != "dynamic",
        "quantized_nodes": len(take),
        "excluded_nodes": len(skip),
        "integer_ops": integer_ops,
        "high_precision": "fp32",
    }
