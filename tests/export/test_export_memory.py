"""What the export frees between steps, and the per-step RSS lines of `co2s-export -v`."""

from __future__ import annotations

import gc
import logging
import weakref
from types import SimpleNamespace

import torch
from torch import nn

from co2s.export.onnx_export import _trace_to_file
from co2s.export.pipeline import _MeasuredSteps


class _Tiny(nn.Module):
    config = SimpleNamespace(output_names=("labels", "confidence"))

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, images):
        probs = self.conv(images.permute(0, 3, 1, 2).float()).softmax(1)
        confidence, labels = probs.max(1)
        return labels.to(torch.uint8), confidence


def test_traced_weights_are_not_kept_alive_by_the_exporter(tmp_path):
    module = _Tiny()
    weight = weakref.ref(module.conv.weight)
    _trace_to_file(module, tmp_path / "m.onnx", tile=16, batch=(1, 1, 1), example_batch=None)
    assert (tmp_path / "m.onnx").is_file()
    del module
    gc.collect()
    # onnxscript's rule sets hold the last graph they matched, and through it every traced parameter
    assert weight() is None


class _Bar:
    def __init__(self):
        self.names = []

    def next(self, name):
        self.names.append(name)


def test_each_step_logs_its_wall_time_and_rss(caplog):
    bar = _Bar()
    steps = _MeasuredSteps(bar)
    with caplog.at_level(logging.DEBUG, logger="co2s.export"):
        steps.next("first")
        steps.next("second")
        steps.end()
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert bar.names == ["first", "second"]
    assert len(lines) == 2
    assert lines[0].startswith("step 'first': ") and lines[1].startswith("step 'second': ")
    assert all(" s, RSS " in line and "GB, peak so far " in line for line in lines)


def test_shape_inference_without_the_weights_gives_what_onnx_gives_with_them():
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from co2s.export.onnx_export import infer_shapes

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((64, 32)).astype(np.float32), "w")  # 8 KB: lifted
    shape = numpy_helper.from_array(np.array([0, -1, 4], dtype=np.int64), "shape")  # read by data propagation
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["y"]),
            helper.make_node("Shape", ["y"], ["s"]),
            helper.make_node("Reshape", ["y", "shape"], ["z"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 64])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)],
        [weight, shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    before = model.SerializeToString()
    expected = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True).SerializeToString()
    got = infer_shapes(model)
    assert got.SerializeToString() == expected
    assert model.SerializeToString() == before  # the input is left as it was
    assert got.graph.output[0].type.tensor_type.shape.dim[2].dim_value == 4
    types_only = infer_shapes(model, strict_mode=False, data_prop=False, weights=False)
    assert not next(t for t in types_only.graph.initializer if t.name == "w").HasField("raw_data")
