"""End to end on the tiny pair: one bundle (module-cached), its graphs, parity, manifest, CLI paths."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from _export_helpers import NUM_CLASSES, TILE

from co2s.bundle import MANIFEST_NAME, ManifestError, load_bundle
from co2s.bundle.formats import ONNX, PRECISIONS, get_format
from co2s.bundle.manifest import load_schema
from co2s.export.audit import audit_file
from co2s.export.parity import run_onnx

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def bundle(tiny_bundle) -> Path:
    return tiny_bundle


@pytest.fixture(scope="module")
def manifest(bundle):
    return load_bundle(bundle, verify=True)


def test_bundle_holds_every_precision_and_a_valid_manifest(bundle, manifest):
    names = sorted(p.name for p in bundle.iterdir())
    assert names == sorted([MANIFEST_NAME, *(get_format(ONNX, p).filename for p in PRECISIONS)])
    assert not list(bundle.parent.glob(".bundle.*")), "temporary folders left behind"
    data = manifest.data
    assert data["model"]["num_classes"] == NUM_CLASSES and data["model"]["tile"] == TILE
    assert data["dataset"]["name"] == "synthetic" and len(data["dataset"]["palette"]) == NUM_CLASSES
    assert data["input"] == {
        "name": "images",
        "dtype": "uint8",
        "shape": [1, TILE, TILE, 3],
        "layout": "NHWC",
        "description": data["input"]["description"],
    }
    assert [o["name"] for o in data["outputs"]] == ["labels", "confidence", "probs"]
    assert data["calibration"]["kind"] == "synthetic" and data["calibration"]["count"] == 12
    assert set(data["precisions"]) == {"fp32", "fp16", "int8", "int8-cpu"}
    assert {"torch", "onnx", "onnxruntime", "onnxscript", "co2s"} <= set(data["producer"])
    assert any("RoPE" in f for f in data["model"]["folded"])


def test_manifest_validates_with_jsonschema(manifest):
    jsonschema = pytest.importorskip(
        "jsonschema", reason="jsonschema is a dev-only cross-check of the built-in validator"
    )
    jsonschema.validate(manifest.data, load_schema())


def test_checksums_are_verified(bundle, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    load_bundle(copy, verify=True)
    with open(copy / get_format(ONNX, "fp16").filename, "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ManifestError, match="sha256"):
        load_bundle(copy, verify=True)
    data = json.loads((copy / MANIFEST_NAME).read_text())
    data["model"]["tile"] = "big"
    (copy / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="model.tile"):
        load_bundle(copy)


def test_graphs_pass_checker_and_tensorrt_audit(bundle):
    for p in ("fp32", "fp16", "int8"):
        path = bundle / get_format(ONNX, p).filename
        onnx.checker.check_model(str(path), full_check=True)
        report = audit_file(path)
        assert report.ok, (p, report.errors)
        assert not {"Range", "Tile", "If", "Loop"} & set(report.op_counts), (p, report.op_counts)
    m = onnx.load(str(bundle / get_format(ONNX, "fp32").filename))
    types = {v.name: v.type.tensor_type.elem_type for v in list(m.graph.input) + list(m.graph.output)}
    assert types == {
        "images": onnx.TensorProto.UINT8,
        "labels": onnx.TensorProto.UINT8,
        "confidence": onnx.TensorProto.FLOAT,
        "probs": onnx.TensorProto.FLOAT16,
    }


def test_weights_are_folded_into_initializers(bundle):
    """The export's constant folding reaches the weights (export/onnx_export.py _fold_weights): no single-output
    node computes from constants alone (a weight's Transpose or scale left in the graph would make the weight an
    activation to onnxruntime's quantisers and keep the linear layer out of int8-cpu)."""
    m = onnx.load(str(bundle / get_format(ONNX, "fp32").filename))
    constants = {t.name for t in m.graph.initializer} | {""}
    unfolded = [n.op_type for n in m.graph.node if len(n.output) == 1 and set(n.input) <= constants]
    assert unfolded == []
    weight_matmuls = [n for n in m.graph.node if n.op_type == "MatMul" and n.input[1] in constants]
    assert len(weight_matmuls) >= 50  # 54 of the tiny pair's 78 MatMuls; 41 without the fold


def test_int8_is_explicit_symmetric_qdq(bundle):
    m = onnx.load(str(bundle / get_format(ONNX, "int8").filename))
    ops = {n.op_type for n in m.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert not ops & {"QLinearMatMul", "QLinearConv", "MatMulInteger", "ConvInteger", "DynamicQuantizeLinear"}
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer}
    per_channel = 0
    for n in m.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2:
            assert not inits[n.input[2]].any(), f"{n.name}: non-zero zero-point"
            assert inits[n.input[2]].dtype == np.int8
        if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[1]].size > 1:
            per_channel += 1
    assert per_channel > 0, "no per-channel weight quantisation"


