"""Precision-typed ONNX: FP16 with FP32 islands, and INT8 as explicit Q/DQ on top of it.

Why typed ONNX rather than builder flags: TensorRT 11 removes the FP16/INT8 builder flags and calibrators;
a strongly typed build takes every tensor's type from the graph. The same file then builds on TensorRT 10.3
(JetPack 6.2, STRONGLY_TYPED opt-in) and 11.x, and onnxruntime runs it on a CPU for parity checks.

FP32 islands (what overflows or loses accuracy in FP16 ViTs, deploy-anchors sections 3-5):
  * LayerNormalization, InstanceNormalization (GroupNorm), Softmax, every Reduce*, ArgMax, Pow/Sqrt/Exp/Log;
  * attention scores: a MatMul whose result reaches a Softmax (through scaling/masking/reshapes);
  * the head's cosine similarity: the L2 normalisation chain from ReduceL2 up to the MatMul that consumes it.
Everything else with a float type variable runs in FP16; Casts are inserted at island borders, weights
are stored once in the type their consumers need. The op schema decides which inputs follow the compute
type (e.g. Resize `scales` is always float32), so no per-op table of signatures is kept here.

INT8: onnxruntime `quantize_static` in QDQ format on the FP32 graph (symmetric activations and weights,
zero-point 0, per-channel weights, no bias quantisation: TensorRT dequantises only int8/fp8/int4), only
on weight-bearing Conv/MatMul/Gemm (attention batched matmuls and the similarity stay unquantised), then
the FP16 pass above over the result, so Q/DQ scales are float16 and unquantised layers run in FP16.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from co2s.bundle.formats import INT8_METHODS

from .onnx_export import check_onnx, infer_shapes, needs_external_data, save_onnx

FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
FP32_ISLAND_OPS = frozenset(
    {
        "LayerNormalization",
        "InstanceNormalization",
        "GroupNormalization",
        "BatchNormalization",
        "Softmax",
        "LogSoftmax",
        "ReduceMean",
        "ReduceSum",
        "ReduceL2",
        "ReduceL1",
        "ReduceMax",
        "ReduceMin",
        "ReduceProd",
        "ReduceSumSquare",
        "ReduceLogSumExp",
        "ArgMax",
        "ArgMin",
        "Pow",
        "Sqrt",
        "Reciprocal",
        "Exp",
        "Log",
    }
)
# Ops between an attention-score MatMul and its Softmax, and along an L2 normalisation.
_SCORE_PATH = frozenset({"Mul", "Div", "Add", "Where", "Reshape", "Transpose", "Cast"})
_NORM_PATH = frozenset({"Clip", "Max", "Expand", "Div", "Reshape", "Flatten", "Transpose", "Unsqueeze", "Squeeze"})
_NO_CONVERT = frozenset({"Cast", "CastLike", "Shape", "Size"})  # type-changing by definition: left alone
_FP16_MAX = float(np.finfo(np.float16).max)
QUANTIZED_OPS = ("Conv", "MatMul", "Gemm")


@dataclass
class PrecisionReport:
    fp32_island_nodes: int = 0
    fp16_nodes: int = 0
    casts_inserted: int = 0
    island_ops: dict[str, int] = field(default_factory=dict)
    clipped_weights: int = 0


def _opset(model: onnx.ModelProto) -> int:
    return next(i.version for i in model.opset_import if i.domain in ("", "ai.onnx"))


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    g = model.graph
    types = {v.name: v.type.tensor_type.elem_type for v in list(g.input) + list(g.value_info) + list(g.output)}
    types.update({t.name: t.data_type for t in g.initializer})
    for n in g.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    types[n.output[0]] = a.t.data_type
    return types


def _constants_to_initializers(model: onnx.ModelProto) -> None:
    g = model.graph
    keep = []
    for n in g.node:
        value = next((a.t for a in n.attribute if a.name == "value"), None) if n.op_type == "Constant" else None
        if value is not None:
            t = onnx.TensorProto()
            t.CopyFrom(value)
            t.name = n.output[0]
            g.initializer.append(t)
        else:
            keep.append(n)
    del g.node[:]
    g.node.extend(keep)


def fp32_island_nodes(model: onnx.ModelProto) -> set[int]:
    """Indices of nodes that must compute in FP32 (see module docstring)."""
    g = model.graph
    nodes = list(g.node)
    producer = {o: i for i, n in enumerate(nodes) for o in n.output}
    consumers: dict[str, list[int]] = defaultdict(list)
    for i, n in enumerate(nodes):
        for x in n.input:
            consumers[x].append(i)
    island = {i for i, n in enumerate(nodes) if n.op_type in FP32_ISLAND_OPS}

    # attention scores: walk back from each Softmax through the score path to the MatMul(s)
    for i, n in enumerate(nodes):
        if n.op_type != "Softmax":
            continue
        stack, seen = [i], set()
        while stack:
            j = stack.pop()
            for x in nodes[j].input:
                p = producer.get(x)
                if p is None or p in seen:
                    continue
                seen.add(p)
                if nodes[p].op_type in ("MatMul", "Gemm"):
                    island.add(p)
                elif nodes[p].op_type in _SCORE_PATH:
                    island.add(p)
                    stack.append(p)

    # cosine similarity: forward from each ReduceL2 along the normalisation to the consuming MatMul
    for i, n in enumerate(nodes):
        if n.op_type != "ReduceL2":
            continue
        stack, seen = [i], {i}
        while stack:
            j = stack.pop()
            for out in nodes[j].output:
                for c in consumers.get(out, []):
                    if c in seen:
                        continue
                    seen.add(c)
                    if nodes[c].op_type == "MatMul":
                        island.add(c)
                    elif nodes[c].op_type in _NORM_PATH:
                        island.add(c)
                        stack.append(c)
    return island


def _allowed(schema, formal_index: int, is_input: bool) -> tuple[str, set[str]]:
    formals = schema.inputs if is_input else schema.outputs
    formal = formals[min(formal_index, len(formals) - 1)]
    ts = formal.type_str
    for c in schema.type_constraints:
        if c.type_param_str == ts:
            return ts, set(c.allowed_type_strs)
    return ts, {ts}


def convert_to_fp16(model: onnx.ModelProto, *, keep_io_types: bool = True) -> tuple[onnx.ModelProto, PrecisionReport]:
    """FP16 with FP32 islands. Graph inputs/outputs keep their declared types."""
    model = infer_shapes(model, strict_mode=False, data_prop=True)
    _constants_to_initializers(model)
    g = model.graph
    opset = _opset(model)
    types = _elem_types(model)
    island = fp32_island_nodes(model)
    inits = {t.name: t for t in g.initializer}
    report = PrecisionReport()
    new_nodes: list[onnx.NodeProto] = []
    cast_cache: dict[tuple[str, int], str] = {}
    new_inits: dict[str, onnx.TensorProto] = {}
    produced: dict[str, int] = {v.name: v.type.tensor_type.elem_type for v in g.input}
    produced.update({t.name: t.data_type for t in g.initializer})

    def as_type(name: str, want: int) -> str:
        have = produced.get(name, types.get(name))
        if have == want or not name:
            return name
        key = (name, want)
        if key in cast_cache:
            return cast_cache[key]
        suffix = "fp16" if want == HALF else "fp32"
        if name in inits:  # weights: store a converted copy once
            arr = numpy_helper.to_array(inits[name])
            if want == HALF:
                big = np.abs(arr) > _FP16_MAX
                report.clipped_weights += int(big.any())
                arr = np.clip(arr, -_FP16_MAX, _FP16_MAX).astype(np.float16)
            else:
                arr = arr.astype(np.float32)
            new_name = f"{name}__{suffix}"
            new_inits[new_name] = numpy_helper.from_array(arr, new_name)
        else:
            new_name = f"{name}__cast_{suffix}"
            new_nodes.append(helper.make_node("Cast", [name], [new_name], to=want, name=f"{new_name}_node"))
            report.casts_inserted += 1
        produced[new_name] = want
        cast_cache[key] = new_name
        return new_name

    for idx, node in enumerate(g.node):
        schema = onnx.defs.get_schema(node.op_type, opset, node.domain)
        if node.op_type in _NO_CONVERT:
            new_nodes.append(node)
            for o in node.output:
                produced[o] = types.get(o, 0)
            continue
        compute = FLOAT if idx in island else HALF
        var_type: dict[str, int] = {}
        for i, x in enumerate(node.input):
            if not x:
                continue
            have = produced.get(x, types.get(x))
            if have not in (FLOAT, HALF):
                continue
            ts, allowed = _allowed(schema, i, True)
            want_str = "tensor(float16)" if compute == HALF else "tensor(float)"
            want = compute if want_str in allowed else (FLOAT if "tensor(float)" in allowed else have)
            var_type.setdefault(ts, want)
            want = var_type[ts]  # one type per type variable
            node.input[i] = as_type(x, want)
        for j, o in enumerate(node.output):
            ts, _ = _allowed(schema, j, False)
            orig = types.get(o, 0)
            produced[o] = var_type.get(ts, orig) if orig in (FLOAT, HALF) else orig
        if idx in island:
            report.fp32_island_nodes += 1
            report.island_ops[node.op_type] = report.island_ops.get(node.op_type, 0) + 1
        elif any(produced.get(o) == HALF for o in node.output):
            report.fp16_nodes += 1
        new_nodes.append(node)

    # graph outputs keep their declared type
    for out in g.output:
        declared = out.type.tensor_type.elem_type
        if keep_io_types and produced.get(out.name) != declared:
            inner = f"{out.name}__inner"
            for n in new_nodes:
                n.output[:] = [inner if o == out.name else o for o in n.output]
                n.input[:] = [inner if x == out.name else x for x in n.input]
            new_nodes.append(helper.make_node("Cast", [inner], [out.name], to=declared, name=f"{out.name}_cast"))
            report.casts_inserted += 1

    del g.node[:]
    g.node.extend(new_nodes)
    g.initializer.extend(new_inits.values())
    _drop_unused_initializers(model)
    _fold_cast_chains(model)
    del g.value_info[:]
    model = infer_shapes(model, strict_mode=True, data_prop=True)
    return model, report


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    used = {x for n in model.graph.node for x in n.input} | {o.name for o in model.graph.output}
    keep = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


def _fold_cast_chains(model: onnx.ModelProto) -> None:
    """Cast(Cast(x: uint8|int8|bool|fp16 -> fp32) -> fp16) == Cast(x -> fp16): exact, one node fewer."""
    g = model.graph
    types = _elem_types(infer_shapes(model, strict_mode=False, data_prop=False, weights=False))
    producer = {o: n for n in g.node for o in n.output}
    exact = {TensorProto.UINT8, TensorProto.INT8, TensorProto.BOOL, HALF}
    for n in g.node:
        if n.op_type != "Cast":
            continue
        p = producer.get(n.input[0])
        if p is not None and p.op_type == "Cast" and types.get(p.input[0]) in exact:
            to = next(a.i for a in p.attribute if a.name == "to")
            if to == FLOAT:
                n.input[0] = p.input[0]
    used = {x for n in g.node for x in n.input} | {o.name for o in g.output}
    keep = [n for n in g.node if n.op_type != "Cast" or any(o in used for o in n.output)]
    del g.node[:]
    g.node.extend(keep)


# ---------------------------------------------------------------------------------------------- INT8
# ModelOpt places Q/DQ by TensorRT's rules (fewer nodes, and better label agreement with FP32 in
# benchmarks/export_int8_methods.py; numbers in benchmarks/results/code_notes.md) and is the better choice where
# installed; onnxruntime's path is always available (CPU CI, no extra pins), so "auto" = modelopt-max if importable,
# else ort-minmax.
DEFAULT_INT8_METHOD = "auto"


def quantizable_nodes(model: onnx.ModelProto) -> tuple[list[str], list[str]]:
    """(nodes to quantize, nodes excluded): weight-bearing Conv/MatMul/Gemm outside the FP32 islands."""
    inits = {t.name for t in model.graph.initializer}
    island = fp32_island_nodes(model)
    take, skip = [], []
    for i, n in enumerate(model.graph.node):
        if n.op_type not in QUANTIZED_OPS:
            continue
        has_weight = len(n.input) > 1 and n.input[1] in inits
        (take if has_weight and i not in island else skip).append(n.name)
    return take, skip


def quantize_int8_ort(
    fp32_path: Path,
    out_path: Path,
    calib: np.ndarray,
    *,
    method: str = "ort-minmax",
    input_name: str = "images",
    batch: int = 1,
) -> dict:
    """Static INT8 Q/DQ with onnxruntime; returns the calibration details for the manifest."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    model = onnx.load(str(fp32_path))
    take, skip = quantizable_nodes(model)
    del model  # the quantizer loads its own copies; holding this one too raises the peak (code_notes.md)
    cm = {
        "ort-minmax": CalibrationMethod.MinMax,
        "ort-percentile": CalibrationMethod.Percentile,
        "ort-entropy": CalibrationMethod.Entropy,
    }[method]

    from .calibration import calibrated_ranges, calibration_reader

    reader = calibration_reader(calib, input_name, batch)
    extra = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False}
    # the calibrator options quantize_static would pass (none for min/max), plus TensorRT's entropy histogram:
    # 2048 bins searched for the best 128-level threshold (onnxruntime's default, 128 bins for 128 levels, has
    # one candidate threshold, i.e. min/max: the file was byte-identical to ort-minmax)
    calib_options = {
        "ort-minmax": {},
        "ort-percentile": {"percentile": 99.999},
        "ort-entropy": {"symmetric": True, "num_bins": 2048, "num_quantized_bins": 128},
    }[method]
    external = needs_external_data(fp32_path)
    with tempfile.TemporaryDirectory() as tmp, _no_root_warnings():
        ranges = calibrated_ranges(
            fp32_path, reader, cm, QUANTIZED_OPS, Path(tmp) / "ranges.json", options=calib_options
        )
        qdq = Path(tmp) / "qdq.onnx"
        quantize_static(
            str(fp32_path),
            str(qdq),
            None,  # the ranges come from the cache; a cache miss must fail, not calibrate again
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            calibrate_method=cm,
            nodes_to_quantize=take,
            op_types_to_quantize=list(QUANTIZED_OPS),
            extra_options=extra,
            use_external_data_format=external,
            calibration_cache_path=str(ranges),
        )
        q = onnx.load(str(qdq))
    return _finish_int8(q, out_path, method, len(take), skip)


