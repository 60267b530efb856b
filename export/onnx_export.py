"""Deploy module -> clean, checked ONNX: dynamo export, checker, shape inference, onnxslim, checker again.

Hygiene follows what bit others (deploy-anchors section 5): stale `value_info` from the exporter is dropped
and re-inferred; per-node debug metadata (stack traces) is stripped so files stay small and diff-able.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import onnx

from co2s.bundle.formats import external_data_name

# 19: the lowest opset with float16 Q/DQ scales (INT8 on an FP16 graph); TensorRT 10 parses 9-20.
OPSET = 19
_PROTOBUF_LIMIT = 2**31 - 2**20  # a little under 2 GiB: above it weights go to an external-data file


@dataclass
class OnnxExportStats:
    seconds: float
    nodes_exported: int
    nodes_clean: int
    opset: int


def export_deploy_onnx(
    module, path: Path, *, tile: int, batch: tuple[int, int, int], example_batch: int | None = None
) -> OnnxExportStats:
    """Trace `module` (uint8 [B,tile,tile,3] in) with the dynamo exporter and write a cleaned model to `path`.

    `batch` is (min, opt, max); min == max gives a static batch dimension.
    """
    import torch

    t0 = time.perf_counter()
    lo, opt, hi = batch
    dynamic = lo != hi
    b = example_batch or (min(max(2, lo), hi) if dynamic else lo)
    example = torch.randint(0, 256, (b, tile, tile, 3), dtype=torch.uint8)
    kwargs = {}
    if dynamic:
        kwargs["dynamic_shapes"] = {"images": {0: torch.export.Dim("batch", min=lo, max=hi)}}
    input_names = ["images"]
    output_names = list(module.config.output_names)
    with torch.no_grad():
        program = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            opset_version=OPSET,
            input_names=input_names,
            output_names=output_names,
            optimize=True,
            verbose=False,
            report=False,
            **kwargs,
        )
    model = program.model_proto
    nodes_exported = len(model.graph.node)
    model = clean_onnx(model)
    if dynamic:
        _name_batch_dim(model, "batch")
    save_onnx(model, path)
    check_onnx(path)
    return OnnxExportStats(time.perf_counter() - t0, nodes_exported, len(model.graph.node), OPSET)


def clean_onnx(model: onnx.ModelProto) -> onnx.ModelProto:
    """Checker, fresh shape inference, onnxslim (constant folding, dead code, fusion of trivial ops)."""
    import onnxslim

    _strip_debug(model)
    del model.graph.value_info[:]
    if model.ByteSize() < _PROTOBUF_LIMIT:  # larger ones are checked from the file after saving
        onnx.checker.check_model(model)
    # MatMul + Add stay unfused: onnxruntime's dynamic INT8 quantises MatMul but not Gemm (int8-cpu would keep
    # the 120 linear layers of the paper pair in FP32), while TensorRT and ORT's own CPU optimiser fuse the
    # bias either way (export/README.md "Precisions")
    model = onnxslim.slim(model, skip_fusion_patterns=["FusionGemm"])
    del model.graph.value_info[:]
    model = infer_shapes(model)
    return model


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    if model.ByteSize() < _PROTOBUF_LIMIT:
        return onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    return model  # large models: inferred from the file by check_onnx


def _strip_debug(model: onnx.ModelProto) -> None:
    for node in model.graph.node:
        del node.metadata_props[:]
        if node.doc_string:
            node.doc_string = ""


def _name_batch_dim(model: onnx.ModelProto, name: str) -> None:
    for v in list(model.graph.input) + list(model.graph.output):
        d = v.type.tensor_type.shape.dim[0]
        d.Clear()
        d.dim_param = name


def save_onnx(model: onnx.ModelProto, path: Path) -> None:
    path = Path(path)
    if model.ByteSize() >= _PROTOBUF_LIMIT:
        onnx.save_model(
            model,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=external_data_name(path.name),
        )
    else:
        onnx.save_model(model, str(path))


def check_onnx(path: Path) -> None:
    """Full checker (with strict shape inference) from the file, so it works above the protobuf limit too."""
    onnx.checker.check_model(str(path), full_check=True)


def count_nodes(path: Path) -> int:
    return len(onnx.load(str(path), load_external_data=False).graph.node)
