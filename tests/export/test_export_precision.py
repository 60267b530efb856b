"""FP16 with FP32 islands on a small attention-shaped graph exported from torch."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto
from torch import nn

from co2s.export.audit import audit_model
from co2s.export.precision import convert_to_fp16, fp32_island_nodes


class _Toy(nn.Module):
    """LayerNorm -> attention (scores -> softmax) -> cosine similarity with constant class vectors."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.ln = nn.LayerNorm(16)
        self.qkv = nn.Linear(16, 48)
        self.proj = nn.Linear(16, 16)
        self.register_buffer("text", F.normalize(torch.randn(3, 16), dim=-1))

    def forward(self, x):
        q, k, v = self.qkv(self.ln(x)).chunk(3, dim=-1)
        x = x + self.proj(torch.softmax(q @ k.transpose(-2, -1) * 0.25, dim=-1) @ v)
        return torch.matmul(F.normalize(x, dim=-1), self.text.t())


@pytest.fixture(scope="module")
def toy_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("toy") / "toy.onnx"
    torch.onnx.export(
        _Toy().eval(),
        (torch.randn(2, 8, 16),),
        str(path),
        dynamo=True,
        opset_version=19,
        input_names=["x"],
        output_names=["y"],
        verbose=False,
    )
    return onnx.load(str(path))


def _type_of(model, name):
    vis = {
        v.name: v.type.tensor_type.elem_type
        for v in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output)
    }
    vis.update({t.name: t.data_type for t in model.graph.initializer})
    return vis.get(name)


def test_islands_cover_layernorm_softmax_scores_and_similarity(toy_onnx):
    nodes = list(toy_onnx.graph.node)
    island_ops = {nodes[i].op_type for i in fp32_island_nodes(toy_onnx)}
    assert {"LayerNormalization", "Softmax", "ReduceL2", "MatMul"} <= island_ops
    # the score MatMul (feeds the Softmax) and the similarity MatMul are islands; attn @ v is not
    matmuls = [i for i, n in enumerate(nodes) if n.op_type == "MatMul"]
    assert 2 <= len([i for i in matmuls if i in fp32_island_nodes(toy_onnx)]) < len(matmuls)


def test_fp16_graph_is_typed_and_close(toy_onnx):
    fp16, report = convert_to_fp16(toy_onnx)
    onnx.checker.check_model(fp16, full_check=True)
    assert audit_model(fp16).ok
    assert report.fp16_nodes > 0 and report.fp32_island_nodes > 0 and report.casts_inserted > 0
    for n in fp16.graph.node:
        if n.op_type in ("LayerNormalization", "Softmax"):
            assert _type_of(fp16, n.input[0]) == TensorProto.FLOAT, n.op_type
    assert any(
        _type_of(fp16, n.output[0]) == TensorProto.FLOAT16
        for n in fp16.graph.node
        if n.op_type == "Gemm" or n.op_type == "MatMul"
    )
    # graph I/O keep their declared float32 type
    assert fp16.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert fp16.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    x = np.random.default_rng(0).standard_normal((2, 8, 16)).astype(np.float32)
    ref = ort.InferenceSession(toy_onnx.SerializeToString()).run(None, {"x": x})[0]
    got = ort.InferenceSession(fp16.SerializeToString()).run(None, {"x": x})[0]
    assert np.abs(ref - got).max() < 2e-2


@pytest.mark.parametrize("method", ["MinMax", "Entropy"])
def test_calibrated_ranges_are_onnxruntimes_own(toy_onnx, tmp_path, method):
    """calibrated_ranges (priority-based order, no arena, folded every few batches) gives exactly the ranges of
    onnxruntime's calibrator run its own way over the same batches."""
    from onnxruntime.quantization import CalibrationMethod, create_calibrator, load_tensors_data

    from co2s.export.calibration import calibrated_ranges, calibration_reader
    from co2s.export.precision import QUANTIZED_OPS

    path = tmp_path / "toy.onnx"
    onnx.save(toy_onnx, str(path))
    calib = np.random.default_rng(0).standard_normal((8, 8, 16)).astype(np.float32)
    cm = getattr(CalibrationMethod, method)
    options = {"num_bins": 256, "num_quantized_bins": 128} if method == "Entropy" else {}
    got = load_tensors_data(
        calibrated_ranges(
            path, calibration_reader(calib, "x", 2), cm, QUANTIZED_OPS, tmp_path / "r.json", options=options
        )
    )
    own = create_calibrator(
        path,
        list(QUANTIZED_OPS),
        augmented_model_path=str(tmp_path / "own.onnx"),
        calibrate_method=cm,
        extra_options=options,
    )
    reader = calibration_reader(calib, "x", 2)
    if method == "Entropy":  # histograms: collected in the same chunks, as quantize_static's strided loop does
        for start in range(0, len(reader), reader.stride):
            reader.set_range(start, start + reader.stride)
            own.collect_data(reader)
    else:
        own.collect_data(reader)
    expected = own.compute_data()
    assert len(expected.data) > 4 and set(got.data) == set(expected.data)
    for name, r in expected.data.items():
        np.testing.assert_array_equal(np.asarray(got.data[name].range_value), np.asarray(r.range_value), err_msg=name)