@contextlib.contextmanager
def _no_root_warnings():
    """ORT's quantizer logs a generic 'consider pre-processing' warning on the root logger; we already clean."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def quantize_int8_modelopt(
    fp32_path: Path, out_path: Path, calib: np.ndarray, *, method: str = "modelopt-max", input_name: str = "images"
) -> dict:
    """nvidia-modelopt ONNX PTQ (CPU calibration), high-precision part left in FP32 for our own FP16 pass."""
    try:
        from modelopt.onnx.quantization import quantize
    except ImportError as e:
        raise ImportError(
            "INT8 method 'modelopt-*' needs nvidia-modelopt[onnx] (pip install 'nvidia-modelopt[onnx]'); "
            f"the default {DEFAULT_INT8_METHOD!r} needs only onnxruntime ({e})"
        ) from None
    model = onnx.load(str(fp32_path))
    take, skip = quantizable_nodes(model)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "q.onnx"
        quantize(
            onnx_path=str(fp32_path),
            quantize_mode="int8",
            calibration_data={input_name: calib},
            calibration_method=method.split("-", 1)[1],
            calibration_eps=["cpu"],
            nodes_to_exclude=skip,
            op_types_to_quantize=list(QUANTIZED_OPS),
            high_precision_dtype="fp32",
            output_path=str(out),
        )
        q = onnx.load(str(out))
    return _finish_int8(q, out_path, method, len(take), skip)


def _finish_int8(q: onnx.ModelProto, out_path: Path, method: str, n_quantized: int, skipped: list[str]) -> dict:
    q, report = convert_to_fp16(q)

    save_onnx(q, out_path)
    check_onnx(out_path)
    counts = defaultdict(int)
    for n in q.graph.node:
        counts[n.op_type] += 1
    inits = {t.name: t for t in q.graph.initializer}
    int8_weights = sum(1 for t in inits.values() if t.data_type == TensorProto.INT8 and len(t.dims) > 1)
    per_channel = sum(
        1
        for n in q.graph.node
        if n.op_type == "DequantizeLinear" and n.input[1] in inits and int(np.prod(inits[n.input[1]].dims)) > 1
    )
    return {
        "method": method,
        "format": "QDQ",
        "symmetric": True,
        "zero_points": "all 0 (int8)",
        "per_channel_dequantize": per_channel,
        "weights_stored_as": "int8" if int8_weights else "float + QuantizeLinear (folded by TensorRT)",
        "quantized_nodes": n_quantized,
        "excluded_nodes": len(skipped),
        "quantize_linear": counts["QuantizeLinear"],
        "dequantize_linear": counts["DequantizeLinear"],
        "high_precision": "fp16 with fp32 islands",
        "fp32_island_nodes": report.fp32_island_nodes,
    }


def resolve_int8_method(method: str) -> str:
    if method != "auto":
        return method
    try:
        import modelopt.onnx.quantization  # noqa: F401
    except Exception:  # noqa: BLE001 - not installed, or installed against other onnx/onnxruntime pins
        return "ort-minmax"
    return "modelopt-max"


def quantize_int8(
    fp32_path: Path, out_path: Path, calib: np.ndarray, *, method: str = DEFAULT_INT8_METHOD, batch: int = 1
) -> dict:
    if method not in INT8_METHODS:
        raise ValueError(f"unknown INT8 method {method!r}; expected one of {INT8_METHODS}")
    method = resolve_int8_method(method)
    if method.startswith("ort-"):
        return quantize_int8_ort(fp32_path, out_path, calib, method=method, batch=batch)
    if method.startswith("modelopt-"):
        return quantize_int8_modelopt(fp32_path, out_path, calib, method=method)
    raise AssertionError(f"INT8 method {method!r} is named in co2s.bundle.formats but not implemented here")


def save_fp16(fp32_path: Path, out_path: Path) -> dict:
    model = onnx.load(str(fp32_path))
    model, report = convert_to_fp16(model)

    save_onnx(model, out_path)
    check_onnx(out_path)
    return {
        "fp32_island_ops": sorted(report.island_ops),
        "fp32_island_nodes": report.fp32_island_nodes,
        "fp16_nodes": report.fp16_nodes,
        "casts_inserted": report.casts_inserted,
        "weights_clipped_to_fp16_range": report.clipped_weights,
    }