def test_parity_meets_thresholds_in_manifest_and_independently(bundle, manifest, tiny_checkpoint):
    parity = manifest.data["parity"]
    assert parity["fp32"]["pixel_agreement"] >= 0.9999 and parity["fp32"]["max_abs_confidence_diff"] < 1e-4
    assert parity["fp32"]["max_abs_prob_diff"] < 1e-3  # probs leave the graph as float16
    assert parity["fp16"]["pixel_agreement"] >= 0.995 and parity["fp16"]["passed"]
    assert parity["int8"]["pixel_agreement"] >= 0.97 and parity["int8"]["passed"]
    assert parity["int8"]["miou_reference"] == "ground-truth" and abs(parity["int8"]["miou_delta"]) < 5

    # fresh images, outside the calibration set: ORT FP32 vs the PyTorch model from the checkpoint
    import torch

    from co2s.export.deploy import reference_predict
    from co2s.train.checkpoint import load_checkpoint
    from co2s.train.data import make_scene
    from co2s.train.model import co2s_from_state

    images = np.stack([make_scene(50_000 + i, TILE)[0] for i in range(3)])
    ckpt = load_checkpoint(tiny_checkpoint)
    model = co2s_from_state(ckpt["model_config"], ckpt["model"]).eval()
    ref = reference_predict(model, ("clip", "dinov3"), "mean", images)
    outs = {p: run_onnx(bundle / get_format(ONNX, p).filename, images) for p in PRECISIONS}
    assert (outs["fp32"]["labels"] == ref["labels"]).mean() >= 0.9999
    assert np.abs(outs["fp32"]["confidence"] - ref["confidence"]).max() < 1e-4
    assert (outs["fp16"]["labels"] == outs["fp32"]["labels"]).mean() >= 0.995
    assert (outs["int8"]["labels"] == outs["fp32"]["labels"]).mean() >= 0.97
    assert torch.is_tensor(torch.as_tensor(outs["fp16"]["probs"]))


def test_triton_config_parses(run_cli, bundle, tmp_path):
    pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient[grpc] validates config.pbtxt")
    from co2s.export.triton import validate_config

    code, _, err = run_cli("co2s-export", ["--from-bundle", bundle, "--triton-repo", tmp_path / "repo"])
    assert code == 0, err
    model_dir = tmp_path / "repo" / "co2s_synthetic"
    text = (model_dir / "config.pbtxt").read_text()
    assert validate_config(text)
    assert 'platform: "onnxruntime_onnx"' in text and "TYPE_UINT8" in text and "max_batch_size: 1" in text
    assert (model_dir / "1" / "model.onnx").stat().st_size == (
        bundle / get_format(ONNX, "fp32").filename
    ).stat().st_size
    code, _, err = run_cli("co2s-export", ["--from-bundle", bundle, "--triton-repo", tmp_path / "repo"])
    assert code == 1 and "--force" in err


def test_engine_without_gpu_exits_3_and_leaves_a_complete_onnx_bundle(run_cli, tmp_path, monkeypatch):
    """Also the planning path: --untrained at a given preset/size."""
    monkeypatch.setenv("CO2S_FORCE_NO_GPU", "1")
    out = tmp_path / "plan"
    code, _, err = run_cli(
        "co2s-export",
        [
            "--untrained",
            "--preset",
            "tiny",
            "--num-classes",
            "4",
            "--tile",
            "64",
            "--precision",
            "fp32",
            "--engine",
            "fp16",
            "--calib-count",
            "2",
            "--out",
            out,
        ],
    )
    assert code == 3, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("TensorRT engines are built on the target GPU")
    assert f"co2s-export --from-bundle {out} --engine fp16" in last
    m = load_bundle(out, verify=True)  # complete, checksummed
    assert set(m.data["artifacts"]) == {"onnx_fp32", "onnx_fp16"} and m.data["model"]["untrained"]
    assert m.data["model"]["num_classes"] == 4 and m.data["input"]["shape"] == [1, 64, 64, 3]


