"""Deploy module -> clean, checked ONNX: dynamo export with constant folding, checker, shape inference, checker again.

Hygiene follows what bit others (deploy-anchors section 5): stale `value_info` from the exporter is dropped
and re-inferred; per-node debug metadata (stack traces) is stripped so files stay small and diff-able.
"""

from __future__ import annotations

import gc
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import onnx

from co2s.bundle.formats import external_data_name

# 19: the lowest opset with float16 Q/DQ scales (INT8 on an FP16 graph); TensorRT 10 parses 9-20.
OPSET = 19
_PROTOBUF_LIMIT = 2**31 - 2**20  # a little under 2 GiB: above it weights go to an external-data file
# Folding limit (elements) for onnxscript's constant folding: above the largest weight of the paper pair (768 x 3072),
# so a transposed or scaled weight becomes one initializer; below the size where folding would materialise
# activation-sized constants.
_FOLD_LIMIT = 2**23


@dataclass
class OnnxExportStats:
    seconds: float
    nodes_exported: int
    nodes_clean: int
    opset: int


def export_deploy_onnx(
    module,
    path: Path,
    *,
    tile: int,
    batch: tuple[int, int, int],
    example_batch: int | None = None,
    after_trace: Callable[[], object] | None = None,
) -> OnnxExportStats:
    """Trace `module` (uint8 [B,tile,tile,3] in) with the dynamo exporter and write a cleaned model to `path`.

    `batch` is (min, opt, max); min == max gives a static batch dimension. Memory: the graph is folded in place
    in the exporter's IR and goes to a scratch file beside `path` with its weights as external data, then is
    dropped, so the clean-up holds only the one model it works on; `after_trace` runs then, e.g. to free the
    PyTorch weights, which nothing after the trace needs.
    """
    t0 = time.perf_counter()
    path = Path(path)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".export-") as scratch:
        raw = Path(scratch) / "exported.onnx"
        _trace_to_file(module, raw, tile=tile, batch=batch, example_batch=example_batch)
        if after_trace is not None:
            after_trace()
        onnx.checker.check_model(str(raw))  # from the file: the weights stay on disk
        nodes_exported = len(onnx.load(str(raw), load_external_data=False).graph.node)
        model = clean_onnx(_load_stripped(raw))
    if batch[0] != batch[2]:
        _name_batch_dim(model, "batch")
    save_onnx(model, path)
    nodes_clean = len(model.graph.node)
    del model
    check_onnx(path)
    return OnnxExportStats(time.perf_counter() - t0, nodes_exported, nodes_clean, OPSET)


def _trace_to_file(module, raw: Path, *, tile: int, batch: tuple[int, int, int], example_batch: int | None) -> None:
    import torch

    lo, opt, hi = batch
    dynamic = lo != hi
    b = example_batch or (min(max(2, lo), hi) if dynamic else lo)
    example = torch.randint(0, 256, (b, tile, tile, 3), dtype=torch.uint8)
    kwargs = {}
    if dynamic:
        kwargs["dynamic_shapes"] = {"images": {0: torch.export.Dim("batch", min=lo, max=hi)}}
    with torch.no_grad():
        program = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            opset_version=OPSET,
            input_names=["images"],
            output_names=list(module.config.output_names),
            optimize=True,
            verbose=False,
            report=False,
            **kwargs,
        )
    _fold_weights(program.model)
    # straight from the exporter's IR to disk: no ModelProto copy of the weights beside the IR's own
    program.save(str(raw), external_data=True)
    del program
    _forget_matched_graph()
    gc.collect()


def _fold_weights(model) -> None:
    """The exporter's own optimiser (onnxscript, optimize=True above) again, with folding limits that reach the
    weights: weight transposes, scales and casts become initializers, in place in the IR, without a copy of the
    model. It replaced onnxslim, which did the same folds with several copies of the weights at once (8 GB peak
    for the 0.7 GB paper pair) and whose fusions onnxruntime and TensorRT make themselves when they load the graph
    (export/README.md "Clean-up"; benchmarks/results/export_memory.md)."""
    import onnxscript.optimizer

    onnxscript.optimizer.optimize_ir(model, input_size_limit=_FOLD_LIMIT, output_size_limit=_FOLD_LIMIT)


