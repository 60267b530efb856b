"""The TensorRT audit on hand-made graphs: control flow, unsupported ops, integer quantisation, opsets."""

from __future__ import annotations

import re

import pytest
from conftest import REPO_ROOT
from onnx import TensorProto, helper

from co2s.export.audit import OPS_TABLE, audit_model, tensorrt_ops


def _model(nodes, inputs, outputs, opset=19, initializers=(), domains=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    imports = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domains]
    return helper.make_model(graph, opset_imports=imports)


def _vi(name, dtype=TensorProto.FLOAT, shape=(1, 4)):
    return helper.make_tensor_value_info(name, dtype, list(shape))


def test_clean_graph_passes():
    m = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x")], [_vi("y")])
    report = audit_model(m)
    assert report.ok, report.errors
    assert report.op_counts == {"Relu": 1}


def test_if_node_is_rejected():
    branch = lambda v: helper.make_graph(  # noqa: E731
        [helper.make_node("Constant", [], ["o"], value=helper.make_tensor("c", TensorProto.FLOAT, [1], [v]))],
        "b",
        [],
        [_vi("o", shape=(1,))],
    )
    m = _model(
        [helper.make_node("If", ["cond"], ["y"], then_branch=branch(1.0), else_branch=branch(0.0))],
        [_vi("cond", TensorProto.BOOL, (1,))],
        [_vi("y", shape=(1,))],
    )
    report = audit_model(m)
    assert not report.ok
    assert any("control flow If" in e for e in report.errors)


@pytest.mark.parametrize("op", ["Loop", "SequenceConstruct"])
def test_other_control_flow_is_rejected(op):
    m = _model([helper.make_node(op, ["x"], ["y"])], [_vi("x")], [_vi("y")])
    assert any("control flow" in e for e in audit_model(m).errors)


def test_integer_quantisation_is_rejected_qdq_is_not():
    qlinear = _model(
        [helper.make_node("MatMulInteger", ["a", "b"], ["y"])],
        [_vi("a", TensorProto.INT8), _vi("b", TensorProto.INT8, (4, 4))],
        [_vi("y", TensorProto.INT32)],
    )
    assert any("Q/DQ" in e or "QuantizeLinear" in e for e in audit_model(qlinear).errors)
    scale = helper.make_tensor("s", TensorProto.FLOAT, [], [0.1])
    zp = helper.make_tensor("z", TensorProto.INT8, [], [0])
    qdq = _model(
        [
            helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
            helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"]),
        ],
        [_vi("x")],
        [_vi("y")],
        initializers=[scale, zp],
    )
    assert audit_model(qdq).ok


def test_unsupported_custom_domain_and_opset():
    m = _model([helper.make_node("Unique", ["x"], ["y"])], [_vi("x")], [_vi("y")])
    assert any("not supported" in e for e in audit_model(m).errors)
    m = _model(
        [helper.make_node("FusedGemm", ["x"], ["y"], domain="com.microsoft")],
        [_vi("x")],
        [_vi("y")],
        domains=["com.microsoft"],
    )
    assert any("custom-domain" in e for e in audit_model(m).errors)
    m = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x")], [_vi("y")], opset=21)
    assert any("opset 21" in e for e in audit_model(m).errors)


def test_double_tensors_and_range_are_reported():
    m = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", TensorProto.DOUBLE)], [_vi("y", TensorProto.DOUBLE)])
    assert any("double" in e for e in audit_model(m).errors)
    c = [helper.make_tensor(n, TensorProto.INT64, [], [v]) for n, v in (("a", 0), ("b", 4), ("d", 1))]
    m = _model(
        [helper.make_node("Range", ["a", "b", "d"], ["y"])], [], [_vi("y", TensorProto.INT64, (4,))], initializers=c
    )
    report = audit_model(m)
    assert report.ok and any("Range" in w for w in report.warnings)


def test_ops_table_is_vendored_with_its_source_and_no_machine_paths_in_code():
    assert OPS_TABLE.parent == REPO_ROOT / "export"
    assert "onnx-tensorrt" in OPS_TABLE.read_text().splitlines()[0]
    table = tensorrt_ops()
    assert table["Conv"] and table["LayerNormalization"] and not table["QLinearMatMul"]
    # Split so this file does not itself contain the paths it looks for.
    pattern = re.compile("|".join("/" + part for part in ("work/", "shared/data", "home/", "tmp/")))
    for path in (
        list((REPO_ROOT / "export").glob("*.py"))
        + list((REPO_ROOT / "co2s_pkg" / "bundle").glob("*.py"))
        + list((REPO_ROOT / "tests").glob("test_export_*.py"))
    ):
        if path.name == "test_export_audit.py":
            continue
        text = path.read_text()
        assert not pattern.search(text), f"{path.name} hard-codes a machine path"


def test_audit_flags_only_batch_as_dynamic():
    m = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", shape=("b", "h"))], [_vi("y", shape=("b", "h"))])
    assert any("dynamic dims" in w for w in audit_model(m).warnings)