def test_from_bundle_engine_is_torch_free(bundle):
    """On a Jetson only the bundle and TensorRT exist: --from-bundle must not import torch."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from co2s.export.cli import main\n"
        f"main(['--from-bundle', {str(bundle)!r}, '--engine', 'fp16'])\n"
    )
    env = {**os.environ, "CO2S_FORCE_NO_GPU": "1"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 3, r.stderr
    assert "Traceback" not in r.stderr and "TensorRT engines are built on the target GPU" in r.stderr


def test_dynamic_batch_max_confidence_single_student(tmp_path, tiny_checkpoint):
    from co2s.export.options import ExportOptions
    from co2s.export.pipeline import export_bundle

    out = tmp_path / "dyn"
    export_bundle(
        ExportOptions(
            out=out,
            checkpoint=tiny_checkpoint,
            fusion="max-confidence",
            batch=(1, 2, 4),
            precisions=("fp32",),
            calib_count=3,
            log=lambda *_: None,
        )
    )
    m = load_bundle(out, verify=True)
    assert m.data["batch"] == {"dynamic": True, "min": 1, "opt": 2, "max": 4}
    assert m.data["input"]["shape"][0] == "batch"
    images = np.stack([np.full((TILE, TILE, 3), v, np.uint8) for v in (0, 128, 255)])
    outs = run_onnx(out / get_format(ONNX, "fp32").filename, images, batch=3)
    assert outs["labels"].shape == (3, TILE, TILE) and outs["labels"].dtype == np.uint8

    out1 = tmp_path / "dino"
    export_bundle(
        ExportOptions(
            out=out1,
            checkpoint=tiny_checkpoint,
            students="dinov3",
            precisions=("fp32",),
            calib_count=2,
            log=lambda *_: None,
        )
    )
    m1 = load_bundle(out1, verify=True)
    assert m1.data["model"]["students"] == ["dinov3"] and m1.data["parity"]["fp32"]["passed"]
    assert list(m1.data["normalization"]["students"]) == ["dinov3"]


# ----------------------------------------------------------------------------------------- bad input
def _no_partial(out: Path) -> None:
    assert not out.exists() or not any(out.iterdir())
    assert not list(out.parent.glob(f".{out.name}.*")), "partial bundle left behind"


def test_missing_and_corrupt_checkpoint(run_cli, tmp_path):
    out = tmp_path / "b"
    code, _, err = run_cli("co2s-export", ["--checkpoint", tmp_path / "nope.pt", "--out", out])
    assert code == 1 and "error:" in err and "nope.pt" in err and "Traceback" not in err
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    code, _, err = run_cli("co2s-export", ["--checkpoint", bad, "--out", out])
    assert code == 1 and "bad.pt" in err and "Traceback" not in err
    _no_partial(out)


def test_class_count_differs_from_dataset(run_cli, tiny_checkpoint, tmp_path):
    out = tmp_path / "b"
    code, _, err = run_cli("co2s-export", ["--checkpoint", tiny_checkpoint, "--dataset", "potsdam", "--out", out])
    assert code == 1 and "tiny.pt" in err and "potsdam" in err and "classes" in err, err
    _no_partial(out)


def test_tile_not_multiple_of_16(run_cli, tiny_checkpoint, tmp_path):
    out = tmp_path / "b"
    code, _, err = run_cli("co2s-export", ["--checkpoint", tiny_checkpoint, "--tile", "100", "--out", out])
    assert code == 1 and "--tile: must be a positive multiple of 16" in err and "got 100" in err
    _no_partial(out)


def test_empty_calibration_folder(run_cli, tiny_checkpoint, tmp_path):
    out, calib = tmp_path / "b", tmp_path / "calib"
    calib.mkdir()
    (calib / "notes.txt").write_text("no images here")
    code, _, err = run_cli("co2s-export", ["--checkpoint", tiny_checkpoint, "--calib-data", calib, "--out", out])
    assert code == 1 and "--calib-data" in err and str(calib) in err and "no images" in err
    _no_partial(out)


def test_existing_output_without_force(run_cli, tiny_checkpoint, tmp_path):
    out = tmp_path / "b"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    code, _, err = run_cli("co2s-export", ["--checkpoint", tiny_checkpoint, "--out", out])
    assert code == 1 and "--out" in err and "--force" in err
    assert (out / "keep.txt").read_text() == "user data"


def test_bad_option_values_are_one_line_errors(run_cli, tiny_checkpoint, tmp_path):
    code, _, err = run_cli(
        "co2s-export", ["--checkpoint", tiny_checkpoint, "--dynamic-batch", "4:2", "--out", tmp_path / "b"]
    )
    assert code == 1 and "--dynamic-batch" in err and "Traceback" not in err
    code, _, err = run_cli("co2s-export", ["--from-bundle", tmp_path / "missing", "--engine", "fp16"])
    assert code == 1 and "missing" in err
    code, _, err = run_cli("co2s-export", ["--checkpoint", tiny_checkpoint, "--engine", "fp8", "--out", tmp_path / "b"])
    assert code == 2 and "--engine" in err and "fp8" in err  # not among the choices: a usage error
    code, _, err = run_cli("co2s-export", ["--checkpoint", tiny_checkpoint, "--engine", "fp16,int8", "--batch", "0"])
    assert code == 2 and "--batch" in err and "x>=1" in err