def _forget_matched_graph() -> None:
    """onnxscript's pattern matchers live in module-level rule sets (the exporter's optimize=True) and keep the
    last graph each one matched (`_graph`, `_match`): the whole exported IR, with its folded weights (0.6 GB at
    the paper preset) and references to every PyTorch parameter, would stay alive for the rest of the process."""
    from onnxscript.rewriter._matcher import SimplePatternMatcher

    for obj in gc.get_objects():
        if isinstance(obj, SimplePatternMatcher):
            obj._graph = obj._tracer = None
            obj._init_match(0)


def _load_stripped(raw: Path) -> onnx.ModelProto:
    """The exported model with its weights, without per-node debug metadata and the exporter's value_info."""
    model = onnx.load(str(raw))
    for t in model.graph.initializer:  # loading external data marks them DEFAULT; unmarked they save as before
        t.ClearField("data_location")
    _strip_debug(model)
    del model.graph.value_info[:]
    return model


def clean_onnx(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fresh shape inference on the folded export (`model` comes without the exporter's value_info).

    MatMul + Add stay unfused: onnxruntime's dynamic INT8 quantises MatMul but not Gemm (int8-cpu would keep the
    120 linear layers of the paper pair in FP32), while TensorRT and ORT's own CPU optimiser fuse the bias either
    way (export/README.md "Precisions")."""
    if model.ByteSize() >= _PROTOBUF_LIMIT:
        return model  # large models: inferred from the file by check_onnx
    return infer_shapes(model)


def infer_shapes(
    model: onnx.ModelProto, *, strict_mode: bool = True, data_prop: bool = True, weights: bool = True
) -> onnx.ModelProto:
    """onnx shape inference: a new model, `model` with its value_info inferred (`model` itself is left as it was).

    It runs on the graph alone: onnx serialises the whole model into C++ and back, three extra copies of the
    weights at once (2-3 GB at the paper preset) for nothing, since types and shapes come from the initializers'
    dims and values only from small integer tensors (shapes, axes). So the weights are lifted out meanwhile and
    put back. `weights=False` leaves them out of the result, for a caller that only wants the types.
    """
    lifted = _lift_weights(model)
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=strict_mode, data_prop=data_prop)
    finally:
        for t in model.graph.initializer:
            if t.name in lifted:
                t.raw_data = lifted.pop(t.name)
    if weights:
        source = {t.name: t for t in model.graph.initializer if t.HasField("raw_data")}
        for t in inferred.graph.initializer:
            if not t.HasField("raw_data") and t.name in source:
                t.raw_data = source[t.name].raw_data
    return inferred


_LIFT_MIN_BYTES = 1024  # onnx's own threshold for external data; shape-like tensors are far smaller
_SHAPE_DTYPES = frozenset({onnx.TensorProto.INT64, onnx.TensorProto.INT32})  # what data propagation reads


def _lift_weights(model: onnx.ModelProto) -> dict[str, bytes]:
    lifted = {}
    for t in model.graph.initializer:
        if t.data_type not in _SHAPE_DTYPES and t.HasField("raw_data") and t.ByteSize() >= _LIFT_MIN_BYTES:
            lifted[t.name] = t.raw_data
            t.ClearField("raw_data")
    return lifted


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


def needs_external_data(path: Path) -> bool:
    """Whether onnxruntime's quantisers must write `path`'s derived graphs with external data: its file is within
    16 MiB of protobuf's 2 GiB limit (the quantised or augmented copy adds nodes and initializers)."""
    return Path(path).stat().st_size > 2**31 - 2**24


def check_onnx(path: Path) -> None:
    """Full checker (with strict shape inference) from the file, so it works above the protobuf limit too."""
    onnx.checker.check_model(str(path), full_check=True)


def count_nodes(path: Path) -> int:
    return len(onnx.load(str(path), load_external_data=False).graph.node)
