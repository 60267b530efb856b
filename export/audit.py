"""TensorRT compatibility audit of an ONNX graph, run before anything is written to a bundle.

The operator table `tensorrt10_onnx_ops.tsv` beside this file is a vendored copy of the project's
`shared/data/tensorrt10_onnx_ops.tsv`, itself taken from onnx/onnx-tensorrt `docs/operators.md` @ 96e7811
(TensorRT 10.0, which parses opsets 9-20). JetPack 6.2 ships TensorRT 10.3, the oldest parser we target, so
this table is the contract: an op it does not list as supported fails the export.

Errors (the export fails):
  * control flow anywhere (If, Loop, Scan, Sequence*, Optional*): TensorRT either rejects it or, as with
    DINOv3's un-baked RoPE (NVIDIA/TensorRT 4558, 4742), builds engines that compute the wrong thing;
  * an op the table marks unsupported or does not list, or an op from a non-standard domain;
  * integer-arithmetic quantisation (QLinear*, MatMulInteger, ConvInteger, DynamicQuantizeLinear): INT8
    must be explicit Q/DQ;
  * tensor types TensorRT has no use for (double, complex, string) and an opset outside 9-20.
Warnings: Range/Tile (the signature of run-time position-embedding code) and non-batch dynamic dims.
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import onnx

OPS_TABLE = Path(__file__).with_name("tensorrt10_onnx_ops.tsv")
OPSET_RANGE = (9, 20)  # what the TensorRT 10.0 parser reads (table header)
CONTROL_FLOW = {"If", "Loop", "Scan"}
CONTROL_FLOW_PREFIXES = ("Sequence", "Optional")
INTEGER_QUANT = {"QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger", "DynamicQuantizeLinear"}
SUSPICIOUS = {"Range": "run-time index arithmetic", "Tile": "run-time tiling"}
BAD_TYPES = {
    onnx.TensorProto.DOUBLE,
    onnx.TensorProto.STRING,
    onnx.TensorProto.COMPLEX64,
    onnx.TensorProto.COMPLEX128,
}
STANDARD_DOMAINS = {"", "ai.onnx"}


@dataclass
class AuditReport:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    op_counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors


@functools.lru_cache(maxsize=1)
def tensorrt_ops() -> dict[str, bool]:
    """op type -> supported by the TensorRT 10 ONNX parser (from the vendored table)."""
    table: dict[str, bool] = {}
    for line in OPS_TABLE.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        op, supported, *_ = line.split("\t")
        table[op.strip()] = supported.strip() == "Y"
    return table


def _all_nodes(graph: onnx.GraphProto, path: str = ""):
    """Every node, including those inside subgraph attributes (control flow hides work there)."""
    for node in graph.node:
        yield path, node
        for attr in node.attribute:
            subgraphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
            for sub in subgraphs:
                yield from _all_nodes(sub, f"{path}{node.name or node.op_type}/")


def audit_model(model: onnx.ModelProto, *, batch_dim_dynamic_ok: bool = True) -> AuditReport:
    report = AuditReport()
    table = tensorrt_ops()
    counts: Counter[str] = Counter()
    flagged: dict[str, list[str]] = {}

    for imp in model.opset_import:
        if imp.domain in STANDARD_DOMAINS and not OPSET_RANGE[0] <= imp.version <= OPSET_RANGE[1]:
            report.errors.append(
                f"opset {imp.version} is outside what the TensorRT 10 parser reads ({OPSET_RANGE[0]}-{OPSET_RANGE[1]})"
            )

    for path, node in _all_nodes(model.graph):
        op = node.op_type
        counts[op] += 1
        where = f"{path}{node.name or op}"
        if node.domain not in STANDARD_DOMAINS:
            problem = f"custom-domain op {node.domain}::{op} (no TensorRT plugin is shipped)"
        elif op in CONTROL_FLOW or op.startswith(CONTROL_FLOW_PREFIXES):
            problem = f"control flow {op} (TensorRT needs a static graph; bake the computation for the fixed tile)"
        elif op in INTEGER_QUANT:
            problem = f"integer-arithmetic quantisation {op} (INT8 must be explicit QuantizeLinear/DequantizeLinear)"
        elif op not in table:
            problem = f"operator {op} is not in the TensorRT 10 ONNX operator table"
        elif not table[op]:
            problem = f"operator {op} is not supported by the TensorRT 10 ONNX parser"
        else:
            if op in SUSPICIOUS:
                report.warnings.append(
                    f"{where}: {op} ({SUSPICIOUS[op]}; is a position embedding still computed at run time?)"
                )
            continue
        flagged.setdefault(problem, []).append(where)

    for problem, nodes in flagged.items():
        more = f" and {len(nodes) - 3} more" if len(nodes) > 3 else ""
        report.errors.append(f"{problem}: node {', '.join(nodes[:3])}{more}")

    _check_types(model, report, batch_dim_dynamic_ok)
    report.op_counts = dict(sorted(counts.items()))
    return report


def _check_types(model: onnx.ModelProto, report: AuditReport, batch_dim_dynamic_ok: bool) -> None:
    g = model.graph
    bad = [t.name for t in g.initializer if t.data_type in BAD_TYPES]
    values = list(g.input) + list(g.output) + list(g.value_info)
    bad += [v.name for v in values if v.type.tensor_type.elem_type in BAD_TYPES]
    if bad:
        report.errors.append(f"tensor types TensorRT does not support (double/complex/string): {', '.join(bad[:3])}")
    for v in list(g.input) + list(g.output):
        dims = v.type.tensor_type.shape.dim
        dynamic = [i for i, d in enumerate(dims) if not d.HasField("dim_value")]
        if dynamic and (not batch_dim_dynamic_ok or dynamic != [0]):
            report.warnings.append(
                f"graph {v.name!r} has dynamic dims {dynamic}: one static engine per tile is expected"
            )


def audit_file(path: str | Path) -> AuditReport:
    return audit_model(onnx.load(str(path), load_external_data=False))
